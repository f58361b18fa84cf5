//! The "done means" path, through the real `remit` binary: `serve` initializes and listens,
//! the CLI creates a workflow, an agent and a join token, `remit exec` hands a command its
//! task token, the token is valid while it runs and inactive after, a suspension kills live
//! tasks, SIGTERM to `remit exec` still completes the task, and `audit verify` passes and
//! then fails, naming the record, once a row is edited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Server};

fn serve(data: &Path) -> Server {
    let s = common::serve(data, &[], &[]);
    assert!(s.banner.iter().any(|l| l.contains("admin-token")), "first run prints where the admin credential is");
    s
}

fn remit(s: &Server, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env("REMIT_URL", &s.url).env("REMIT_DATA_DIR", data).env_remove("REMIT_ADMIN_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn done_means_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve(&data);
    let r = |args: &[&str]| remit(&s, &data, args, &[]);

    ok(&r(&[
        "--json",
        "workflow",
        "create",
        "deploy",
        "--purpose",
        "ship",
        "--owner",
        "alice@example.com",
        "--max-ttl",
        "15m",
    ]));
    ok(&r(&["--json", "agent", "create", "deploy-bot", "--workflow", "deploy"]));
    let jt = ok(&r(&["--json", "agent", "join-token", "deploy-bot", "--ttl", "10m"]));
    let jt = jt["token"].as_str().unwrap();

    // The wrapped command receives its task token (env + 0600 file), checks it is active
    // through the CLI, and its exit code passes through.
    let out_file = dir.path().join("token");
    let script = format!(
        "test \"$(stat -c %a \"$REMIT_TASK_TOKEN_FILE\")\" = 600 || exit 90; \
         test -z \"$REMIT_JOIN_TOKEN$REMIT_ADMIN_TOKEN\" || exit 91; \
         cp \"$REMIT_TASK_TOKEN_FILE\" {out}; \
         REMIT_DATA_DIR={data} {bin} token verify \"$REMIT_TASK_TOKEN\" || exit 92; exit 42",
        out = out_file.display(),
        data = data.display(),
        bin = BIN
    );
    let o = remit(
        &s,
        &data,
        &[
            "exec",
            "--local-demo",
            "--workflow",
            "deploy",
            "--intent",
            "deploy v1",
            "--ttl",
            "5m",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("REMIT_JOIN_TOKEN", jt)],
    );
    assert_eq!(code(&o), 42, "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let token = std::fs::read_to_string(&out_file).unwrap();
    let v = r(&["token", "verify", token.trim()]);
    assert_eq!(code(&v), 3, "after the command exits its token is inactive");
    assert!(String::from_utf8_lossy(&v.stdout).contains("signature: valid"));

    // A reused join token is refused with the "denied" exit code.
    let o = remit(
        &s,
        &data,
        &["exec", "--local-demo", "--workflow", "deploy", "--intent", "again", "--", "true"],
        &[("REMIT_JOIN_TOKEN", jt)],
    );
    assert_eq!(code(&o), 3);

    // Admin-started task: active, then the workflow kill switch ends it.
    let t = ok(&r(&[
        "--json",
        "task",
        "start",
        "--workflow",
        "deploy",
        "--agent",
        "deploy-bot",
        "--intent",
        "hotfix",
        "--ttl",
        "5m",
    ]));
    let tok = t["token"].as_str().unwrap();
    assert_eq!(code(&r(&["token", "verify", tok])), 0);
    ok(&r(&["--json", "workflow", "suspend", "deploy", "--reason", "incident 9"]));
    assert_eq!(code(&r(&["token", "verify", tok])), 3);
    let o = r(&["task", "start", "--workflow", "deploy", "--agent", "deploy-bot", "--intent", "x"]);
    assert_eq!(code(&o), 3, "starting a task on a suspended workflow is denied");
    ok(&r(&["--json", "workflow", "resume", "deploy", "--reason", "resolved"]));

    // SIGTERM to `remit exec` is forwarded; the task is completed all the same.
    let jt2 = ok(&r(&["--json", "agent", "join-token", "deploy-bot"]));
    let mut exec = Command::new(BIN)
        .args([
            "exec",
            "--local-demo",
            "--workflow",
            "deploy",
            "--intent",
            "long job",
            "--",
            "sh",
            "-c",
            "echo $REMIT_TASK_ID; exec sleep 30",
        ])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .env("REMIT_JOIN_TOKEN", jt2["token"].as_str().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(exec.stdout.take().unwrap());
    let mut task_id = String::new();
    out.read_line(&mut task_id).unwrap();
    let task_id = task_id.trim().to_owned();
    assert!(task_id.starts_with("t-"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = exec.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "remit exec did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(128 + 15), "the child's signal death passes through as 143");
    let t = ok(&r(&["--json", "task", "show", &task_id]));
    assert_eq!(t["state"], "completed");

    // The audit log verifies; a checkpoint is signed within a second; edits are named.
    let v = r(&["audit", "verify"]);
    assert_eq!(code(&v), 0, "{}", String::from_utf8_lossy(&v.stderr));
    let log = ok(&r(&["--json", "audit", "list", "--action", "workflow.suspend"]));
    assert_eq!(log[0]["reason"], "incident 9");
    let export = r(&["audit", "export"]);
    assert!(String::from_utf8_lossy(&export.stdout).lines().count() > 10);
    let db = rusqlite::Connection::open(data.join("remit.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'nothing happened' WHERE seq = 7;")
        .unwrap();
    let v = r(&["audit", "verify"]);
    assert_eq!(code(&v), 1);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(err.contains("record 7: hash does not match"), "{err}");
}

#[test]
fn client_errors_have_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve(&data);
    assert_eq!(code(&remit(&s, &data, &["workflow", "show", "nope"], &[])), 4, "not found");
    assert_eq!(code(&remit(&s, &data, &["workflow", "list"], &[("REMIT_ADMIN_TOKEN", "remit_admin_wrong")])), 3);
    assert_eq!(code(&remit(&s, &data, &["workflow", "create", "x"], &[])), 2, "usage");
    let other = dir.path().join("other");
    let gone = Command::new(BIN)
        .args(["workflow", "list"])
        .env("REMIT_URL", "http://127.0.0.1:9")
        .env("REMIT_ADMIN_TOKEN", "remit_admin_x")
        .env("REMIT_DATA_DIR", &other)
        .output()
        .unwrap();
    assert_eq!(code(&gone), 5, "server unreachable");
    // `init` on an initialized directory refuses and changes nothing.
    let before = std::fs::read_to_string(data.join("admin-token")).unwrap();
    assert_eq!(code(&remit(&s, &data, &["init"], &[])), 1);
    assert_eq!(std::fs::read_to_string(data.join("admin-token")).unwrap(), before);
}
