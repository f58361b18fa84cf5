//! An installation made before Remit sealed its records (no MACs) is refused at start until
//! an operator holding the KEK reseals it with `remit reseal --yes`, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod common;

use common::BIN;

#[test]
fn an_unsealed_installation_starts_only_after_reseal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = Command::new(BIN).args(["init"]).env("REMIT_DATA_DIR", &data).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // What an earlier Remit left behind: no seals.
    let db = rusqlite::Connection::open(data.join("remit.db")).unwrap();
    db.execute("DELETE FROM meta WHERE key IN ('installation_mac', 'issuer')", []).unwrap();
    db.execute("UPDATE keys SET mac = NULL", []).unwrap();
    drop(db);
    let serve = |extra: &[&str]| {
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("REMIT_DATA_DIR", &data)
            .env("REMIT_ADMIN_LISTEN", "off")
            .output()
            .unwrap()
    };
    let o = serve(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("remit reseal"), "{}", String::from_utf8_lossy(&o.stderr));
    // Without --yes it only shows what it would vouch for.
    let o = Command::new(BIN)
        .args(["--json", "reseal", "--issuer", "https://remit.example"])
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["written"], false);
    // The JWT key, the audit key and the X.509 CA.
    assert_eq!(plan["keys"].as_array().unwrap().len(), 3);
    assert!(String::from_utf8_lossy(&serve(&[]).stderr).contains("remit reseal"));
    // With --yes, the server starts and announces the sealed issuer.
    let o = Command::new(BIN)
        .args(["reseal", "--issuer", "https://remit.example", "--yes"])
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = common::serve(&data, &[], &[]);
    let (host, port) = s.url.trim_start_matches("http://").split_once(':').unwrap();
    let mut c = std::net::TcpStream::connect((host, port.parse::<u16>().unwrap())).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(r#""issuer":"https://remit.example""#), "{answer}");
    // A key that does not open under the KEK is never vouched for.
    drop(s);
    let db = rusqlite::Connection::open(data.join("remit.db")).unwrap();
    db.execute(
        "UPDATE keys SET sealed = x'0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c' WHERE purpose = 'audit'",
        [],
    )
    .unwrap();
    drop(db);
    let o = Command::new(BIN).args(["reseal", "--yes"]).env("REMIT_DATA_DIR", &data).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not open under this KEK"));
}

/// One server per data directory: a second `remit serve` on it is refused at once, with a
/// clear message, and the first keeps serving.
#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = common::serve(&data, &[], &[]);
    let o = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("REMIT_DATA_DIR", &data)
        .env("REMIT_ADMIN_LISTEN", "off")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another remit process is using the store"), "{err}");
    // The first server is unharmed.
    let (host, port) = first.url.trim_start_matches("http://").split_once(':').unwrap();
    let mut c = std::net::TcpStream::connect((host, port.parse::<u16>().unwrap())).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Nor can an offline command write under it.
    let o = Command::new(BIN).args(["reseal", "--yes"]).env("REMIT_DATA_DIR", &data).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("another remit process is using the store"));
    // The lock goes with the process: once the first server stops, a new one starts (the lock
    // file left behind is not a stale lock).
    drop(first);
    let again = common::serve(&data, &[], &[]);
    assert!(again.url.starts_with("http://"));
}
