//! Policy through the real `remit` binary: validate offline (Cedar's diagnostics on
//! failure), push to a running server, load entities, run decision cases with `policy test`,
//! change a decision by pushing a new version (no restart), refuse an invalid push without
//! changing anything, explain a decision, and find decisions in the audit log with their
//! policy version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::BIN;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn interop(rel: &str) -> String {
    root().join("tests/data/authzen/interop").join(rel).to_string_lossy().into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn policy_lifecycle_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    let remit = |args: &[&str]| -> Output {
        Command::new(BIN).args(args).env("REMIT_URL", &s.url).env("REMIT_DATA_DIR", &data).output().unwrap()
    };
    let examples = root().join("examples/authzen-interop");
    let ex = examples.to_string_lossy().into_owned();

    // Offline validation.
    let o = remit(&["policy", "validate", &ex]);
    assert!(o.status.success(), "{}", text(&o));
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("p.cedar"), "permit(principal, action == Action::\"launch\", resource);").unwrap();
    let o = remit(&["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("launch"), "Cedar's diagnostic names the problem: {}", text(&o));

    // Before any push every decision is deny; push the bundle and the users.
    let o = remit(&[
        "policy",
        "test",
        "--server",
        &interop("authzen-todo-backend/test/decisions-authorization-api-1_0-02.json"),
    ]);
    assert_eq!(o.status.code(), Some(1), "with no policy the cases fail: {}", text(&o));
    let o = remit(&["policy", "push", &ex]);
    assert!(o.status.success() && text(&o).contains("version 1"), "{}", text(&o));
    let o = remit(&["entities", "push", examples.join("entities.json").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "authzen-todo-backend/test/decisions-authorization-api-1_0-00.json",
        "authzen-todo-backend/test/decisions-authorization-api-1_0-01.json",
        "authzen-todo-backend/test/decisions-authorization-api-1_0-02.json",
        "authzen-api-gateways/test-harness/test/decisions.json",
    ] {
        let o = remit(&["policy", "test", "--server", &interop(f)]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(text(&o).contains(" 0 failed"), "{}", text(&o));
    }

    // An invalid push is refused with the diagnostics and changes nothing.
    let o = remit(&["policy", "push", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let o = remit(&["--json", "policy", "show"]);
    assert!(text(&o).contains("\"version\": 1"), "{}", text(&o));

    // A new version changes decisions on the running server: viewers may now create todos.
    let v2 = dir.path().join("v2");
    std::fs::create_dir(&v2).unwrap();
    for f in ["todo.cedar", "gateway.cedar", "schema.cedarschema", "mapping.json"] {
        std::fs::copy(examples.join(f), v2.join(f)).unwrap();
    }
    std::fs::write(
        v2.join("viewers.cedar"),
        "@id(\"todo.viewers-create\")\npermit (principal is Human, action == Action::\"can_create_todo\", resource)\n\
         when { principal has roles && principal.roles.contains(\"viewer\") };\n",
    )
    .unwrap();
    let req = dir.path().join("jerry-create.json");
    std::fs::write(
        &req,
        r#"{"subject": {"type": "user", "id": "jerry@the-smiths.com"}, "action": {"name": "can_create_todo"}, "resource": {"type": "todo", "id": "t1"}}"#,
    )
    .unwrap();
    let o = remit(&["--json", "policy", "explain", req.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["outcome"].as_str(), v["policy_version"].as_u64()), (Some("deny"), Some(1)), "{v}");
    let o = remit(&["policy", "push", v2.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("version 2"), "{}", text(&o));
    let o = remit(&["--json", "policy", "explain", req.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["outcome"].as_str(), v["policy_version"].as_u64()), (Some("allow"), Some(2)), "{v}");
    assert!(v["policies"]["todo.viewers-create"].as_str().unwrap().contains("viewer"), "{v}");
    // The 1.0-00 cases expect viewers to be refused: `policy test` now fails, like `opa test`.
    let o = remit(&[
        "policy",
        "test",
        "--server",
        &interop("authzen-todo-backend/test/decisions-authorization-api-1_0-00.json"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Version 3 gates deleting todos by viewers behind a human approval.
    std::fs::write(
        v2.join("approval.cedar"),
        "@id(\"todo.viewer-delete\")\n@approval(\"viewers delete only with a human's approval\")\n\
         permit (principal is Human, action == Action::\"can_delete_todo\", resource is Todo)\n\
         when { principal has roles && principal.roles.contains(\"viewer\") };\n",
    )
    .unwrap();
    assert!(remit(&["policy", "push", v2.to_str().unwrap()]).status.success());
    // Explaining the gated call shows it needs approval and opens nothing.
    std::fs::write(
        &req,
        r#"{"subject": {"type": "user", "id": "jerry@the-smiths.com"}, "action": {"name": "can_delete_todo"}, "resource": {"type": "todo", "id": "t9"}}"#,
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&remit(&["--json", "policy", "explain", req.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(v["outcome"], "approval_required", "{v}");
    assert!(v.get("approval_id").is_none(), "explaining opened an approval: {v}");
    assert!(!text(&remit(&["approval", "list"])).contains("a-"), "explaining opened an approval");
    // The PEP's own evaluation (AuthZEN, as a gateway calls it) opens the request.
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let call = |approval: Option<&str>| -> serde_json::Value {
        let mut body = serde_json::json!({"subject": {"type": "user", "id": "jerry@the-smiths.com"},
            "action": {"name": "can_delete_todo"}, "resource": {"type": "todo", "id": "t9"}});
        if let Some(a) = approval {
            body["context"] = serde_json::json!({"remit_approval": a});
        }
        rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/access/v1/evaluation", s.url))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let v = call(None);
    assert_eq!(v["context"]["approval_required"], true, "{v}");
    let id = v["context"]["approval_id"].as_str().unwrap().to_owned();
    let o = remit(&["approval", "list"]);
    assert!(text(&o).contains(&id) && text(&o).contains("can_delete_todo"), "{}", text(&o));
    let o = remit(&["--operator", "alice@example.com", "approval", "approve", &id, "--reason", "ticket CHG-9"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(call(Some(&id))["decision"], true, "the approved call succeeds once");
    assert_eq!(call(Some(&id))["decision"], false, "and never twice");

    // Decisions are in the audit log with the version that made them, and the chain holds.
    let o = remit(&["--json", "audit", "list", "--action", "access.evaluate", "--limit", "10000"]);
    let t = text(&o);
    assert!(t.contains("\\\"policy_version\\\":2") || t.contains("\"policy_version\":2"), "{t}");
    let o = remit(&["audit", "list", "--action", "policy.push"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = remit(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// `remit policy test` on task cases needs no server: the example's cases pass offline, a
/// wrong expectation fails with the case's name, and Cedar's diagnostics are placed
/// (`file:line:col`) once each; an unknown action lists the schema's actions.
#[test]
fn task_cases_run_offline_and_diagnostics_are_placed() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: an offline run must not need it.
    let remit = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(args)
            .env("REMIT_URL", "http://127.0.0.1:9")
            .env_remove("REMIT_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let cases = root().join("examples/agents/cases.json");
    let o = remit(&["policy", "test", cases.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(" 0 failed"), "{}", text(&o));

    let o = remit(&["--json", "policy", "test", cases.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    assert!(v["passed"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["cases"].as_array().unwrap().iter().any(|c| c["got"] == "approval_required"), "{v}");

    // A wrong expectation fails, naming the case; the policies come from --policies.
    let mut wrong: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cases).unwrap()).unwrap();
    wrong["cases"] = serde_json::json!([{"name": "writes are free", "action": "call_tool",
        "task": {"tools_used": ["jira.read"]}, "resource": {"type": "Tool", "id": "jira.write"}, "expect": "allow"}]);
    let f = dir.path().join("wrong.json");
    std::fs::write(&f, wrong.to_string()).unwrap();
    let policies = root().join("examples/agents/policies");
    let o = remit(&["policy", "test", f.to_str().unwrap(), "--policies", policies.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL writes are free: expected allow, got approval_required"), "{}", text(&o));

    // AuthZEN cases go to a server only when asked.
    let o = remit(&["policy", "test", &interop("authzen-api-gateways/test-harness/test/decisions.json")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--server"), "{}", text(&o));

    // The base schema.
    let o = remit(&["policy", "schema"]);
    assert!(o.status.success() && text(&o).contains("action call_tool appliesTo"), "{}", text(&o));

    // A syntax error on line 2, column 11: placed, and said once.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("p.cedar"), "// two\npermit (pr incipal, action, resource);\n").unwrap();
    let o = remit(&["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("p.cedar:2:"), "{out}");
    assert_eq!(out.matches("p.cedar:").count(), 1, "{out}");

    // An unknown action: placed at its line, with the schema's actions listed.
    std::fs::write(bad.join("p.cedar"), "permit (principal,\n  action == Action::\"call_tol\", resource);\n").unwrap();
    let o = remit(&["policy", "validate", bad.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("p.cedar:2:") && out.contains("call_tool"), "{out}");

    // `@approval` on a forbid does nothing: a warning says so.
    std::fs::write(bad.join("p.cedar"), "@approval(\"x\") forbid (principal, action, resource);\n").unwrap();
    let o = remit(&["policy", "validate", bad.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("warning:") && text(&o).contains("forbid"), "{}", text(&o));
}
