//! The Python SDK (`sdk/python`) against the real server: its pytest suite runs against a
//! `remit serve` started here (the suite fails, never skips, without one), and the example
//! agent (`examples/agents/triage_agent.py`) runs under `remit exec` while a human, through
//! the CLI, approves the write it asks for.
//!
//! The interpreter is `REMIT_TEST_PYTHON` (`scripts/test.sh` sets it), else whatever
//! `scripts/python-env.sh` prints (it builds the shared venv, SDK installed). No Python is a
//! failure, not a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

mod common;

use common::{BIN, Server, python, repo};

const OWNER: &str = "alice@example.com";

/// Reads a pipe to the end in a thread (so a chatty child never blocks on a full pipe).
fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` with its output captured. Past `limit` it gets SIGTERM (`remit exec` passes it
/// on to its command), then SIGKILL, and the test fails showing what it printed.
fn run(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline && !timed_out {
            timed_out = true;
            let _ = kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM);
        }
        if Instant::now() >= deadline + Duration::from_secs(15) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(!timed_out, "{:?} did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}", cmd.get_program());
    (status, out, err)
}

/// A fresh server on a fresh data directory, and that directory's admin credential.
fn server(dir: &Path) -> (Server, PathBuf, String) {
    let data = dir.join("data");
    let s = common::serve(&data, &[], &[]);
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    assert!(!admin.is_empty(), "no admin credential in {}", data.display());
    (s, data, admin)
}

#[test]
fn the_sdk_test_suite_passes_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _data, admin) = server(dir.path());
    let repo = repo();
    let mut c = Command::new(python());
    c.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo.join("sdk/python/tests"))
        .current_dir(repo.join("sdk/python"))
        .env("REMIT_TEST_URL", s.url.as_str())
        .env("REMIT_TEST_ADMIN_TOKEN", admin.as_str())
        .env("REMIT_TEST_REPO", repo.as_os_str())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for k in ["REMIT_URL", "REMIT_TASK_TOKEN", "REMIT_TASK_TOKEN_FILE", "REMIT_TASK_ID", "REMIT_TEST_ADMIN_SOCKET"] {
        c.env_remove(k);
    }
    // The admin listener speaks the same API on a Unix socket; the suite tries the SDK on it.
    if let Some(sock) = s.admin_url.as_deref().and_then(|u| u.strip_prefix("unix:")) {
        c.env("REMIT_TEST_ADMIN_SOCKET", sock.trim_start_matches("//"));
    }
    let (status, out, err) = run(c, Duration::from_secs(600));
    assert!(status.success(), "pytest failed ({status}):\n{out}\n{err}");
    eprintln!("{}", out.lines().next_back().unwrap_or_default());
}

/// The `remit` CLI, as an operator on this machine (the admin credential from `data`).
fn remit(url: &str, data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("REMIT_URL", url)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .env_remove("REMIT_OPERATOR")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// The first pending approval request's id, once there is one.
fn pending_request(url: &str, data: &Path, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let o = remit(url, data, &["--json", "approval", "list", "--state", "pending"]);
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let list = v.as_array().or_else(|| v["approvals"].as_array());
            if let Some(id) = list.and_then(|l| l.first()).and_then(|a| a["id"].as_str()) {
                return Some(id.to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn the_example_agent_reads_then_writes_once_a_human_approved() {
    let dir = tempfile::tempdir().unwrap();
    let (s, data, _admin) = server(dir.path());
    let repo = repo();
    let policies = repo.join("examples/agents/policies");
    let r = |args: &[&str]| ok(&remit(&s.url, &data, args));
    r(&[
        "--json",
        "workflow",
        "create",
        "triage",
        "--purpose",
        "triage new Jira tickets",
        "--owner",
        OWNER,
        "--tool",
        "jira.read",
        "--tool",
        "jira.write",
        "--ceiling",
        "confidential",
    ]);
    r(&["--json", "agent", "create", "triage-bot", "--workflow", "triage"]);
    r(&["--json", "policy", "push", policies.to_str().unwrap()]);
    let jt = r(&["agent", "join-token", "triage-bot", "--ttl", "10m", "--json"])["token"].as_str().unwrap().to_owned();

    // The human: waits for the agent's request to show up, then approves it as the owner.
    let approver = {
        let (url, data) = (s.url.clone(), data.clone());
        std::thread::spawn(move || {
            let id = pending_request(&url, &data, Duration::from_secs(120));
            if let Some(id) = &id {
                ok(&remit(&url, &data, &["--operator", OWNER, "approval", "approve", id, "--reason", "ok"]));
            }
            id
        })
    };

    let mut c = Command::new(BIN);
    c.args(["exec", "--local-demo", "--workflow", "triage", "--intent", "triage new tickets", "--ttl", "5m", "--"])
        .arg(python())
        .arg(repo.join("examples/agents/triage_agent.py"))
        .current_dir(dir.path())
        .env("REMIT_URL", s.url.as_str())
        .env("REMIT_DATA_DIR", data.as_os_str())
        .env("REMIT_JOIN_TOKEN", jt.as_str())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("REMIT_ADMIN_TOKEN");
    let (status, out, err) = run(c, Duration::from_secs(180));
    let id = approver.join().unwrap();
    let shown = format!("stdout:\n{out}\nstderr:\n{err}");
    let id = id.unwrap_or_else(|| panic!("the agent's approval request never showed up\n{shown}"));
    assert!(status.success(), "remit exec: {status}\n{shown}");
    for line in [
        "read JIRA-101: allow (by triage.jira-read)".to_owned(),
        format!("write JIRA-101: waiting for a human to approve {id}"),
        format!("remit --operator {OWNER} approval approve {id} --reason"),
        format!("write JIRA-101: request {id} approved by break-glass:{OWNER}: ok"),
        "write JIRA-101: allow (by triage.jira-write)".to_owned(),
    ] {
        assert!(out.contains(&line), "missing `{line}`\n{shown}");
    }
    // The approval was spent on that one write.
    let a = r(&["--json", "approval", "show", &id]);
    assert_eq!(a["state"], "used", "{a}");
}

/// `examples/agents/demo.sh`, the unattended run of the example a newcomer starts with, works
/// as written: its own server, setup, offline cases, the agent, the approval, the kill switch.
#[test]
fn the_examples_demo_script_runs_end_to_end() {
    let mut cmd = Command::new(repo().join("examples/agents/demo.sh"));
    cmd.env("REMIT_BIN", BIN).env("PYTHON", python()).env_remove("REMIT_URL").env_remove("REMIT_DATA_DIR");
    let (status, out, err) = run(cmd, Duration::from_secs(120));
    assert!(status.success(), "demo.sh failed ({status}):\n{out}\n{err}");
    for want in [
        "read JIRA-101: allow (by triage.jira-read)",
        "write JIRA-101: allow (by triage.jira-write)",
        "approval.use",
        "Suspended workflow triage",
        "audit log OK",
    ] {
        assert!(out.contains(want), "demo.sh output lacks `{want}`:\n{out}\n{err}");
    }
}
