//! The CLI behaves the same everywhere, through the real binary: `serve` speaks to a terminal
//! and only logs (without colour codes) otherwise; durations mean what people mean; errors
//! are JSON under `--json`, every list is a JSON array and every time RFC 3339; `exec` speaks
//! JSON too; `version`, `status` and `completions` work; global options are described once;
//! `/metrics` opens to the read-only scrape credential, which opens nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `remit ARGS` against `url` with the data directory `data`.
fn remit(url: &str, data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("REMIT_URL", url)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// A plain HTTP/1.1 GET over a socket: (status, body).
fn get(url: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[test]
fn serve_speaks_to_a_terminal_and_only_logs_otherwise() {
    // Not a terminal: nothing on stdout, text logs on stderr without colour codes.
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .env("REMIT_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err).unwrap().contains("remit serving") {
        assert!(Instant::now() < deadline, "no serving log line: {}", std::fs::read_to_string(&err).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&err).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "", "no banner off a terminal");
    assert!(!logs.contains('\u{1b}'), "no colour codes in a log file: {logs}");
    assert!(logs.contains("admin_token_file"), "the first run says where the credential is: {logs}");
    let credential = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    assert!(!logs.contains(credential.trim()), "the credential is never logged");

    // A terminal (a pseudo-terminal from util-linux `script`): the human banner.
    let data = dir.path().join("tty-data");
    let cmd = format!("echo PID $$; exec {BIN} serve --listen 127.0.0.1:0 --data-dir {}", data.display());
    let mut script = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let (mut pid, mut seen) = (None, Vec::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.trim().strip_prefix("PID ") {
            pid = p.trim().parse::<i32>().ok();
        }
        let done = line.contains("Remit listening on http://127.0.0.1:");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = Command::new("kill").arg(pid.expect("the shell said its pid").to_string()).status();
    let _ = script.wait();
    let seen = seen.join("\n");
    assert!(seen.contains("Remit listening on"), "{seen}");
    assert!(seen.contains("Admin credential (shown once"), "{seen}");
    assert!(!seen.contains("\"level\""), "on a terminal, logs default to text: {seen}");
}

#[test]
fn durations_help_and_errors_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9"; // nothing listens: these never reach a server
    let create = |ttl: &str| {
        remit(
            url,
            dir.path(),
            &["workflow", "create", "w", "--purpose", "p", "--owner", "a@example.com", "--max-ttl", ttl],
        )
    };
    let o = create("-1s");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot be negative") && !text(&o).contains("tip:"), "{}", text(&o));
    let o = create("5M");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ambiguous"), "{}", text(&o));

    // Errors are JSON under --json: usage errors (2) and failures (here 5: unreachable).
    let o = remit(url, dir.path(), &["workflow", "create", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["error"]["exit_code"], 2, "{e}");
    let o = remit(url, dir.path(), &["workflow", "list", "--json", "--admin-token", "remit_admin_x"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["error"]["exit_code"], 5, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("cannot reach"), "{e}");

    // version and completions.
    let o = remit(url, dir.path(), &["version"]);
    assert!(o.status.success() && text(&o).starts_with("remit "), "{}", text(&o));
    let o = remit(url, dir.path(), &["--json", "version"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    for shell in ["bash", "zsh", "fish"] {
        let o = remit(url, dir.path(), &["completions", shell]);
        assert!(o.status.success() && text(&o).contains("workflow"), "{shell}: {}", text(&o));
    }

    // Global options are described once, on `remit`, and still accepted after a subcommand.
    let top = text(&remit(url, dir.path(), &["--help"]));
    assert!(top.contains("--data-dir") && top.contains("--admin-token"), "{top}");
    let sub = text(&remit(url, dir.path(), &["workflow", "create", "--help"]));
    assert!(!sub.contains("--data-dir <DATA_DIR>") && sub.contains("remit --help"), "{sub}");
    assert!(sub.contains("[possible values: public, internal, confidential, restricted]"), "{sub}");
}

#[test]
fn lists_times_status_exec_and_metrics_through_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let cli = |args: &[&str]| remit(&s.url, &data, args);
    let ok = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    ok(cli(&["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com", "--max-ttl", "1h30m"]));
    ok(cli(&["agent", "create", "bot", "--workflow", "w"]));
    let shown = ok(cli(&["--json", "workflow", "show", "w"]));
    assert_eq!(shown["max_task_ttl_seconds"], 5400, "{shown}");
    // A limit is shown in the units people use.
    let o = cli(&["task", "start", "--workflow", "w", "--agent", "bot", "--intent", "i", "--ttl", "2h"]);
    assert!(text(&o).contains("requested ttl of 2h exceeds the maximum of 1h30m"), "{}", text(&o));

    // `exec` speaks JSON too (stderr; stdout is the command's).
    let jt = ok(cli(&["--json", "agent", "join-token", "bot", "--ttl", "5m"]));
    let o = Command::new(BIN)
        .args(["--json", "exec", "--local-demo", "--workflow", "w", "--intent", "json", "--", "true"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .env("REMIT_JOIN_TOKEN", jt["token"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stderr).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["task_started", "task_completed"], "{events:?}");

    // Every list is a JSON array; every time is RFC 3339.
    for list in
        [&["workflow", "list"][..], &["agent", "list"], &["task", "list"], &["approval", "list"], &["audit", "list"]]
    {
        let args: Vec<&str> = std::iter::once("--json").chain(list.iter().copied()).collect();
        let v = ok(cli(&args));
        assert!(v.is_array(), "{list:?}: {v}");
    }
    let audit = ok(cli(&["--json", "audit", "list"]));
    let t = audit[0]["time"].as_str().expect("audit times are strings");
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");
    let tasks = ok(cli(&["--json", "task", "list"]));
    assert!(tasks[0]["created_at"].as_str().unwrap().ends_with('Z'), "{tasks}");

    // status.
    let st = ok(cli(&["--json", "status"]));
    assert_eq!(st["store"]["kind"], "sqlite", "{st}");
    assert_eq!(st["policy"]["version"], 0, "{st}");
    assert!(st["audit"]["head_seq"].as_u64().unwrap() > 0, "{st}");
    assert!(st["keys"]["jwt_signing_kid"].as_str().is_some_and(|k| !k.is_empty()), "{st}");
    let o = cli(&["status"]);
    assert!(o.status.success() && text(&o).contains("policy:      none pushed"), "{}", text(&o));
    // The one server holds governance's audit tail.
    assert!(text(&o).contains("job:         governance.tail held here"), "{}", text(&o));
    let tail = st["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "governance.tail").cloned();
    assert_eq!(
        tail.as_ref().map(|t| (t["holder"].clone(), t["held"].clone())),
        Some((serde_json::json!("local"), serde_json::json!(true))),
        "{st}"
    );

    // The scrape credential reads /metrics and nothing else.
    let scrape = std::fs::read_to_string(data.join("metrics-token")).unwrap();
    let scrape = scrape.trim();
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let (st, body) = get(&s.url, "/metrics", Some(scrape));
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("remit_"), "{body}");
    assert_eq!(get(&s.url, "/metrics", None).0, 401);
    assert_eq!(get(&s.url, "/metrics", Some("remit_metrics_wrong")).0, 401);
    assert_eq!(get(&s.url, "/metrics", Some(admin.trim())).0, 200);
    assert_eq!(get(&s.url, "/v1/workflows", Some(scrape)).0, 401, "the scrape credential opens nothing else");
    assert_eq!(get(&s.url, "/v1/status", Some(scrape)).0, 401);
}
