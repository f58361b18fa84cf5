//! Remit's admin API decided by Remit's own Cedar policy, for humans signed in through the
//! real OpenID provider: each role does exactly what it allows (admin, operator, auditor,
//! approver, none), an owner pulls their own workflow's kill switch and no other, approvals
//! are decided by a signed-in approver (never by the one who asked, never by a self-declared
//! name), every refusal is audited, an organisation's `forbid` policy narrows a role, and the
//! break-glass credential still works — flagged — whatever the policy says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::TestServer;
use common::signin::{access_token, provider_with, remit_with};
use serde_json::{Value, json};

fn account(sub: &str, groups: &[&str]) -> Value {
    json!({"sub": sub, "email": format!("{sub}@example.com"), "email_verified": true, "name": sub, "groups": groups})
}

fn roles(p: &mut remit_server::config::OidcProviderConfig) {
    p.roles = [("remit-admins", "admin"), ("sre", "operator"), ("security", "auditor"), ("approvers", "approver")]
        .into_iter()
        .map(|(g, r)| (g.to_owned(), vec![r.to_owned()]))
        .collect();
}

async fn call(s: &TestServer, method: &str, path: &str, who: &str, body: Option<Value>) -> u16 {
    s.call(method, path, Some(who), body).await.0
}

/// An approval-gated AuthZEN request (made with the break-glass credential): its id.
async fn approval_request(s: &TestServer) -> String {
    let mut bundle =
        common::bundle_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/authzen-interop"));
    bundle.policies.push(remit_policy::PolicyFile {
        name: "approval.cedar".into(),
        source: r#"@id("delete-with-approval")
@approval("deleting needs a human")
permit (principal is Human, action == Action::"can_delete_todo", resource is Todo);"#
            .into(),
    });
    let (st, v) =
        s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(serde_json::to_value(&bundle).unwrap())).await;
    assert_eq!(st, 201, "{v}");
    let req = json!({"subject": {"type": "user", "id": "jerry@the-smiths.com"}, "action": {"name": "can_delete_todo"},
                     "resource": {"type": "todo", "id": "7"}, "context": {}});
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(req)).await;
    assert_eq!(st, 200, "{v}");
    v["context"]["approval_id"].as_str().unwrap_or_else(|| panic!("no approval: {v}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_exactly_what_it_allows() {
    let op = provider_with(vec![
        account("erin", &["sre"]),
        account("carol", &["security"]),
        account("dave", &["approvers"]),
        account("frank", &[]),
    ])
    .await;
    let (s, _dir) = remit_with(&op, roles, |_| {}).await;
    s.setup().await; // workflow `deploy` owned by alice, agent `deploy-bot` owned by bob
    let alice = access_token(&s, &op, "alice").await; // admin
    let erin = access_token(&s, &op, "erin").await; // operator
    let carol = access_token(&s, &op, "carol").await; // auditor
    let dave = access_token(&s, &op, "dave").await; // approver
    let frank = access_token(&s, &op, "frank").await; // no role
    let bob = access_token(&s, &op, "bob").await; // no role; will own `billing`
    let why = || Some(json!({"reason": "drill"}));

    // admin: everything.
    let billing = json!({"name": "billing", "purpose": "invoices", "owner": "bob@example.com"});
    assert_eq!(call(&s, "POST", "/v1/workflows", &alice, Some(billing)).await, 201);
    assert_eq!(call(&s, "GET", "/v1/humans", &alice, None).await, 200);
    assert_eq!(call(&s, "GET", "/v1/status", &alice, None).await, 200);

    // operator: reads and kill switches, nothing else.
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/suspend", &erin, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/resume", &erin, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/agents/deploy-bot/disable", &erin, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/agents/deploy-bot/enable", &erin, why()).await, 200);
    assert_eq!(call(&s, "GET", "/v1/audit?limit=5", &erin, None).await, 200);
    let other = json!({"name": "w3", "purpose": "p", "owner": "erin@example.com"});
    assert_eq!(call(&s, "POST", "/v1/workflows", &erin, Some(other)).await, 403);
    assert_eq!(call(&s, "POST", "/v1/keys/rotate", &erin, None).await, 403);

    // auditor: reads only.
    assert_eq!(call(&s, "GET", "/v1/audit?limit=5", &carol, None).await, 200);
    assert_eq!(call(&s, "GET", "/v1/workflows", &carol, None).await, 200);
    assert_eq!(call(&s, "GET", "/v1/tasks", &carol, None).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/suspend", &carol, why()).await, 403);
    assert_eq!(call(&s, "GET", "/v1/humans/h-00000000000000000000000000000000", &carol, None).await, 404);

    // no role: nothing of Remit's API (their own session only).
    assert_eq!(call(&s, "GET", "/v1/workflows", &frank, None).await, 403);
    assert_eq!(call(&s, "GET", "/v1/status", &frank, None).await, 403);
    assert_eq!(call(&s, "GET", "/v1/auth/session", &frank, None).await, 200);

    // an owner: their own workflow's switch, and no other's.
    assert_eq!(call(&s, "GET", "/v1/workflows/billing", &bob, None).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/billing/suspend", &bob, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/billing/resume", &bob, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/suspend", &bob, why()).await, 403);
    assert_eq!(call(&s, "GET", "/v1/workflows", &bob, None).await, 403);
    assert_eq!(call(&s, "POST", "/v1/agents/deploy-bot/disable", &bob, why()).await, 200, "he owns the agent");
    assert_eq!(call(&s, "POST", "/v1/agents/deploy-bot/enable", &bob, why()).await, 200);

    // Agents' credentials never reach the admin API.
    let inst = s.join().await;
    assert_eq!(call(&s, "GET", "/v1/humans", &inst, None).await, 403);

    // approver: decides approval requests; the auditor may not; the record names the human.
    let id = approval_request(&s).await;
    let decide = |who: String, verb: &'static str| {
        let s = &s;
        let id = id.clone();
        async move { s.call("POST", &format!("/v1/approvals/{id}/{verb}"), Some(&who), Some(json!({"reason": "ok"}))).await }
    };
    assert_eq!(decide(carol.clone(), "approve").await.0, 403);
    assert_eq!(decide(frank.clone(), "approve").await.0, 403);
    let (st, a) = decide(dave.clone(), "approve").await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["state"], "approved");
    let (_, a) = s.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(a["decided_by"], "dave@example.com", "the signed-in human, not a self-declared name");
    let (_, recs) = s.admin_get("/v1/audit?action=approval.approve").await;
    let actor = recs[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("human:h-") && actor.contains("/session:s-"), "{actor}");

    // Every refusal is audited, naming the human, the session and the action.
    let (_, denied) = s.admin_get("/v1/audit?action=admin.deny&limit=100").await;
    let denied = denied.as_array().unwrap();
    assert_eq!(denied.len(), 9, "one record per refusal above: {denied:?}");
    assert!(denied.iter().all(|r| r["outcome"] == "denied" && r["actor"].as_str().unwrap().starts_with("human:")));
    assert!(denied.iter().any(|r| r["reason"] == "`workflow.suspend` is not allowed on workflow `deploy`"));

    // The break-glass credential still works, and says so.
    let (_, status) = s.admin_get("/v1/status").await;
    assert!(status["break_glass"]["uses_since_start"].as_u64().unwrap() > 0, "{status}");
    let (_, bg) = s.admin_get("/v1/audit?action=breakglass.use").await;
    assert!(!bg.as_array().unwrap().is_empty());
    let (_, recs) = s.admin_get("/v1/audit?action=workflow.create").await;
    assert!(recs.as_array().unwrap().iter().any(|r| r["actor"] == "break-glass"), "{recs}");
    s.stop().await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_policy_narrows_a_role_and_never_locks_out_break_glass() {
    let op = provider_with(vec![account("erin", &["sre"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("org.cedar");
    std::fs::write(
        &org,
        r#"@id("sre-kills")
forbid (principal, action in Remit::Action::"kill_switch", resource)
unless { principal in Remit::Group::"sre" };

@id("nobody-pushes-policy")
forbid (principal, action == Remit::Action::"policy.push", resource);"#,
    )
    .unwrap();
    let path = org.clone();
    let (s, _d) = remit_with(&op, roles, move |c| c.admin_policies = Some(path)).await;
    s.setup().await;
    let alice = access_token(&s, &op, "alice").await; // admin, not in sre
    let erin = access_token(&s, &op, "erin").await; // operator, in sre
    let why = || Some(json!({"reason": "drill"}));
    let (st, e) = s.call("POST", "/v1/workflows/deploy/suspend", Some(&alice), why()).await;
    assert_eq!(st, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("org:sre-kills"), "{e}");
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/suspend", &erin, why()).await, 200);
    assert_eq!(call(&s, "POST", "/v1/workflows/deploy/resume", &erin, why()).await, 200);
    // The rest of the admin role stands.
    let wf = json!({"name": "w2", "purpose": "p", "owner": "alice@example.com"});
    assert_eq!(call(&s, "POST", "/v1/workflows", &alice, Some(wf)).await, 201);
    let (st, _) = s.call("PUT", "/v1/policies", Some(&alice), Some(json!({"policies": []}))).await;
    assert_eq!(st, 403, "nobody pushes policy but break-glass");
    // Break-glass is outside the policy.
    assert_eq!(s.admin_post("/v1/workflows/deploy/suspend", json!({"reason": "incident"})).await.0, 200);
    s.stop().await;

    // An organisation may only forbid: a permit (or any invalid rule) refuses to start.
    std::fs::write(&org, "permit (principal, action, resource);").unwrap();
    let path = org.clone();
    let cfg = remit_server::config::Config {
        data_dir: dir.path().join("data"),
        admin_policies: Some(path),
        ..Default::default()
    };
    let clock = std::sync::Arc::new(remit_core::time::SystemClock);
    match remit_server::bootstrap(cfg, None, clock, true).await {
        Err(e) => assert!(e.to_string().contains("may only forbid"), "{e}"),
        Ok(_) => panic!("a permit among the organisation's admin policies must refuse to start"),
    }
    op.stop().await;
}
