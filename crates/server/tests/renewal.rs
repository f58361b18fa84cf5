//! Task renewal over real sockets with the injected clock: a live task is extended (a fresh
//! token; the old one keeps its own expiry), within its workflow's TTL and its lifetime; a policy
//! that forbids `renew` stops the next renewal; an ended task is not renewed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_task_is_renewed_within_its_limits_and_a_policy_change_stops_the_next_renewal() {
    let s = TestServer::start_with(|c| c.limits.max_task_lifetime = Duration::from_secs(1_000)).await;
    s.setup().await; // workflow `deploy`: tasks of at most 600 s
    let inst = s.join().await;
    let (task, token) = start(&s, &inst).await; // 300 s
    s.clock.advance_secs(200);
    // The task renews itself: 600 s from now (the workflow's TTL).
    let (st, r) = s.call("POST", &format!("/v1/tasks/{task}/renew"), Some(&token), Some(json!({}))).await;
    assert_eq!(st, 200, "{r}");
    let renewed = r["token"].as_str().unwrap().to_owned();
    let (_, t) = s.admin_get(&format!("/v1/tasks/{task}")).await;
    assert_eq!(t["expires_at"], r["expires_at"]);
    // Past the first expiry: the old token is expired, the task and its new token live.
    s.clock.advance_secs(150);
    assert!(!s.active(&token).await, "the old token keeps its own expiry");
    assert!(s.active(&renewed).await);
    assert_eq!(s.admin_get(&format!("/v1/tasks/{task}")).await.1["state"], "active");
    // Asking for more than the workflow allows is refused; the lifetime caps the extension.
    let (st, _) =
        s.call("POST", &format!("/v1/tasks/{task}/renew"), Some(&renewed), Some(json!({"ttl_seconds": 601}))).await;
    assert_eq!(st, 400);
    let created = chrono_ms(&t["created_at"]);
    let (st, r) = s.call("POST", &format!("/v1/tasks/{task}/renew"), Some(&renewed), Some(json!({}))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(chrono_ms(&r["expires_at"]), created + 950_000, "600 s from now: {r}");
    s.clock.advance_secs(100);
    let (st, r) = s.call("POST", &format!("/v1/tasks/{task}/renew"), Some(&renewed), Some(json!({}))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(chrono_ms(&r["expires_at"]), created + 1_000_000, "capped at the lifetime: {r}");
    let renewed = r["token"].as_str().unwrap().to_owned();
    let (st, r) = s.call("POST", &format!("/v1/tasks/{task}/renew"), Some(&renewed), Some(json!({}))).await;
    assert_eq!(st, 409, "nothing left to extend: {r}");

    // Another task; the organisation forbids renewals: its next renewal is refused.
    let (task2, token2) = start(&s, &inst).await;
    let bundle = json!({"schema": "action renew appliesTo { principal: [Task], resource: [Resource], context: TaskContext };",
                        "policies": [{"name": "p.cedar", "source": "forbid (principal, action == Action::\"renew\", resource);"}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let (st, r) = s.call("POST", &format!("/v1/tasks/{task2}/renew"), Some(&token2), Some(json!({}))).await;
    assert_eq!(st, 403, "{r}");
    assert!(r["message"].as_str().unwrap().contains("renew"), "{r}");
    // Another instance of the agent may not renew it; an ended task is not renewed.
    let other = s.join().await;
    assert_eq!(s.call("POST", &format!("/v1/tasks/{task2}/renew"), Some(&other), Some(json!({}))).await.0, 404);
    assert_eq!(s.admin_post(&format!("/v1/tasks/{task2}/complete"), json!({})).await.0, 200);
    let (st, _) = s.call("POST", &format!("/v1/tasks/{task2}/renew"), Some(&s.admin.clone()), Some(json!({}))).await;
    assert_eq!(st, 409);
    let (_, audit) = s.admin_get("/v1/audit?action=task.renew").await;
    assert_eq!(audit.as_array().unwrap().len(), 3, "three renewals, no refused one: {audit}");
    s.stop().await;
}

/// A task whose token Remit itself accepts (audience `remit`).
async fn start(s: &TestServer, inst: &str) -> (String, String) {
    let body = json!({"workflow": "deploy", "intent": "deploy", "audience": ["remit"], "ttl_seconds": 300});
    let (st, t) = s.call("POST", "/v1/tasks", Some(inst), Some(body)).await;
    assert_eq!(st, 201, "{t}");
    (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
}

fn chrono_ms(v: &serde_json::Value) -> i64 {
    remit_core::time::UnixMillis::parse_rfc3339(v.as_str().unwrap()).unwrap().0
}
