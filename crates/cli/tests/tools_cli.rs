//! `remit tool` and `remit token exchange` through the real binary against the real server:
//! an operator registers a tool, a task trades its token for a credential for it, a scope that
//! needs approval waits for a human (exit 7 with the approval id), and disabling the tool
//! makes its credentials inactive (`remit token verify`, exit 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

mod common;

use common::BIN;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs the CLI against the server at `url` with the data directory `data` (and no task
/// token unless `env` gives one).
fn run_cli(url: &str, data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env("REMIT_URL", url).env("REMIT_DATA_DIR", data).env_remove("REMIT_TASK_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The JSON a successful command printed (asserting it succeeded).
fn ok(o: Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_task_trades_its_token_for_a_tool_credential() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let run = |args: &[&str], env: &[(&str, &str)]| run_cli(&s.url, &data, args, env);
    ok(run(&["workflow", "create", "triage", "--purpose", "triage", "--owner", "alice@example.com"], &[]));
    ok(run(&["agent", "create", "bot", "--workflow", "triage"], &[]));
    let t = ok(run(
        &[
            "--json",
            "tool",
            "create",
            "tickets",
            "--audience",
            "https://tickets.example/api",
            "--scope",
            "read",
            "--scope",
            "write",
            "--max-ttl",
            "2m",
            "--owner",
            "carol@example.com",
        ],
        &[],
    ));
    assert!(t["introspection_secret"].as_str().unwrap().starts_with("remit_tool.tickets."));
    let listed = ok(run(&["--json", "tool", "list"], &[]));
    assert_eq!(listed[0]["scopes"], serde_json::json!(["read", "write"]));
    let pol = dir.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("tools.cedarschema"),
        "action read, write appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
    )
    .unwrap();
    std::fs::write(
        pol.join("tools.cedar"),
        "permit (principal, action == Action::\"read\", resource == Tool::\"tickets\");\n\
         @approval(\"writes need a human\")\n\
         permit (principal, action == Action::\"write\", resource == Tool::\"tickets\");\n",
    )
    .unwrap();
    ok(run(&["policy", "push", pol.to_str().unwrap()], &[]));
    let task =
        ok(run(&["--json", "task", "start", "--workflow", "triage", "--agent", "bot", "--intent", "triage"], &[]));
    let tok = task["token"].as_str().unwrap().to_owned();
    let env = [("REMIT_TASK_TOKEN", tok.as_str())];

    // Every scope the policy grants outright: read.
    let o = run(&["--json", "token", "exchange", "--tool", "tickets"], &env);
    let v = ok(o);
    assert_eq!((v["scope"].as_str(), v["token_type"].as_str()), (Some("read"), Some("Bearer")), "{v}");
    let cred = v["access_token"].as_str().unwrap().to_owned();
    // A relying party's check: the JWKS, the announced issuer, the tool's audience, active.
    let o = run(&["token", "verify", &cred, "--audience", "https://tickets.example/api"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("status:    active"), "{}", text(&o));

    // write needs a human: exit 7 and the approval id on stdout.
    let o = run(&["token", "exchange", "--tool", "tickets", "--scope", "write"], &env);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(id.starts_with("a-"), "{}", text(&o));
    ok(run(&["--operator", "alice@example.com", "approval", "approve", &id, "--reason", "CHG-1"], &[]));
    let o = run(
        &["token", "exchange", "--tool", "https://tickets.example/api", "--scope", "write", "--approval", &id],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    // A scope the tool does not take.
    let o = run(&["token", "exchange", "--tool", "tickets", "--scope", "admin"], &env);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("invalid_scope"), "{}", text(&o));

    // The tool's kill switch: its credentials are inactive at once.
    ok(run(&["tool", "disable", "tickets", "--reason", "breach"], &[]));
    let o = run(&["token", "verify", &cred, "--audience", "https://tickets.example/api"], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn a_supervisor_runs_a_worker_as_a_child_task() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let run = |args: &[&str], env: &[(&str, &str)]| run_cli(&s.url, &data, args, env);
    ok(run(
        &[
            "workflow",
            "create",
            "ops",
            "--purpose",
            "ops",
            "--owner",
            "alice@example.com",
            "--max-depth",
            "2",
            "--delegate",
            "sup=worker",
        ],
        &[],
    ));
    ok(run(&["agent", "create", "sup", "--workflow", "ops"], &[]));
    ok(run(&["agent", "create", "worker", "--workflow", "ops"], &[]));
    let root = ok(run(
        &["--json", "task", "start", "--workflow", "ops", "--agent", "sup", "--intent", "run", "--ttl", "10m"],
        &[],
    ));
    let root_tok = root["token"].as_str().unwrap().to_owned();
    let root_id = root["task"]["id"].as_str().unwrap().to_owned();
    // The worker runs under `remit exec --parent`: its own child identity, narrowed.
    let o = run(
        &[
            "--json",
            "exec",
            "--parent",
            "--agent",
            "worker",
            "--intent",
            "one ticket",
            "--allow-tool",
            "tickets",
            "--max-calls",
            "5",
            "--no-delegate",
            "--local-demo",
            "--",
            "sh",
            "-c",
            "echo \"$REMIT_TASK_ID\"",
        ],
        &[("REMIT_TASK_TOKEN", &root_tok)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let child_id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(child_id.starts_with("t-") && child_id != root_id, "{}", text(&o));
    let child = ok(run(&["--json", "task", "show", &child_id], &[]));
    assert_eq!(child["parent"], root_id.as_str());
    assert_eq!(child["agent"], "worker");
    assert_eq!(child["delegation_depth"], 1);
    assert_eq!(child["authority"]["tools"], serde_json::json!(["tickets"]));
    assert_eq!(child["authority"]["may_delegate"], false);
    assert_eq!(child["state"], "completed", "exec completes the child when the command exits");
    // A wider request is refused, naming the attribute (exit 3).
    let o = run(
        &["exec", "--parent", "--agent", "worker", "--intent", "x", "--ttl", "1h", "--local-demo", "--", "true"],
        &[("REMIT_TASK_TOKEN", &root_tok)],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("`ttl`"), "{}", text(&o));
    // The admin can start a child too (`task start --parent`).
    let c = ok(run(
        &[
            "--json",
            "task",
            "start",
            "--parent",
            &root_id,
            "--agent",
            "worker",
            "--intent",
            "y",
            "--allow-scope",
            "read",
        ],
        &[],
    ));
    assert_eq!(c["task"]["authority"]["scopes"], serde_json::json!(["read"]));
}
