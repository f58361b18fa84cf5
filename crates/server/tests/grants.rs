//! Human → agent grants end to end over real sockets: a signed-in human (a local human with a
//! password, through the real sign-in endpoint) proposes a grant, confirms it in a second
//! request with its code (another human, a wrong code or a GET cannot), the agent's task acts
//! on their behalf (`sub` = the human in every derived credential, `act` = the acting chain, the
//! human in the audit record), and the moment the grant is revoked — or the human deactivated —
//! every task and credential derived from it is inactive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

async fn human(s: &TestServer, email: &str, roles: &[&str]) -> (String, String) {
    let body = json!({"email": email, "roles": roles, "password": "correct horse battery staple"});
    let (st, h) = s.admin_post("/v1/humans", body).await;
    assert_eq!(st, 201, "{h}");
    let creds = json!({"email": email, "password": "correct horse battery staple"});
    let (st, t) = s.call("POST", "/v1/auth/local", None, Some(creds)).await;
    assert_eq!(st, 200, "{t}");
    (h["id"].as_str().unwrap().to_owned(), t["access_token"].as_str().unwrap().to_owned())
}

async fn world(s: &TestServer) -> (String, String, String, String) {
    let (ann_id, ann) = human(s, "ann@example.com", &[]).await;
    let (_, bob) = human(s, "bob@example.com", &["operator"]).await;
    let wf = json!({"name": "ops", "purpose": "triage", "owner": "ann@example.com", "max_delegation_depth": 1});
    assert_eq!(s.admin_post("/v1/workflows", wf).await.0, 201);
    let (st, v) =
        s.admin_post("/v1/agents", json!({"name": "bot", "owner": "ann@example.com", "workflows": ["ops"]})).await;
    assert_eq!(st, 201, "{v}");
    let tool = json!({"name": "tickets", "audience": "https://tickets.example", "scopes": ["read"], "owner": "ann@example.com"});
    assert_eq!(s.admin_post("/v1/tools", tool).await.0, 201);
    let bundle = json!({"schema": "action read appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
                        "policies": [{"name": "p.cedar", "source": "permit (principal, action, resource);"}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let (_, jt) = s.admin_post("/v1/agents/bot/join-tokens", json!({})).await;
    let (_, inst) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    (ann_id, ann, bob, inst["token"].as_str().unwrap().to_owned())
}

async fn propose(s: &TestServer, who: &str) -> (String, String) {
    let body = json!({"agent": "bot", "workflow": "ops", "tools": ["tickets"], "ttl_seconds": 600});
    let (st, v) = s.call("POST", "/v1/grants", Some(who), Some(body)).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["grant"]["state"], "proposed");
    (v["grant"]["id"].as_str().unwrap().to_owned(), v["confirmation_code"].as_str().unwrap().to_owned())
}

async fn task_under(s: &TestServer, inst: &str, grant: &str) -> (u16, Value) {
    let body = json!({"workflow": "ops", "intent": "triage for ann", "audience": ["remit"], "grant": grant, "ttl_seconds": 300});
    s.call("POST", "/v1/tasks", Some(inst), Some(body)).await
}

async fn exchange(s: &TestServer, tok: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", tok),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", "tickets"),
        ("scope", "read"),
    ];
    let resp = s.http.post(format!("{}/oauth2/token", s.url)).form(&form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn claims(tok: &str) -> Value {
    serde_json::from_slice(&remit_token::b64d(tok.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_grant_flows_to_a_task_and_stops_when_revoked() {
    let s = TestServer::start().await;
    let (ann_id, ann, bob, inst) = world(&s).await;
    // Only a signed-in human proposes; not the break-glass credential, not an agent.
    let body = json!({"agent": "bot", "workflow": "ops", "ttl_seconds": 60});
    assert_eq!(s.admin_post("/v1/grants", body.clone()).await.0, 403);
    assert_eq!(s.call("POST", "/v1/grants", Some(&inst), Some(body)).await.0, 403);
    let (gid, code) = propose(&s, &ann).await;
    // Not usable before its human confirms.
    let (st, v) = task_under(&s, &inst, &gid).await;
    assert_eq!(st, 403, "{v}");
    // A pasted link cannot confirm (no GET), another human cannot, a wrong code cannot.
    assert_eq!(s.call("GET", &format!("/v1/grants/{gid}/confirm"), Some(&ann), None).await.0, 405);
    let path = format!("/v1/grants/{gid}/confirm");
    assert_eq!(s.call("POST", &path, Some(&bob), Some(json!({"code": code}))).await.0, 403);
    assert_eq!(s.call("POST", &path, Some(&ann), Some(json!({"code": "remit_gc.wrong"}))).await.0, 403);
    let (st, g) = s.call("POST", &path, Some(&ann), Some(json!({"code": code}))).await;
    assert_eq!((st, g["state"].as_str()), (200, Some("active")), "{g}");
    assert_eq!(s.call("POST", &path, Some(&ann), Some(json!({"code": code}))).await.0, 409, "once");

    // The agent's task acts on ann's behalf, with the grant's authority.
    let (st, t) = task_under(&s, &inst, &gid).await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["task"]["authority"]["tools"], json!(["tickets"]));
    let tok = t["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&tok)["https://remit.dev/claims"]["on_behalf_of"], ann_id.as_str());
    let (st, v) = exchange(&s, &tok).await;
    assert_eq!(st, 200, "{v}");
    let cred = v["access_token"].as_str().unwrap().to_owned();
    let c = claims(&cred);
    assert_eq!(c["sub"], ann_id.as_str(), "{c}");
    assert_eq!(c["act"]["sub"], claims(&tok)["sub"], "{c}");
    assert_eq!(c["https://remit.dev/claims"]["on_behalf_of"], ann_id.as_str());
    let (_, audit) = s.admin_get("/v1/audit?action=task.start").await;
    let rec = audit.as_array().unwrap().iter().find(|r| r["task"] == t["task"]["id"]).unwrap();
    assert!(rec["detail"].as_str().unwrap().contains(&ann_id), "{rec}");
    // Only the agent's instances act under the grant, and never beyond it.
    let body = json!({"workflow": "ops", "agent": "bot", "intent": "x", "audience": ["remit"], "grant": gid});
    let (st, v) = s.call("POST", "/v1/tasks", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 403, "{v}");
    let body = json!({"workflow": "ops", "intent": "x", "audience": ["remit"], "grant": gid, "tools": ["wiki"]});
    let (st, v) = s.call("POST", "/v1/tasks", Some(&inst), Some(body)).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("`tools`"), "{v}");
    // Listing: ann sees her grant; bob (operator) sees all with `all`.
    assert_eq!(s.call("GET", "/v1/grants", Some(&ann), None).await.1.as_array().unwrap().len(), 1);
    assert_eq!(s.call("GET", "/v1/grants?all=true", Some(&bob), None).await.0, 200);

    // Revoked: the task and its credential are inactive at once, and no new task starts.
    let (st, r) =
        s.call("POST", &format!("/v1/grants/{gid}/revoke"), Some(&ann), Some(json!({"reason": "done"}))).await;
    assert_eq!(st, 200, "{r}");
    assert!(!s.active(&tok).await);
    assert!(!s.active(&cred).await);
    assert_eq!(task_under(&s, &inst, &gid).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivating_the_human_ends_everything_derived_from_their_grants() {
    let s = TestServer::start().await;
    let (ann_id, ann, _, inst) = world(&s).await;
    let (gid, code) = propose(&s, &ann).await;
    let path = format!("/v1/grants/{gid}/confirm");
    assert_eq!(s.call("POST", &path, Some(&ann), Some(json!({"code": code}))).await.0, 200);
    let (_, t) = task_under(&s, &inst, &gid).await;
    let tok = t["token"].as_str().unwrap().to_owned();
    let cred = exchange(&s, &tok).await.1["access_token"].as_str().unwrap().to_owned();
    assert!(s.active(&tok).await && s.active(&cred).await);
    let (st, d) = s.admin_post(&format!("/v1/humans/{ann_id}/deactivate"), json!({"reason": "left"})).await;
    assert_eq!(st, 200, "{d}");
    assert!(!s.active(&tok).await, "continuous evaluation: not waiting for the TTL");
    assert!(!s.active(&cred).await);
    let (_, g) = s.admin_get(&format!("/v1/grants/{gid}")).await;
    assert_eq!(g["state"], "revoked");
    // What ann owned is orphaned with her — the tool too — until someone takes it over.
    let (_, o) = s.admin_get("/v1/orphans").await;
    assert_eq!(o["tools"][0]["name"], "tickets", "{o}");
    assert_eq!(o["workflows"][0]["name"], "ops", "{o}");
    let body = json!({"owner": "carol@example.com", "reason": "ann left"});
    let (st, t) = s.call("PUT", "/v1/tools/tickets/owner", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!((st, t["owner"].as_str()), (200, Some("carol@example.com")), "{t}");
    assert!(s.admin_get("/v1/orphans").await.1["tools"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_grants_never_exercised() {
    let s = TestServer::start().await;
    let (_, ann, _, inst) = world(&s).await;
    let body = json!({"agent": "bot", "workflow": "ops", "tools": ["tickets"], "ttl_seconds": 7200});
    let (_, v) = s.call("POST", "/v1/grants", Some(&ann), Some(body)).await;
    let (used, code) =
        (v["grant"]["id"].as_str().unwrap().to_owned(), v["confirmation_code"].as_str().unwrap().to_owned());
    let path = format!("/v1/grants/{used}/confirm");
    assert_eq!(s.call("POST", &path, Some(&ann), Some(json!({"code": code}))).await.0, 200);
    let body = json!({"agent": "bot", "workflow": "ops", "tools": ["tickets"], "ttl_seconds": 7200});
    let (_, v) = s.call("POST", "/v1/grants", Some(&ann), Some(body)).await;
    let (idle, code) =
        (v["grant"]["id"].as_str().unwrap().to_owned(), v["confirmation_code"].as_str().unwrap().to_owned());
    let path = format!("/v1/grants/{idle}/confirm");
    assert_eq!(s.call("POST", &path, Some(&ann), Some(json!({"code": code}))).await.0, 200);
    assert_eq!(task_under(&s, &inst, &used).await.0, 201);
    // Fresh grants are not reported; past an hour, the one nothing ran under is.
    let (_, r) = s.admin_get("/v1/governance/report").await;
    assert!(!r["findings"].to_string().contains("never exercised"), "{}", r["findings"]);
    s.clock.advance_secs(3_700);
    let (_, r) = s.admin_get("/v1/governance/report").await;
    let f = r["findings"].to_string();
    assert!(f.contains("1 grants never exercised") && f.contains(&idle) && !f.contains(&used), "{f}");
    s.stop().await;
}
