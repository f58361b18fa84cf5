//! Supervisor → worker delegation end to end over real sockets: a supervisor's task starts a
//! child for a worker agent with a narrower authority and is refused a wider one (each refusal
//! naming the attribute, and audited); decisions see the real depth, chain and path; the
//! per-hop constraints hold (tools, scopes, resource prefix, max calls); exchanged credentials
//! carry `sub` = the root and the nested `act` chain; and killing the supervisor makes every
//! token in its subtree inactive, on every replica.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const SCHEMA: &str = "action read, write appliesTo { principal: [Task], resource: [Tool], context: TaskContext };";
const POLICIES: &str = r#"
permit (principal, action in [Action::"read", Action::"write"], resource);
permit (principal, action == Action::"call_tool", resource)
when { context.delegation_depth == 0 || (context.delegation_chain.contains("sup") && context.delegation_path like "sup*") };
"#;

/// Workflow `ops` (depth 2, sup → worker, workers may not delegate), agents `sup`, `worker`,
/// `helper`, tools `tickets` and `wiki`; returns a live instance token of `sup`.
async fn world(s: &TestServer) -> String {
    let wf = json!({"name": "ops", "purpose": "triage", "owner": "alice@example.com", "max_delegation_depth": 2,
                    "max_task_ttl_seconds": 900, "ceiling": "confidential",
                    "trust": {"delegations": [{"from": "sup", "to": ["worker"]}]}});
    assert_eq!(s.admin_post("/v1/workflows", wf).await.0, 201);
    for a in ["sup", "worker", "helper"] {
        let (st, v) =
            s.admin_post("/v1/agents", json!({"name": a, "owner": "bob@example.com", "workflows": ["ops"]})).await;
        assert_eq!(st, 201, "{v}");
    }
    for (t, aud) in [("tickets", "https://tickets.example"), ("wiki", "https://wiki.example")] {
        let body = json!({"name": t, "audience": aud, "scopes": ["read", "write"], "owner": "carol@example.com"});
        assert_eq!(s.admin_post("/v1/tools", body).await.0, 201);
    }
    let bundle = json!({"schema": SCHEMA, "policies": [{"name": "p.cedar", "source": POLICIES}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let (_, jt) = s.admin_post("/v1/agents/sup/join-tokens", json!({})).await;
    let (st, inst) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    assert_eq!(st, 201);
    inst["token"].as_str().unwrap().to_owned()
}

async fn start(s: &TestServer, bearer: &str, body: Value) -> (u16, Value) {
    s.call("POST", "/v1/tasks", Some(bearer), Some(body)).await
}

async fn root(s: &TestServer, inst: &str) -> (String, String) {
    let (st, t) = start(
        s,
        inst,
        json!({"workflow": "ops", "intent": "run the queue", "audience": ["remit"], "ttl_seconds": 600}),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
}

fn worker(extra: Value) -> Value {
    let mut b = json!({"agent": "worker", "intent": "triage one ticket", "audience": ["remit"]});
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

async fn decide(s: &TestServer, tok: &str, tool: &str, target: &str) -> Value {
    let body = json!({"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool}, "context": {"target": target}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(tok), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn exchange(s: &TestServer, tok: &str, tool: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", tok),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", tool),
        ("scope", scope),
    ];
    let resp = s.http.post(format!("{}/oauth2/token", s.url)).form(&form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn claims(tok: &str) -> Value {
    serde_json::from_slice(&remit_token::b64d(tok.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_a_narrower_delegation_and_is_refused_a_wider_one() {
    let s = TestServer::start().await;
    let inst = world(&s).await;
    let (root_id, root_tok) = root(&s, &inst).await;
    // The supervisor's own task token starts the child, narrowed.
    let narrow = json!({"tools": ["tickets"], "scopes": ["read", "call_tool"], "resource_prefix": "proj/",
                        "max_calls": 3, "ttl_seconds": 120, "sensitivity": "internal"});
    let (st, c) = start(&s, &root_tok, worker(narrow)).await;
    assert_eq!(st, 201, "{c}");
    let (child_id, child_tok) = (c["task"]["id"].as_str().unwrap().to_owned(), c["token"].as_str().unwrap().to_owned());
    assert_eq!(c["task"]["parent"], root_id.as_str());
    assert_eq!(c["task"]["delegation_depth"], 1);
    assert_eq!(c["task"]["delegation_chain"], json!([root_id]));
    assert_eq!(c["task"]["agent"], "worker");
    assert_eq!(c["task"]["authority"]["tools"], json!(["tickets"]));
    assert_eq!(c["task"]["workflow"], "ops");

    // Wider than the parent: refused, naming the attribute. (Grandchildren: workers may not
    // delegate in this workflow, so first the rule, then each attribute from the root.)
    let (st, v) = start(&s, &child_tok, json!({"agent": "worker", "intent": "x", "audience": ["remit"]})).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("may not delegate further"), "{v}");
    let (st, v) = start(&s, &root_tok, json!({"agent": "helper", "intent": "x", "audience": ["remit"]})).await;
    assert_eq!(st, 403);
    assert!(v["message"].as_str().unwrap().contains("does not let `sup` delegate to `helper`"), "{v}");
    let (st, v) = start(&s, &root_tok, worker(json!({"ttl_seconds": 3600}))).await;
    assert_eq!(st, 403);
    assert!(v["message"].as_str().unwrap().contains("`ttl`"), "{v}");
    let (st, v) = start(&s, &root_tok, worker(json!({"audience": ["remit", "https://payments.example"]}))).await;
    assert_eq!(st, 403);
    assert!(v["message"].as_str().unwrap().contains("`audience`"), "{v}");
    let (st, v) = start(&s, &root_tok, worker(json!({"sensitivity": "restricted"}))).await;
    assert_eq!(st, 403);
    assert!(v["message"].as_str().unwrap().contains("`sensitivity`"), "{v}");
    // Allow workers to delegate; then a grandchild cannot widen the child's tools, scopes,
    // prefix or calls.
    let trust = json!({"trust": {"delegations": [{"from": "sup", "to": ["worker"]}, {"from": "worker", "to": ["helper"]}],
                                 "workers_may_delegate": true}, "reason": "two-level"});
    let (st, v) = s.call("PUT", "/v1/workflows/ops/trust", Some(&s.admin.clone()), Some(trust)).await;
    assert_eq!(st, 200, "{v}");
    for (field, value, attr) in [
        ("tools", json!(["wiki"]), "`tools`"),
        ("scopes", json!(["write"]), "`scopes`"),
        ("resource_prefix", json!("other/"), "`resource_prefix`"),
        ("max_calls", json!(4), "`max_calls`"),
    ] {
        let mut b = json!({"agent": "helper", "intent": "x", "audience": ["remit"]});
        b[field] = value;
        let (st, v) = start(&s, &child_tok, b).await;
        assert_eq!(st, 403, "{field}: {v}");
        assert!(v["message"].as_str().unwrap().contains(attr), "{field}: {v}");
    }
    let (st, g) = start(
        &s,
        &child_tok,
        json!({"agent": "helper", "intent": "look", "audience": ["remit"], "resource_prefix": "proj/a/", "max_calls": 2}),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    assert_eq!(g["task"]["delegation_chain"], json!([root_id, child_id]));
    assert_eq!(g["task"]["delegation_depth"], 2);
    // Depth 3 would exceed the workflow's maximum of 2.
    let gtok = g["token"].as_str().unwrap().to_owned();
    let trust =
        json!({"trust": {"delegations": [{"from": "*", "to": ["*"]}], "workers_may_delegate": true}, "reason": "open"});
    s.call("PUT", "/v1/workflows/ops/trust", Some(&s.admin.clone()), Some(trust)).await;
    let (st, v) = start(&s, &gtok, json!({"agent": "worker", "intent": "x", "audience": ["remit"]})).await;
    assert_eq!(st, 403);
    assert!(v["message"].as_str().unwrap().contains("`max_depth`"), "{v}");
    // Every refusal is audited with its reason.
    let (_, audit) = s.admin_get("/v1/audit?action=task.start").await;
    let denied: Vec<&Value> = audit.as_array().unwrap().iter().filter(|r| r["outcome"] == "denied").collect();
    assert!(denied.len() >= 9, "{denied:?}");
    assert!(denied.iter().any(|r| r["reason"].as_str().unwrap_or_default().contains("`max_calls`")));

    // Exchanged credentials: sub = the root, act = the acting chain, outermost first; scopes
    // only within what was delegated.
    let (st, v) = exchange(&s, &child_tok, "tickets", "read").await;
    assert_eq!(st, 200, "{v}");
    let c = claims(v["access_token"].as_str().unwrap());
    assert!(c["sub"].as_str().unwrap().ends_with(&format!("/task/{root_id}")), "{c}");
    assert!(c["act"]["sub"].as_str().unwrap().ends_with(&format!("/task/{child_id}")), "{c}");
    assert!(c["act"]["act"].is_null());
    let (st, v) = exchange(&s, &child_tok, "tickets", "write").await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    assert_eq!(exchange(&s, &child_tok, "wiki", "read").await.1["error"], "invalid_target");
    // The grandchild's credential nests the whole acting chain.
    let (st, v) = exchange(&s, &gtok, "tickets", "read").await;
    assert_eq!(st, 200, "{v}");
    let gc = claims(v["access_token"].as_str().unwrap());
    assert!(gc["act"]["sub"].as_str().unwrap().ends_with(&format!("/task/{}", g["task"]["id"].as_str().unwrap())));
    assert!(gc["act"]["act"]["sub"].as_str().unwrap().ends_with(&format!("/task/{child_id}")), "{gc}");
    let gcred = v["access_token"].as_str().unwrap().to_owned();

    // Decisions see the real depth, chain and path, and the per-hop constraints. The budget is
    // shared down the subtree: the child's 3 calls were given to it and its grandchild, and the
    // two exchanges above spent two of them.
    let d = decide(&s, &child_tok, "tickets", "proj/7").await;
    assert_eq!(d["decision"], true, "{d}");
    assert_eq!(decide(&s, &child_tok, "wiki", "proj/7").await["decision"], false, "wiki was not delegated");
    assert_eq!(decide(&s, &child_tok, "tickets", "other/1").await["decision"], false, "outside the prefix");
    let d = decide(&s, &child_tok, "tickets", "proj/8").await;
    assert_eq!(d["decision"], false, "a fourth call in the child's subtree, past max_calls=3: {d}");
    let d = decide(&s, &gtok, "tickets", "proj/a/1").await;
    assert_eq!(d["decision"], false, "the grandchild's own budget of 2 is bounded by its parent's: {d}");

    // Killing the supervisor's task ends exactly its subtree: child, grandchild, credentials.
    let (_, other) = root(&s, &inst).await;
    let (st, _) = s.admin_post(&format!("/v1/tasks/{root_id}/revoke"), json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    for t in [&root_tok, &child_tok, &gtok, &gcred] {
        assert!(!s.active(t).await);
    }
    assert!(s.active(&other).await, "a sibling tree lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_supervisor_ends_its_subtree_on_every_replica() {
    let db = remit_store::postgres::testing::TempDb::create().await.unwrap();
    let kek = remit_token::Kek::generate_text();
    let a = TestServer::start_replica(&db.url, &kek, None).await;
    let b = TestServer::start_replica(&db.url, &kek, Some(a.admin.clone())).await;
    let inst = world(&a).await;
    let (root_id, root_tok) = root(&b, &inst).await;
    let (st, c) = start(&a, &root_tok, worker(json!({"tools": ["tickets"]}))).await;
    assert_eq!(st, 201, "{c}");
    let child_tok = c["token"].as_str().unwrap().to_owned();
    let (st, v) = exchange(&b, &child_tok, "tickets", "read").await;
    assert_eq!(st, 200, "{v}");
    let cred = v["access_token"].as_str().unwrap().to_owned();
    for s in [&a, &b] {
        assert!(s.active(&child_tok).await && s.active(&cred).await);
    }
    assert_eq!(a.admin_post(&format!("/v1/tasks/{root_id}/revoke"), json!({"reason": "x"})).await.0, 200);
    for s in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.active(&child_tok).await || s.active(&cred).await {
            assert!(Instant::now() < deadline, "replica {} still honours the subtree", s.url);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
