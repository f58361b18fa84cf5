//! Upstream secrets and the leak guard on the real server through the CLI: values go in from
//! stdin or the environment and never come out (not in any answer, the audit log or the
//! database file); rotation keeps the previous version for its overlap; the leak guard finds
//! a stored secret pasted into a prompt (and credential formats), by fingerprint, also after a
//! restart; a deleted secret is no longer found; bad input gets a 4xx and stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

mod common;

use common::BIN;

const V1: &str = "tk_live_9f8e7d6c5b4a39281706";
const V2: &str = "tk_live_0a1b2c3d4e5f60718293";

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn remit(url: &str, data: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--json").args(args).env("REMIT_URL", url).env("REMIT_DATA_DIR", data);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(o: Output) -> Value {
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn secrets_are_write_only_and_the_leak_guard_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = common::serve(&data, &[], &[]);
    let run = |args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]| remit(&s.url, &data, args, stdin, env);
    let tool = [
        "tool",
        "create",
        "tickets",
        "--audience",
        "https://tickets.example",
        "--scope",
        "read",
        "--owner",
        "o@example.com",
    ];
    ok(run(&tool, None, &[]));

    // Set from stdin (the trailing newline dropped), rotate from the environment with overlap.
    let v1 = ok(run(&["secret", "set", "tickets", "api-key"], Some(&format!("{V1}\n")), &[]));
    assert_eq!((v1["version"].as_u64(), v1["length"].as_u64()), (Some(1), Some(V1.len() as u64)), "{v1}");
    let fp1 = v1["fingerprint"].as_str().unwrap().to_owned();
    assert!(fp1.starts_with("fp_"));
    let v2 = ok(run(
        &["secret", "set", "tickets", "api-key", "--from-env", "NEWKEY", "--overlap", "10m"],
        None,
        &[("NEWKEY", V2)],
    ));
    assert_eq!(v2["version"], 2);
    assert_ne!(v2["fingerprint"], v1["fingerprint"]);
    // The same value again has the same fingerprint (keyed, stable).
    let list = ok(run(&["secret", "list", "tickets"], None, &[]));
    let versions: Vec<(u64, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["retire_after"].is_string()))
        .collect();
    assert_eq!(versions, [(1, true), (2, false)], "{list}");

    // Bad input: 4xx, nothing stored.
    for (args, stdin, want) in [
        (vec!["secret", "set", "tickets", "empty"], "", "empty"),
        (vec!["secret", "set", "nope", "api-key"], "x-value-123", "not found"),
        (vec!["secret", "set", "tickets", "Bad Name"], "x-value-123", "name"),
        (vec!["secret", "set", "tickets", "api-key", "--overlap", "30d"], "x-value-123", "overlap"),
    ] {
        let o = run(&args, Some(stdin), &[]);
        assert!(!o.status.success() && text(&o).to_lowercase().contains(want), "{args:?}: {}", text(&o));
    }
    assert_eq!(ok(run(&["secret", "list", "tickets"], None, &[])).as_array().unwrap().len(), 2);
    // No interface reads a value back; other callers may not even list.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http.get(format!("{}/v1/tools/tickets/secrets/api-key", s.url)).bearer_auth(admin.trim()).send().await;
        assert!(r.unwrap().status().is_client_error());
        let r = http
            .put(format!("{}/v1/tools/tickets/secrets/api-key", s.url))
            .bearer_auth(admin.trim())
            .json(&json!({"value": "a", "value_base64": "YQ=="}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = http.get(format!("{}/v1/tools/tickets/secrets", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });

    // The leak guard: both usable versions and an AWS key in a prompt; where, never what.
    let prompt = dir.path().join("prompt.txt");
    let body = format!("Summarise.\nAPI key: {V2}\nold: {V1}\nAWS: AKIAIOSFODNN7EXAMPLE\n{}", "filler ".repeat(6000));
    std::fs::write(&prompt, &body).unwrap();
    let scan = |s_url: &str| {
        let o = remit(s_url, &data, &["secret", "scan", prompt.to_str().unwrap()], None, &[]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(!text(&o).contains(V1) && !text(&o).contains(V2));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let found = scan(&s.url);
    let kinds: Vec<(String, String)> = found["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_owned(), f["secret"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("stored_secret".into(), "tickets/api-key@2".into()),
            ("stored_secret".into(), "tickets/api-key@1".into()),
            ("aws_access_key_id".into(), String::new())
        ],
        "{found}"
    );
    let f0 = &found["findings"][0];
    assert_eq!(&body[f0["offset"].as_u64().unwrap() as usize..][..V2.len()], V2);
    assert_eq!((f0["complete"].as_bool(), f0["fingerprint"].as_str()), (Some(true), v2["fingerprint"].as_str()));
    // A file with nothing in it: exit 0.
    std::fs::write(dir.path().join("clean.txt"), "nothing to see").unwrap();
    let o = run(&["secret", "scan", dir.path().join("clean.txt").to_str().unwrap()], None, &[]);
    assert!(o.status.success(), "{}", text(&o));

    // After a restart the index is rebuilt from the store (values opened, never written out).
    drop(s);
    let s = common::serve(&data, &[], &[]);
    scan(&s.url);

    // Never in the audit log (only fingerprints), never in the database file.
    let audit = ok(remit(&s.url, &data, &["audit", "list", "--limit", "1000"], None, &[]));
    let all = audit.to_string();
    assert!(!all.contains(V1) && !all.contains(V2) && !all.contains("tk_live"), "a value in the audit log");
    assert!(all.contains(&fp1) && all.contains("secret.set") && all.contains("leak.found"), "{all}");
    for f in std::fs::read_dir(&data).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(12).any(|w| w == &V1.as_bytes()[..12] || w == &V2.as_bytes()[..12]),
                "{}",
                p.display()
            );
        }
    }

    // Deleted: gone from the listing and from the leak guard.
    let o =
        remit(&s.url, &data, &["secret", "delete", "tickets", "api-key", "--reason", "rotated upstream"], None, &[]);
    assert_eq!(ok(o)["deleted_versions"], 2);
    assert!(ok(remit(&s.url, &data, &["secret", "list", "tickets"], None, &[])).as_array().unwrap().is_empty());
    let o = remit(&s.url, &data, &["secret", "scan", prompt.to_str().unwrap()], None, &[]);
    let left = serde_json::from_slice::<Value>(&o.stdout).unwrap();
    assert!(left["findings"].as_array().unwrap().iter().all(|f| f["kind"] != "stored_secret"), "{left}");
}
