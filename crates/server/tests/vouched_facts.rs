//! Facts only Remit can vouch for, and the trail decisions leave: letter case does not make
//! a requester someone else; callers cannot supply a task's facts outside `/v1/decisions`;
//! a workflow's tool list is an allow-list no policy widens; every decision about a task names
//! its workflow and agent; entity ids are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

async fn push(s: &TestServer, source: &str, schema: &str) {
    let bundle = json!({"policies": [{"name": "p.cedar", "source": source}], "schema": schema});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
}

async fn as_operator(s: &TestServer, method: &str, path: &str, operator: &str, body: Value) -> (u16, Value) {
    let r = s
        .http
        .request(method.parse().unwrap(), format!("{}{path}", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn letter_case_does_not_make_another_approver() {
    let s = TestServer::start().await;
    push(
        &s,
        r#"@id("gated") @approval("always") permit (principal, action, resource);"#,
        "entity User; entity Doc; action read appliesTo { principal: [User], resource: [Doc] };",
    )
    .await;
    let ev = json!({"subject": {"type": "User", "id": "u1"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d1"}});
    let (st, v) = as_operator(&s, "POST", "/access/v1/evaluation", "mallory@example.com", ev).await;
    assert_eq!(st, 200, "{v}");
    let id = v["context"]["approval_id"].as_str().unwrap().to_owned();
    for me in ["MALLORY@example.com", " Mallory@Example.COM "] {
        let (st, v) =
            as_operator(&s, "POST", &format!("/v1/approvals/{id}/approve"), me, json!({"reason": "mine"})).await;
        assert_eq!(st, 403, "{me} approved their own request: {v}");
    }
    let (st, _) =
        as_operator(&s, "POST", &format!("/v1/approvals/{id}/approve"), "Bob@Example.com", json!({"reason": "ok"}))
            .await;
    assert_eq!(st, 200);
    let (_, a) = s.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(a["decided_by"], "break-glass:bob@example.com", "one normalised form is recorded: {a}");
    s.stop().await;
}

const TASK_POLICY: &str = r#"
@id("deploy.any-tool")
permit (principal is Task, action == Action::"call_tool", resource is Tool)
when { context.workflow == "deploy" };

@id("instance-only")
forbid (principal is Task, action == Action::"call_tool", resource == Tool::"shell")
unless { context has instance };
"#;

#[tokio::test]
async fn callers_cannot_state_facts_remit_vouches_for() {
    let s = TestServer::start().await;
    s.setup().await;
    push(&s, TASK_POLICY, "").await;
    let inst = s.join().await;
    let forged = json!({"subject": {"type": "Task", "id": "t-00000000000000000000000000000001",
                                    "properties": {"intent": "made up"}},
                        "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "git"},
                        "context": {}});
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&inst), Some(forged.clone())).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("subject.properties"), "{v}");
    let mut ctx_forged = forged.clone();
    ctx_forged["subject"]["properties"] = json!({});
    ctx_forged["context"] = json!({"workflow": "deploy", "tools_used": []});
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&inst), Some(ctx_forged.clone())).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("context.workflow"), "{v}");
    let (st, v) = s.call("POST", "/access/v1/search/action", Some(&inst), Some(ctx_forged.clone())).await;
    assert_eq!(st, 400, "{v}");
    let batch = json!({"evaluations": [ctx_forged.clone()]});
    let (st, _) = s.call("POST", "/access/v1/evaluations", Some(&inst), Some(batch)).await;
    assert_eq!(st, 400);
    // The admin credential may state them (to test policies offline), and the made-up
    // workflow then decides, as the admin asked.
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(ctx_forged)).await;
    assert_eq!((st, v["decision"].as_bool()), (200, Some(true)), "{v}");
    // At /v1/decisions Remit computes them; a PEP cannot add one that is absent (`instance`
    // of a task an admin started directly).
    let (st, t) = s
        .admin_post(
            "/v1/tasks",
            json!({"workflow": "deploy", "agent": "deploy-bot", "intent": "x", "audience": ["tools"]}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let body = json!({"token": t["token"], "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "shell"},
                      "context": {"instance": "i-00000000000000000000000000000001", "workflow": "other"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!((st, v["decision"].as_bool()), (200, Some(false)), "a PEP-supplied instance was believed: {v}");
    assert_eq!(v["reasons"], json!(["instance-only"]), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn a_workflows_tools_are_an_allow_list_and_decisions_land_in_its_trail() {
    let s = TestServer::start().await;
    let (st, _) = s
        .admin_post(
            "/v1/workflows",
            json!({"name": "triage", "purpose": "triage tickets", "owner": "alice@example.com",
                   "allowed_tools": ["jira-read"]}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .admin_post("/v1/agents", json!({"name": "triager", "owner": "bob@example.com", "workflows": ["triage"]}))
        .await;
    assert_eq!(st, 201);
    push(&s, r#"@id("any") permit (principal is Task, action == Action::"call_tool", resource);"#, "entity Ticket; ")
        .await;
    let (_, jt) = s.admin_post("/v1/agents/triager/join-tokens", json!({})).await;
    let (_, inst) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    let inst = inst["token"].as_str().unwrap().to_owned();
    let (st, t) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(&inst),
            Some(json!({"workflow": "triage", "intent": "triage JIRA-1", "audience": ["tools"]})),
        )
        .await;
    assert_eq!(st, 201);
    let token = t["token"].as_str().unwrap();
    let task = t["task"]["id"].as_str().unwrap();
    let decide = |resource: Value, ctx: Value| {
        let body = json!({"token": token, "action": {"name": "call_tool"}, "resource": resource, "context": ctx});
        let s = &s;
        async move {
            let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    let v = decide(json!({"type": "Tool", "id": "jira-read"}), json!({})).await;
    assert_eq!(v["decision"], true, "{v}");
    let v = decide(json!({"type": "Tool", "id": "jira-write"}), json!({})).await;
    assert_eq!(v["decision"], false, "a permit-any-tool policy widened the workflow's tools: {v}");
    assert!(v["errors"][0].as_str().unwrap().contains("allowed tools"), "{v}");
    let v = decide(json!({"type": "Ticket", "id": "JIRA-1"}), json!({"tool": "jira-write"})).await;
    assert_eq!(v["decision"], false, "the PEP's `tool` is held to the list too: {v}");
    // A call naming no tool is judged by policy alone.
    let v = decide(json!({"type": "Ticket", "id": "JIRA-1"}), json!({})).await;
    assert_eq!(v["decision"], true, "{v}");
    // Every decision about the task is in the workflow's trail, naming its agent and instance.
    let (_, recs) = s.admin_get("/v1/audit?workflow=triage&action=access.evaluate").await;
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 4, "{recs:?}");
    for r in recs {
        assert_eq!((r["task"].as_str(), r["agent"].as_str()), (Some(task), Some("triager")), "{r}");
        let detail: Value = serde_json::from_str(r["detail"].as_str().unwrap_or("{}")).unwrap_or(r["detail"].clone());
        assert!(detail["instance"].as_str().is_some_and(|i| i.starts_with("i-")), "{r}");
    }
    s.stop().await;
}

#[tokio::test]
async fn entity_ids_are_bounded() {
    let s = TestServer::start().await;
    let long = "x".repeat(2000);
    let ev = json!({"subject": {"type": "User", "id": long}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d"}});
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(ev)).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("subject.id"), "{v}");
    let ents = json!({"entities": [{"uid": {"type": "User", "id": long}, "attrs": {}, "parents": []}]});
    let (st, v) = s.call("POST", "/v1/entities", Some(&s.admin.clone()), Some(ents)).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("uid.id"), "{v}");
    let body = json!({"token": "t", "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": long}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("resource.id"), "{v}");
    s.stop().await;
}

/// A hierarchy deeper than the ancestor cap is a clear error, never a decision over part of
/// it: a `forbid` on a group 70 levels up must not be skipped into an allow.
#[tokio::test]
async fn a_hierarchy_past_the_ancestor_cap_is_an_error() {
    let s = TestServer::start().await;
    push(
        &s,
        r#"@id("all") permit (principal, action, resource);
@id("banned") forbid (principal in Group::"g70", action, resource);"#,
        "entity Group in [Group]; entity User in [Group]; entity Doc; action read appliesTo { principal: [User], resource: [Doc] };",
    )
    .await;
    let mut ents =
        vec![json!({"uid": {"type": "User", "id": "u"}, "attrs": {}, "parents": [{"type": "Group", "id": "g1"}]})];
    for i in 1..=70 {
        let parents = if i < 70 { json!([{"type": "Group", "id": format!("g{}", i + 1)}]) } else { json!([]) };
        ents.push(json!({"uid": {"type": "Group", "id": format!("g{i}")}, "attrs": {}, "parents": parents}));
    }
    let (st, v) = s.admin_post("/v1/entities", json!({"entities": ents})).await;
    assert_eq!(st, 200, "{v}");
    let ev = json!({"subject": {"type": "User", "id": "u"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d"}});
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(ev.clone())).await;
    assert_eq!(st, 400, "a partial hierarchy decided: {v}");
    assert!(v["message"].as_str().unwrap().contains("ancestors"), "{v}");
    // In a batch, that item is a deny carrying the error; the others are decided.
    let ok = json!({"subject": {"type": "User", "id": "someone-else"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d"}});
    let (st, v) =
        s.call("POST", "/access/v1/evaluations", Some(&s.admin.clone()), Some(json!({"evaluations": [ev, ok]}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["evaluations"][0]["decision"], false, "{v}");
    assert_eq!(v["evaluations"][1]["decision"], true, "{v}");
    s.stop().await;
}
