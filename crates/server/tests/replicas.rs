//! Three replicas on loopback ports sharing one real PostgreSQL database: any replica serves
//! the whole API, a kill through one is honoured by the others, keys rotated on one are used
//! by all, concurrent writes through all three keep one audit chain, and a human's session
//! revoked through one is refused by the others at once, and a Shared Signals verification limit
//! holds across them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use remit_store::postgres::testing::TempDb;
use serde_json::json;

async fn three(db: &TempDb) -> (TestServer, TestServer, TestServer) {
    let kek = remit_token::Kek::generate_text();
    let a = TestServer::start_replica(&db.url, &kek, None).await;
    let b = TestServer::start_replica(&db.url, &kek, Some(a.admin.clone())).await;
    let c = TestServer::start_replica(&db.url, &kek, Some(a.admin.clone())).await;
    (a, b, c)
}

/// Polls until `token` is inactive on `s`; the bound is generous (liveness, not speed:
/// the propagation time is measured by the benchmark, not asserted here).
async fn until_inactive(s: &TestServer, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.active(token).await {
        assert!(Instant::now() < deadline, "replica {} still honours a killed token", s.url);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_through_one_replica_is_honoured_by_the_others() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    a.setup().await;
    // Join through B, start tasks through C and A: every replica serves the whole API.
    let inst = b.join().await;
    let (_, t1) = c.start_task(&inst).await;
    let (_, t2) = a.start_task(&inst).await;
    for s in [&a, &b, &c] {
        // Twice: the second answer comes from each replica's liveness cache.
        assert!(s.active(&t1).await && s.active(&t1).await);
        assert!(s.active(&t2).await);
    }
    let (st, _) = a.admin_post("/v1/workflows/deploy/suspend", json!({"reason": "incident 42"})).await;
    assert_eq!(st, 200);
    // The replica that pulled the switch answers inactive at once ...
    assert!(!a.active(&t1).await && !a.active(&t2).await);
    // ... and the others as soon as the notification lands.
    for s in [&b, &c] {
        until_inactive(s, &t1).await;
        until_inactive(s, &t2).await;
    }
    // New tasks are refused on every replica until resumed through another one.
    let (st, _) = b
        .call("POST", "/v1/tasks", Some(&inst), Some(json!({"workflow": "deploy", "intent": "x", "audience": ["t"]})))
        .await;
    assert_eq!(st, 403, "a task on a suspended workflow is refused");
    let (st, _) = c.admin_post("/v1/workflows/deploy/resume", json!({"reason": "fixed"})).await;
    assert_eq!(st, 200);
    let (_, t3) = b.start_task(&inst).await;
    assert!(a.active(&t3).await);
    // Disabling the agent on C revokes the instance everywhere.
    let (st, _) = c.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "compromised"})).await;
    assert_eq!(st, 200);
    for s in [&a, &b] {
        until_inactive(s, &t3).await;
        until_inactive(s, &inst).await;
    }
    for s in [a, b, c] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotated_on_one_replica_are_used_by_all() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    a.setup().await;
    let inst = a.join().await;
    let (_, old) = a.start_task(&inst).await;
    let (st, r) = b.admin_post("/v1/keys/rotate", json!({})).await;
    assert_eq!(st, 200);
    let new_kid = r["kid"].as_str().unwrap().to_owned();
    // C signs with the new key once it heard of the rotation; A publishes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, t) = c.start_task(&inst).await;
        if jsonwebtoken::decode_header(&t).unwrap().kid.as_deref() == Some(new_kid.as_str()) {
            assert!(a.active(&t).await, "a token signed on C with B's new key verifies on A");
            break;
        }
        assert!(Instant::now() < deadline, "replica C never picked up the rotated key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, jwks) = a.call("GET", "/.well-known/jwks.json", None, None).await;
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == new_kid.as_str()));
    assert!(c.active(&old).await, "tokens signed by the old key stay valid");
    for s in [a, b, c] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_three_replicas_keep_one_audit_chain() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    a.setup().await;
    let inst = a.join().await;
    let servers = std::sync::Arc::new([a, b, c]);
    let mut handles = Vec::new();
    for i in 0..90 {
        let (servers, inst) = (servers.clone(), inst.clone());
        handles.push(tokio::spawn(async move {
            let s = &servers[i % 3];
            let (id, _) = s.start_task(&inst).await;
            if i % 2 == 0 {
                let (st, _) =
                    servers[(i + 1) % 3].call("POST", &format!("/v1/tasks/{id}/complete"), Some(&inst), None).await;
                assert_eq!(st, 200);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for s in servers.iter() {
        let (st, _) = s.admin_post("/v1/audit/checkpoint", json!({})).await;
        assert!(st == 200 || st == 201, "{st}");
    }
    let (st, v) = servers[2].admin_post("/v1/audit/verify", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let Ok(servers) = std::sync::Arc::try_unwrap(servers) else { panic!("servers still shared") };
    for s in servers {
        s.stop().await;
    }
}

/// Reads server-sent events from `resp` until one says the task is not live; returns it.
async fn until_ended(mut resp: reqwest::Response) -> serde_json::Value {
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("the watch went silent")
            .unwrap()
            .expect("the watch ended without saying the task ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data)
                && v["live"] == false
            {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_watch_on_one_replica_hears_a_kill_on_another() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    a.setup().await;
    let inst = a.join().await;
    let (task, _) = a.start_task(&inst).await;
    let (task2, _) = a.start_task(&inst).await;
    // The instance that started the task watches it through B (and an admin through C).
    let watch = |s: &TestServer, bearer: String, id: String| {
        let req = s.http.get(format!("{}/v1/tasks/{id}/events", s.url)).bearer_auth(bearer);
        async move { req.send().await.unwrap() }
    };
    let wb = watch(&b, inst.clone(), task.clone()).await;
    assert_eq!(wb.status(), 200);
    assert_eq!(wb.headers()["content-type"], "text/event-stream");
    let wc = watch(&c, c.admin.clone(), task2.clone()).await;
    // Another instance may not watch it.
    let other = a.join().await;
    assert_eq!(watch(&b, other, task.clone()).await.status(), 404);
    let t0 = Instant::now();
    let (st, _) = a.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    let e = until_ended(wb).await;
    eprintln!("kill on A → watch on B in {:?}", t0.elapsed());
    assert_eq!((e["state"].as_str(), e["reason"].as_str()), (Some("revoked"), Some("task revoked")), "{e}");
    let (st, _) = a.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    // The agent kill revoked the task too; the watch says so.
    let e = until_ended(wc).await;
    assert_eq!(e["state"], "revoked", "{e}");
    // A watch on a task that already ended says so at once.
    let e = until_ended(watch(&c, c.admin.clone(), task.clone()).await).await;
    assert_eq!(e["state"], "revoked");
}

/// Reads server-sent events from `resp` until one is not `pending`; returns it.
async fn until_decided(mut resp: reqwest::Response) -> serde_json::Value {
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("the wait went silent")
            .unwrap()
            .expect("the stream ended before the decision");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data)
                && v["state"] != "pending"
            {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_waiting_on_one_replica_hears_the_approval_given_on_another() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    a.setup().await;
    let gated = r#"@id("gated") @approval("a human looks first")
        permit (principal is Task, action == Action::"call_tool", resource == Tool::"prod");"#;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": gated}]});
    assert_eq!(a.call("PUT", "/v1/policies", Some(&a.admin.clone()), Some(bundle)).await.0, 201);
    let inst = a.join().await;
    let body = json!({"workflow": "deploy", "intent": "ship", "audience": ["remit"], "ttl_seconds": 300});
    let (_, t) = a.call("POST", "/v1/tasks", Some(&inst), Some(body)).await;
    let token = t["token"].as_str().unwrap().to_owned();
    let ask = json!({"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "prod"}});
    // The policy version reaches every replica through the feed; ask until B has it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (st, v) = b.call("POST", "/v1/decisions", Some(&token), Some(ask.clone())).await;
        assert_eq!(st, 200, "{v}");
        if v["outcome"] == "approval_required" {
            break v["approval"]["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "replica B never saw the policy: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let resp = b.http.get(format!("{}/v1/approvals/{id}/events", b.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let t0 = Instant::now();
    let r = c
        .http
        .post(format!("{}/v1/approvals/{id}/approve", c.url))
        .bearer_auth(&c.admin)
        .header("x-remit-operator", "alice@example.com")
        .json(&json!({"reason": "looked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = until_decided(resp).await;
    eprintln!("approval on C → waiter on B in {:?}", t0.elapsed());
    assert_eq!(e["state"], "approved", "{e}");
    // The retry through A uses it.
    let mut retry = ask.clone();
    retry["approval"] = json!(id);
    let (_, v) = a.call("POST", "/v1/decisions", Some(&token), Some(retry)).await;
    assert_eq!(v["outcome"], "allow", "{v}");
    for s in [a, b, c] {
        s.stop().await;
    }
}

/// A human's session is read from the shared store on every use: revoking it (signing out,
/// or an admin deactivating the human) through one replica holds on the others at once, with
/// no wait for a notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_by_every_replica_at_once() {
    let db = TempDb::create().await.unwrap();
    let (a, b, c) = three(&db).await;
    let pw = "correct horse battery staple";
    let new = json!({"email": "dana@example.com", "roles": ["auditor"], "password": pw});
    let (st, dana) = a.admin_post("/v1/humans", new).await;
    assert_eq!(st, 201, "{dana}");
    let sign_in = |s: &TestServer| {
        let url = s.url.clone();
        let http = s.http.clone();
        async move {
            let r =
                http.post(format!("{url}/v1/auth/local")).json(&json!({"email": "dana@example.com", "password": pw}));
            let v: serde_json::Value = r.send().await.unwrap().json().await.unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    // Signed in through B; the session works on all three.
    let t1 = sign_in(&b).await;
    let t2 = sign_in(&c).await;
    for s in [&a, &b, &c] {
        assert_eq!(s.call("GET", "/v1/auth/session", Some(&t1), None).await.0, 200);
    }
    // Signed out through C: refused by A and B at the very next request.
    assert_eq!(c.call("POST", "/v1/auth/logout", Some(&t1), None).await.0, 200);
    for s in [&a, &b] {
        assert_eq!(s.call("GET", "/v1/auth/session", Some(&t1), None).await.0, 401);
    }
    // Deactivated through A: her other session is refused by B and C at once.
    let id = dana["id"].as_str().unwrap();
    let (st, _) = a.admin_post(&format!("/v1/humans/{id}/deactivate"), json!({"reason": "left"})).await;
    assert_eq!(st, 200);
    for s in [&b, &c] {
        assert_eq!(s.call("GET", "/v1/audit?limit=1", Some(&t2), None).await.0, 401);
    }
}

/// A Shared Signals receiver's verification requests are limited per stream across the cluster
/// (`min_verification_interval`), not per replica: asking A and then B at once is a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_rate_limit_holds_across_replicas() {
    let db = TempDb::create().await.unwrap();
    let (a, b, _c) = three(&db).await;
    let body = json!({"events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]});
    let (st, stream) = a.call("POST", "/ssf/streams", Some(&a.admin.clone()), Some(body)).await;
    assert_eq!(st, 201, "{stream}");
    let verify = json!({"stream_id": stream["stream_id"]});
    assert_eq!(a.call("POST", "/ssf/verify", Some(&a.admin.clone()), Some(verify.clone())).await.0, 204);
    assert_eq!(b.call("POST", "/ssf/verify", Some(&b.admin.clone()), Some(verify)).await.0, 429);
}
