//! An agent's task asking about its own actions with its own token: decisions, a pending
//! approval answering `pending`, waiting for the human on the approval's event stream, and
//! everything a task token may not do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("read")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"jira.read")
when { principal in Workflow::"deploy" };

@id("write")
@approval("writing to Jira needs the workflow owner's approval")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"jira.write")
when { principal in Workflow::"deploy" };
"#;

/// A task of `deploy` whose token's audience includes Remit's own (`remit`).
async fn own_task(s: &TestServer, inst: &str) -> (String, String) {
    let body = json!({"workflow": "deploy", "intent": "triage", "audience": ["remit", "jira"], "ttl_seconds": 300});
    let (st, t) = s.call("POST", "/v1/tasks", Some(inst), Some(body)).await;
    assert_eq!(st, 201, "{t}");
    (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
}

/// The task asks about a tool with its own token as the bearer (no `token` in the body).
async fn ask(s: &TestServer, token: &str, tool: &str, approval: Option<&str>) -> (u16, Value) {
    let mut body = json!({"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool},
                          "context": {"ticket": "OPS-7"}});
    if let Some(a) = approval {
        body["approval"] = json!(a);
    }
    s.call("POST", "/v1/decisions", Some(token), Some(body)).await
}

/// Reads an SSE stream's `data:` lines as JSON until it ends.
async fn events(s: &TestServer, path: &str, bearer: &str) -> tokio::task::JoinHandle<Vec<Value>> {
    let resp = s.http.get(format!("{}{path}", s.url)).bearer_auth(bearer).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    tokio::spawn(async move {
        let mut resp = resp;
        let (mut buf, mut out) = (String::new(), Vec::new());
        while let Some(chunk) = resp.chunk().await.unwrap() {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                if let Some(d) = line.trim_end().strip_prefix("data:") {
                    out.push(serde_json::from_str(d.trim()).unwrap());
                }
            }
        }
        out
    })
}

async fn decide_as(s: &TestServer, id: &str, verb: &str, operator: &str, reason: &str) -> u16 {
    let r = s
        .http
        .post(format!("{}/v1/approvals/{id}/{verb}", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", operator)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_asks_waits_for_the_human_and_retries() {
    let s = TestServer::start().await;
    s.setup().await;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": POLICIES}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (task, token) = own_task(&s, &inst).await;

    let (st, v) = ask(&s, &token, "jira.read", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["decision"].as_bool(), v["outcome"].as_str()), (Some(true), Some("allow")), "{v}");
    assert_eq!(v["task"].as_str(), Some(task.as_str()));

    // A write needs a human: the answer names the request, with an RFC 3339 expiry.
    let (_, v) = ask(&s, &token, "jira.write", None).await;
    assert_eq!(v["outcome"], "approval_required", "{v}");
    let id = v["approval"]["id"].as_str().unwrap().to_owned();
    let expires = v["approval"]["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");
    // The task reads its own request.
    let (st, a) = s.call("GET", &format!("/v1/approvals/{id}"), Some(&token), None).await;
    assert_eq!((st, a["state"].as_str()), (200, Some("pending")), "{a}");
    // Retrying before anyone decided answers `pending` (not a deny), and changes nothing.
    let (_, v) = ask(&s, &token, "jira.write", Some(&id)).await;
    assert_eq!((v["decision"].as_bool(), v["outcome"].as_str()), (Some(false), Some("pending")), "{v}");
    assert_eq!(v["approval"]["id"], json!(id));
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");

    // The task waits on the approval's event stream; the owner approves meanwhile.
    let waiting = events(&s, &format!("/v1/approvals/{id}/events"), &token).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(decide_as(&s, &id, "approve", "alice@example.com", "ticket OPS-7 checked").await, 200);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    let states: Vec<&str> = got.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["pending", "approved"], "{got:?}");
    assert_eq!(got[1]["decided_by"], "break-glass:alice@example.com", "a name given with break-glass says so");
    assert_eq!(got[1]["reason"], "ticket OPS-7 checked");

    // The retry with the approval is allowed, once.
    let (_, v) = ask(&s, &token, "jira.write", Some(&id)).await;
    assert_eq!(v["outcome"], "allow", "{v}");
    let (_, v) = ask(&s, &token, "jira.write", Some(&id)).await;
    assert_eq!(v["outcome"], "deny", "{v}");
    // A stream opened on a decided request says so and ends at once.
    let done = events(&s, &format!("/v1/approvals/{id}/events"), &token).await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), done).await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["state"], "used");

    // A denial reaches the waiter with the human's reason.
    let (_, v) = ask(&s, &token, "jira.write", None).await;
    let id2 = v["approval"]["id"].as_str().unwrap().to_owned();
    let waiting = events(&s, &format!("/v1/approvals/{id2}/events"), &token).await;
    assert_eq!(decide_as(&s, &id2, "deny", "alice@example.com", "not during the freeze").await, 200);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(got.last().unwrap()["state"], "denied");
    assert_eq!(got.last().unwrap()["reason"], "not during the freeze");

    // Every answer is audited with its verdict, `pending` included.
    let (_, recs) = s.admin_get(&format!("/v1/audit?action=access.evaluate&task={task}&limit=100")).await;
    let verdicts: Vec<String> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str::<Value>(r["detail"].as_str().unwrap()).unwrap()["decision"].to_string())
        .map(|d| d.trim_matches('"').to_owned())
        .collect();
    assert_eq!(verdicts, ["allow", "approval_required", "pending", "allow", "deny", "approval_required"]);
    s.stop().await;
}

/// A kill reaches the approval requests of the task it ends: the waiter hears `withdrawn`
/// (with the reason) at once, and nobody can approve the request any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_task_withdraws_its_open_requests() {
    let s = TestServer::start().await;
    s.setup().await;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": POLICIES}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (task, token) = own_task(&s, &inst).await;
    let (_, v) = ask(&s, &token, "jira.write", None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_owned();
    let waiting = events(&s, &format!("/v1/approvals/{id}/events"), &token).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (st, _) =
        s.call("POST", &format!("/v1/tasks/{task}/revoke"), Some(&s.admin.clone()), Some(json!({"reason": "x"}))).await;
    assert_eq!(st, 200);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    let states: Vec<&str> = got.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["pending", "withdrawn"], "{got:?}");
    assert_eq!(got[1]["reason"], "task revoked", "{got:?}");
    // Approving it now is refused (409); denying it is still possible.
    assert_eq!(decide_as(&s, &id, "approve", "alice@example.com", "too late").await, 409);
    assert_eq!(decide_as(&s, &id, "deny", "alice@example.com", "task is gone").await, 200);
    // A stream opened afterwards by the admin says where it stands and ends.
    let done = events(&s, &format!("/v1/approvals/{id}/events"), &s.admin.clone()).await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), done).await.unwrap().unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "denied", "{got:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_nobody_decides_expires_for_its_waiter() {
    let s = TestServer::start_with(|c| c.approvals.ttl = std::time::Duration::from_secs(1)).await;
    s.setup().await;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": POLICIES}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (_, token) = own_task(&s, &inst).await;
    let (_, v) = ask(&s, &token, "jira.write", None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_owned();
    let waiting = events(&s, &format!("/v1/approvals/{id}/events"), &token).await;
    s.clock.advance_secs(2);
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    let states: Vec<&str> = got.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["pending", "expired"], "{got:?}");
    // A retry with it now is a deny that says why.
    let (_, v) = ask(&s, &token, "jira.write", Some(&id)).await;
    assert_eq!(v["outcome"], "deny", "{v}");
    assert!(v["errors"].to_string().contains("expired"), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_token_reaches_only_its_own_task() {
    let s = TestServer::start().await;
    s.setup().await;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": POLICIES}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (task, token) = own_task(&s, &inst).await;
    let (other, other_token) = own_task(&s, &inst).await;

    // A token whose audience leaves Remit out is not a credential for Remit's API.
    let (_, tools_only) = s.start_task(&inst).await;
    let (st, v) = ask(&s, &tools_only, "jira.read", None).await;
    assert_eq!(st, 401, "{v}");
    // …though a PEP holding it may still ask on the task's behalf.
    let body =
        json!({"token": tools_only, "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "jira.read"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&inst), Some(body)).await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("allow")), "{v}");

    // Its own task, its state stream, and completing itself: yes.
    let (st, t) = s.call("GET", &format!("/v1/tasks/{task}"), Some(&token), None).await;
    assert_eq!((st, t["id"].as_str()), (200, Some(task.as_str())), "{t}");
    let (st, _) = s.call("GET", &format!("/v1/tasks/{other}"), Some(&token), None).await;
    assert_eq!(st, 404, "another task is not visible");
    // Asking about another task's action, by presenting its token: refused.
    let body =
        json!({"token": other_token, "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "jira.read"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&token), Some(body)).await;
    assert_eq!(st, 403, "{v}");
    // Another task's approval request does not exist for it.
    let (_, v) = ask(&s, &other_token, "jira.write", None).await;
    let theirs = v["approval"]["id"].as_str().unwrap().to_owned();
    for path in [format!("/v1/approvals/{theirs}"), format!("/v1/approvals/{theirs}/events")] {
        let (st, _) = s.call("GET", &path, Some(&token), None).await;
        assert_eq!(st, 404, "{path}");
    }
    // The instance that started the task may read it (a gateway waiting for its agent).
    let (st, _) = s.call("GET", &format!("/v1/approvals/{theirs}"), Some(&inst), None).await;
    assert_eq!(st, 200);

    // Everything else is refused with 403 and a JSON error.
    let ev = json!({"subject": {"type": "User", "id": "u"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d"}});
    for (method, path, body) in [
        ("GET", "/v1/tasks", None),
        // A child task for another agent: the workflow's trust rules name nobody, so no
        // agent-to-agent delegation at all.
        ("POST", "/v1/tasks", Some(json!({"agent": "deploy-bot", "intent": "x", "audience": ["remit"]}))),
        ("GET", "/v1/approvals", None),
        ("GET", "/v1/workflows", None),
        ("GET", "/v1/audit", None),
        ("POST", "/access/v1/evaluation", Some(ev)),
        ("POST", &format!("/v1/approvals/{theirs}/approve"), Some(json!({"reason": "self-service"}))),
        ("POST", &format!("/v1/tasks/{task}/revoke"), Some(json!({"reason": "x"}))),
    ] {
        let (st, v) = s.call(method, path, Some(&token), body).await;
        assert_eq!(st, 403, "{method} {path}: {v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let r = s.http.post(format!("{}/oauth2/introspect", s.url)).bearer_auth(&token).form(&[("token", &other_token)]);
    assert_eq!(r.send().await.unwrap().status(), 403, "a task does not introspect other tokens");

    let (st, v) = s.call("POST", &format!("/v1/tasks/{task}/complete"), Some(&token), Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    // Once it ended, its token opens nothing.
    let (st, _) = ask(&s, &token, "jira.read", None).await;
    assert_eq!(st, 401);
    let (st, _) = s.call("GET", &format!("/v1/tasks/{task}"), Some(&token), None).await;
    assert_eq!(st, 401);
    // A kill switch on the agent ends the other task's access the same way.
    let (st, _) = s.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    assert_eq!(ask(&s, &other_token, "jira.read", None).await.0, 401);
    s.stop().await;
}
