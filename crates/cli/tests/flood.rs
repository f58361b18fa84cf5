//! The real binary under a small open-file limit (`ulimit -n 256`), flooded with 300
//! anonymous connections that never finish their headers: the kill switch still works
//! through the admin listener, and the public listener recovers once they are cut off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::BIN;

#[test]
fn kill_switch_works_through_the_admin_listener_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("remit.toml"), "[limits]\nheader_read_timeout = \"3s\"\n").unwrap();
    let s = common::serve_under(Some("ulimit -n 256"), &data, &[], &[]);
    let admin_url = s.admin_url.clone().expect("the admin listener is on by default");
    assert!(admin_url.starts_with("unix:"), "{admin_url}");
    let remit = |url: &str, args: &[&str]| {
        Command::new(BIN).args(args).env("REMIT_URL", url).env("REMIT_DATA_DIR", &data).output().unwrap()
    };
    let o = remit(&s.url, &["workflow", "create", "triage", "--purpose", "triage", "--owner", "alice@example.com"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").unwrap();
        stalled.push(c);
    }
    let start = Instant::now();
    let o = remit(&admin_url, &["workflow", "suspend", "triage", "--reason", "flooded"]);
    let took = start.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("kill through the admin listener with 300 stalled public connections: {took:?}");
    let o = remit(&admin_url, &["--json", "workflow", "show", "triage"]);
    let wf: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(wf["state"], "suspended");

    // The stalled connections are cut off by the header-read timeout; the public listener
    // answers again while they are still open on our side.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(stalled);
}
