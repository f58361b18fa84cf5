//! `remit decide` through the real binary, as an agent uses it inside its task: its own task
//! token (`REMIT_TASK_TOKEN`), exit 0 for allow, 3 for deny, 7 when a human must approve;
//! `--wait` waits for the human on the approval's event stream and asks again presenting the
//! approval; a wait nobody answers ends in 7 (still pending), not in a deny.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn an_agent_decides_with_its_own_token_and_waits_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let admin = |args: &[&str]| -> Output {
        Command::new(BIN).args(args).env("REMIT_URL", &s.url).env("REMIT_DATA_DIR", &data).output().unwrap()
    };
    let ok = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    let policies = root().join("examples/agents/policies");
    ok(admin(&[
        "workflow",
        "create",
        "triage",
        "--purpose",
        "triage",
        "--owner",
        "alice@example.com",
        "--tool",
        "jira.read",
        "--tool",
        "jira.write",
        "--ceiling",
        "confidential",
    ]));
    ok(admin(&["agent", "create", "triage-bot", "--workflow", "triage"]));
    ok(admin(&["policy", "push", policies.to_str().unwrap()]));
    let task =
        ok(admin(&["--json", "task", "start", "--workflow", "triage", "--agent", "triage-bot", "--intent", "t"]));
    let token = task["token"].as_str().unwrap().to_owned();

    // The agent's side: only its task token and the URL (no data directory, no admin token).
    let agent = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(args)
            .env("REMIT_URL", &s.url)
            .env("REMIT_TASK_TOKEN", &token)
            .env("REMIT_DATA_DIR", dir.path().join("nowhere"))
            .env_remove("REMIT_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let o = agent(&["decide", "--tool", "jira.read", "--fact", "target=JIRA-101"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("allow (by triage.jira-read)"), "{}", text(&o));
    let o = agent(&["decide", "--tool", "slack.post"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not among workflow"), "{}", text(&o));
    // The workflow's tools are replaced while the task lives: its next decision follows.
    let w =
        ok(admin(&["--json", "workflow", "set-tools", "triage", "--tool", "jira.read", "--reason", "read-only week"]));
    assert_eq!(w["allowed_tools"], serde_json::json!(["jira.read"]), "{w}");
    let o = agent(&["decide", "--tool", "jira.write"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    ok(admin(&["workflow", "set-tools", "triage", "--tool", "jira.read", "--tool", "jira.write", "--reason", "back"]));

    // A write needs a human: exit 7 and the request's id.
    let o = agent(&["--json", "decide", "--tool", "jira.write", "--fact", "target=JIRA-101"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "approval_required", "{v}");
    let first = v["approval"]["id"].as_str().unwrap().to_owned();
    // Presented before anyone decided: still pending (7), not a deny.
    let o = agent(&["--json", "decide", "--tool", "jira.write", "--fact", "target=JIRA-101", "--approval", &first]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    // Waiting on it with nobody answering ends in 7 after the timeout.
    let o = agent(&[
        "decide",
        "--tool",
        "jira.write",
        "--fact",
        "target=JIRA-101",
        "--approval",
        &first,
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("still pending"), "{}", text(&o));

    // --wait: the owner approves meanwhile (the newest pending request), and the retry is allowed.
    let approver = std::thread::spawn({
        let (url, data) = (s.url.clone(), data.clone());
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "no second request appeared");
                let o = Command::new(BIN)
                    .args(["--json", "approval", "list"])
                    .env("REMIT_URL", &url)
                    .env("REMIT_DATA_DIR", &data)
                    .output()
                    .unwrap();
                let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                let ids: Vec<String> =
                    list.as_array().unwrap().iter().filter_map(|a| a["id"].as_str().map(str::to_owned)).collect();
                if let Some(id) = ids.iter().find(|i| **i != first) {
                    let o = Command::new(BIN)
                        .args(["--operator", "alice@example.com", "approval", "approve", id, "--reason", "ok"])
                        .env("REMIT_URL", &url)
                        .env("REMIT_DATA_DIR", &data)
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "{}", text(&o));
                    return id.clone();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let o =
        agent(&["--json", "decide", "--tool", "jira.write", "--fact", "target=JIRA-101", "--wait", "--timeout", "60s"]);
    let approved = approver.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["outcome"].as_str(), v["reasons"][0].as_str()), (Some("allow"), Some("triage.jira-write")), "{v}");
    let shown = ok(admin(&["--json", "approval", "show", &approved]));
    assert_eq!(shown["state"], "used", "{shown}");
}
