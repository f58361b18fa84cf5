//! Approval gates through the real server: a permit annotated `@approval` turns an allow into
//! "approval required"; the request is bound to the exact call; a named human approves or
//! denies it; the retry that presents it succeeds exactly once; a changed argument, a second
//! use, a denied or an expired approval all deny; every step is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::TestServer;
use serde_json::{Value, json};

async fn server() -> TestServer {
    let s = TestServer::start().await;
    let mut bundle =
        common::bundle_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/authzen-interop"));
    bundle.policies.push(remit_policy::PolicyFile {
        name: "approval.cedar".into(),
        source: r#"@id("todo.viewer-delete-with-approval")
@approval("a viewer deleting a todo needs a human's approval")
permit (principal is Human, action == Action::"can_delete_todo", resource is Todo)
when { principal has roles && principal.roles.contains("viewer") };"#
            .into(),
    });
    let (st, v) =
        s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(serde_json::to_value(&bundle).unwrap())).await;
    assert_eq!(st, 201, "{v}");
    let ents: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/authzen-interop/entities.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(s.admin_post("/v1/entities", ents).await.0, 200);
    s
}

fn delete(todo: &str, approval: Option<&str>) -> Value {
    let mut ctx = json!({"ticket": "CHG-7"});
    if let Some(a) = approval {
        ctx["remit_approval"] = json!(a);
    }
    json!({"subject": {"type": "user", "id": "jerry@the-smiths.com"}, "action": {"name": "can_delete_todo"},
           "resource": {"type": "todo", "id": todo, "properties": {"ownerID": "rick@the-citadel.com"}}, "context": ctx})
}

async fn evaluate(s: &TestServer, body: Value) -> Value {
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Approves or denies as a named human (the admin credential plus x-remit-operator).
async fn decide(s: &TestServer, id: &str, verb: &str, operator: Option<&str>) -> (u16, Value) {
    let mut r = s
        .http
        .post(format!("{}/v1/approvals/{id}/{verb}", s.url))
        .bearer_auth(&s.admin)
        .json(&json!({"reason": "checked CHG-7"}));
    if let Some(o) = operator {
        r = r.header("x-remit-operator", o);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_succeeds_exactly_once() {
    let s = server().await;
    // The sensitive call waits for a human.
    let v = evaluate(&s, delete("t1", None)).await;
    assert_eq!(v["decision"], false);
    assert_eq!(v["context"]["approval_required"], true, "{v}");
    let id = v["context"]["approval_id"].as_str().unwrap().to_owned();
    // Retrying before anyone approved is still a deny, which says the request is pending.
    let v = evaluate(&s, delete("t1", Some(&id))).await;
    assert_eq!((v["decision"].clone(), v["context"]["approval_pending"].clone()), (json!(false), json!(true)), "{v}");
    assert_eq!(v["context"]["approval_id"], id.as_str(), "{v}");
    // The approver sees exactly what is asked.
    let (_, list) = s.admin_get("/v1/approvals?state=pending").await;
    let pending = &list["approvals"][0];
    assert_eq!(pending["id"], id.as_str());
    assert_eq!(pending["request"]["resource"]["id"], "t1");
    assert_eq!(pending["request"]["context"]["ticket"], "CHG-7");
    // An approval must name a human.
    assert_eq!(decide(&s, &id, "approve", None).await.0, 403);
    assert_eq!(decide(&s, &id, "approve", Some("alice@example.com")).await.0, 200);
    // A changed argument does not match (and does not use up the approval) ...
    assert_eq!(evaluate(&s, delete("t2", Some(&id))).await, json!({"decision": false}));
    // ... the exact call succeeds once ...
    assert_eq!(evaluate(&s, delete("t1", Some(&id))).await, json!({"decision": true}));
    // ... and never again.
    assert_eq!(evaluate(&s, delete("t1", Some(&id))).await, json!({"decision": false}));
    let (_, a) = s.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!((a["state"].as_str(), a["decided_by"].as_str()), (Some("used"), Some("break-glass:alice@example.com")));

    // A denied approval denies.
    let v = evaluate(&s, delete("t3", None)).await;
    let denied = v["context"]["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&s, &denied, "deny", Some("alice@example.com")).await.0, 200);
    assert_eq!(decide(&s, &denied, "approve", Some("bob@example.com")).await.0, 409, "decided once");
    assert_eq!(evaluate(&s, delete("t3", Some(&denied))).await, json!({"decision": false}));

    // An expired request can be neither approved nor used.
    let v = evaluate(&s, delete("t4", None)).await;
    let late = v["context"]["approval_id"].as_str().unwrap().to_owned();
    s.clock.advance_secs(16 * 60);
    assert_eq!(decide(&s, &late, "approve", Some("alice@example.com")).await.0, 409);
    assert_eq!(evaluate(&s, delete("t4", Some(&late))).await, json!({"decision": false}));

    // A plain permit that also matches needs no approval (rick is an admin).
    let mut rick = delete("t5", None);
    rick["subject"]["id"] = json!("rick@the-citadel.com");
    assert_eq!(evaluate(&s, rick).await, json!({"decision": true}));

    // Every step is in the audit log, and the chain verifies.
    for action in ["approval.request", "approval.approve", "approval.deny", "approval.use"] {
        let (_, recs) = s.admin_get(&format!("/v1/audit?action={action}&limit=100")).await;
        assert!(!recs.as_array().map(Vec::is_empty).unwrap_or(true), "{action}: {recs}");
    }
    let (_, recs) = s.admin_get("/v1/audit?action=approval.approve&limit=100").await;
    assert!(recs.as_array().unwrap().iter().all(|r| r["actor"] == "break-glass:alice@example.com"), "{recs}");
    let (_, v) = s.admin_post("/v1/audit/verify", json!({})).await;
    assert_eq!(v["ok"], true, "{v}");
    s.stop().await;
}

/// Explaining changes nothing: no approval is opened (or used), and the only record written
/// is the explanation's own.
#[tokio::test]
async fn explaining_a_decision_changes_nothing() {
    let s = server().await;
    let head = s.audit_head().await;
    let (st, v) = s.admin_post("/v1/decisions/explain", delete("t1", None)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"], "approval_required", "{v}");
    assert!(v["policies"]["todo.viewer-delete-with-approval"].is_string(), "{v}");
    let (_, list) = s.admin_get("/v1/approvals?state=pending").await;
    assert_eq!(list["approvals"], json!([]), "explaining opened an approval: {list}");
    assert_eq!(s.audit_head().await, head + 1, "one record, the explanation's own");
    let (_, recs) = s.admin_get(&format!("/v1/audit?after={head}")).await;
    assert_eq!(recs[0]["action"], "access.explain", "{recs}");
    // A presented approval is not used by an explanation either.
    let opened = evaluate(&s, delete("t1", None)).await;
    let id = opened["context"]["approval_id"].as_str().unwrap().to_owned();
    let r = s
        .http
        .post(format!("{}/v1/approvals/{id}/approve", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", "alice@example.com")
        .json(&json!({"reason": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = s.admin_post("/v1/decisions/explain", delete("t1", Some(&id))).await;
    assert_eq!(v["outcome"], "approval_required", "{v}");
    assert_eq!(evaluate(&s, delete("t1", Some(&id))).await["decision"], true, "the approval is still usable once");
    s.stop().await;
}
