//! `remit exec` as a boundary, through the real binaries: it refuses to run a command that
//! could read the admin credential (unless `--local-demo`); a command run as another user
//! (`--user nobody`) sees only its own `REMIT_*` variables, cannot read the credential and
//! cannot approve its own request; and a kill switch stops the command (exit code 6), even one
//! that ignores SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Server};

struct Env {
    dir: tempfile::TempDir,
    data: PathBuf,
    s: Server,
}

fn remit(e: &Env, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("REMIT_URL", &e.s.url)
        .env("REMIT_DATA_DIR", &e.data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let e = Env { dir, data, s };
    ok(&remit(&e, &["--json", "workflow", "create", "triage", "--purpose", "triage", "--owner", "alice@example.com"]));
    ok(&remit(&e, &["--json", "agent", "create", "triager", "--workflow", "triage"]));
    e
}

fn join_token(e: &Env) -> String {
    ok(&remit(e, &["--json", "agent", "join-token", "triager"]))["token"].as_str().unwrap().to_owned()
}

/// `remit exec … -- sh -c SCRIPT`, not waited for; the script's first line of output is read
/// back (scripts print their task id first).
fn exec(e: &Env, flags: &[&str], script: &str, extra_env: &[(&str, &str)]) -> (Child, String) {
    let mut c = Command::new(BIN);
    c.arg("exec").args(flags).args(["--workflow", "triage", "--intent", "triage JIRA-1", "--", "sh", "-c", script]);
    c.env("REMIT_URL", &e.s.url)
        .env("REMIT_DATA_DIR", &e.data)
        .env("REMIT_JOIN_TOKEN", join_token(e))
        .current_dir(e.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    (child, first.trim().to_owned())
}

fn wait(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "remit exec is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_command_that_could_read_the_admin_credential_is_refused() {
    let e = setup();
    let marker = e.dir.path().join("ran");
    let o = Command::new(BIN)
        .args(["exec", "--workflow", "triage", "--intent", "x", "--", "sh", "-c"])
        .arg(format!("touch {}", marker.display()))
        .env("REMIT_URL", &e.s.url)
        .env("REMIT_DATA_DIR", &e.data)
        .env("REMIT_JOIN_TOKEN", join_token(&e))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("admin credential") && err.contains("--user") && err.contains("--local-demo"), "{err}");
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn a_kill_switch_stops_the_command() {
    let e = setup();
    // A command that exits on SIGTERM: revoking its task stops it.
    let stopped = e.dir.path().join("stopped");
    let script =
        format!("trap 'echo stopped > {}; exit 143' TERM; echo $REMIT_TASK_ID; sleep 120 & wait", stopped.display());
    let (mut child, task) = exec(&e, &["--local-demo"], &script, &[]);
    assert!(task.starts_with("t-"), "{task}");
    let t0 = Instant::now();
    ok(&remit(&e, &["--json", "task", "revoke", &task, "--reason", "incident 12"]));
    let code = wait(&mut child, Duration::from_secs(60));
    eprintln!("task revoke → remit exec exited in {:?}", t0.elapsed());
    assert_eq!(code, 6, "exit code for a task that ended: {}", read_stderr(&mut child));
    assert!(stopped.exists(), "the command never got SIGTERM");
    let t = ok(&remit(&e, &["--json", "task", "show", &task]));
    assert_eq!(t["state"], "revoked", "exec does not mark a killed task completed");

    // A command that ignores SIGTERM is killed after the grace period; a workflow kill
    // reaches it as well.
    let (mut child, task) = exec(
        &e,
        &["--local-demo", "--grace", "1"],
        "trap '' TERM; echo $REMIT_TASK_ID; while :; do sleep 1; done",
        &[],
    );
    assert!(task.starts_with("t-"));
    ok(&remit(&e, &["--json", "workflow", "suspend", "triage", "--reason", "incident 13"]));
    assert_eq!(wait(&mut child, Duration::from_secs(60)), 6);
}

fn read_stderr(c: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// A copy of the binary `nobody` can run (the build directory may be private).
fn public_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = bin.join("remit");
    std::fs::copy(BIN, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

#[test]
fn a_command_run_as_nobody_cannot_approve_its_own_request() {
    if !is_root() {
        eprintln!("skipped: switching to `nobody` needs root (CI runs as root)");
        return;
    }
    let e = setup();
    // Writing to Jira needs the workflow owner's approval.
    let bundle = e.dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join("p.cedar"),
        "@id(\"write\") @approval(\"writes need the owner\")\n\
         permit (principal is Task, action == Action::\"call_tool\", resource == Tool::\"jira-write\");\n",
    )
    .unwrap();
    ok(&remit(&e, &["--json", "policy", "push", bundle.to_str().unwrap()]));
    let out = e.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = public_binary(e.dir.path());
    let script = format!(
        "echo $REMIT_TASK_ID; cp \"$REMIT_TASK_TOKEN_FILE\" {o}/token; \
         env | grep '^REMIT_' | cut -d= -f1 | sort > {o}/env; id -u > {o}/uid; \
         cat {data}/admin-token > {o}/leak 2>/dev/null; \
         while [ ! -s {o}/approval ]; do sleep 0.1; done; \
         {bin} --url {url} --data-dir {data} --operator mallory@example.com approval approve \"$(cat {o}/approval)\" --reason mine \
           > {o}/approve.out 2>&1; echo $? > {o}/code",
        o = out.display(),
        data = e.data.display(),
        bin = bin.display(),
        url = e.s.url,
    );
    let (mut child, task) = exec(
        &e,
        &["--user", "nobody"],
        &script,
        &[("REMIT_OPERATOR", "root"), ("REMIT_SOMETHING_ELSE", "x"), ("REMIT_ADMIN_TOKEN", "remit_admin_nope")],
    );
    assert!(task.starts_with("t-"), "{task}: {}", read_stderr(&mut child));
    // Acting as the gateway, open the approval for the command's own call.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.join("token").exists() || std::fs::read_to_string(out.join("token")).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the command never wrote its token");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(out.join("token")).unwrap();
    let admin = std::fs::read_to_string(e.data.join("admin-token")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let d: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/decisions", e.s.url))
            .bearer_auth(admin.trim())
            .json(&serde_json::json!({"token": token.trim(), "action": {"name": "call_tool"},
                                      "resource": {"type": "Tool", "id": "jira-write"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(d["outcome"], "approval_required", "{d}");
    let id = d["approval"]["id"].as_str().unwrap().to_owned();
    std::fs::write(out.join("approval"), &id).unwrap();
    assert_eq!(wait(&mut child, Duration::from_secs(60)), 0, "{}", read_stderr(&mut child));
    let code: i32 = std::fs::read_to_string(out.join("code")).unwrap().trim().parse().unwrap();
    assert_ne!(
        code,
        0,
        "the command approved its own request: {}",
        std::fs::read_to_string(out.join("approve.out")).unwrap()
    );
    let a = ok(&remit(&e, &["--json", "approval", "show", &id]));
    assert_eq!(a["state"], "pending", "{a}");
    assert!(
        std::fs::read_to_string(out.join("leak")).unwrap_or_default().is_empty(),
        "nobody read the admin credential"
    );
    assert_eq!(std::fs::read_to_string(out.join("uid")).unwrap().trim(), "65534");
    assert_eq!(
        std::fs::read_to_string(out.join("env")).unwrap(),
        "REMIT_SPIFFE_ID\nREMIT_TASK_ID\nREMIT_TASK_TOKEN\nREMIT_TASK_TOKEN_FILE\nREMIT_URL\n",
        "only the task's own variables reach the command"
    );
}
