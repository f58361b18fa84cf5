//! Recertification over real sockets with the injected clock: an agent past its period is
//! suspended by the once-per-cluster job through its kill switch (its live task's token goes
//! inactive while it has not expired), a recertified workflow is not, an orphan (owner
//! deactivated) is due at once, owners are told through the signed webhook channel, and only a
//! signed-in human recertifies, with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;
const WEBHOOK_SECRET: &str = "notice-signing-secret-0123456789";

async fn human(s: &TestServer, email: &str, roles: &[&str]) -> (String, String) {
    let body = json!({"email": email, "roles": roles, "password": "correct horse battery staple"});
    let (st, h) = s.admin_post("/v1/humans", body).await;
    assert_eq!(st, 201, "{h}");
    let creds = json!({"email": email, "password": "correct horse battery staple"});
    let (st, t) = s.call("POST", "/v1/auth/local", None, Some(creds)).await;
    assert_eq!(st, 200, "{t}");
    (h["id"].as_str().unwrap().to_owned(), t["access_token"].as_str().unwrap().to_owned())
}

/// A webhook receiver: every signed notice, its signature checked.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/notices",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let sig = headers.get("remit-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
                // The server's clock is moved by days in this test: check the MAC, not the time.
                let t: i64 = sig.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
                remit_token::webhook::verify(WEBHOOK_SECRET.as_bytes(), sig, &body, t, 0).unwrap();
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notices", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

async fn until(what: &str, f: impl AsyncFn() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < end, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_objects_are_suspended_through_their_kill_switch_and_orphans_are_due_at_once() {
    let (hook, notices) = webhook().await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), WEBHOOK_SECRET).unwrap();
    let secret_path = secret.path().to_path_buf();
    let s = TestServer::start_with(move |c| {
        c.governance.recert_period_days = 1;
        c.governance.recert_grace_days = 0;
        c.governance.recert_check = Duration::from_millis(100);
        c.governance.webhook_url = Some(hook);
        c.governance.webhook_secret_file = Some(secret_path);
    })
    .await;
    s.setup().await; // workflow `deploy` (alice), agent `deploy-bot` (bob)
    let (_, erin) = human(&s, "erin@example.com", &["admin"]).await;
    let (carol_id, _) = human(&s, "carol@example.com", &[]).await;

    // Nothing is due yet.
    let (st, due) = s.call("GET", "/v1/recertifications", Some(&erin), None).await;
    assert_eq!(st, 200, "{due}");
    assert!(due.as_array().unwrap().iter().all(|d| d["standing"] == "current"), "{due}");

    // Almost a day later, erin recertifies the workflow (not the agent); the break-glass
    // credential may not, and a reason is required.
    s.clock.advance_secs((DAY_MS - 120_000) / 1000);
    // (Her session of yesterday has ended: she signs in again.)
    let creds = json!({"email": "erin@example.com", "password": "correct horse battery staple"});
    let erin = s.call("POST", "/v1/auth/local", None, Some(creds)).await.1["access_token"].as_str().unwrap().to_owned();
    let r = json!({"kind": "workflow", "id": "deploy", "reason": "still shipping releases"});
    assert_eq!(s.call("POST", "/v1/recertifications", Some(&s.admin), Some(r.clone())).await.0, 403);
    let (st, d) = s
        .call(
            "POST",
            "/v1/recertifications",
            Some(&erin),
            Some(json!({"kind": "workflow", "id": "deploy", "reason": ""})),
        )
        .await;
    assert_eq!(st, 400, "{d}");
    let (st, d) = s.call("POST", "/v1/recertifications", Some(&erin), Some(r)).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["last_certified_by"], "erin@example.com");
    // A live task of the agent, its token active.
    let inst = s.join().await;
    let (task, token) = s.start_task(&inst).await;
    assert!(s.active(&token).await);

    // Three minutes on, the agent is a minute past due (grace 0): the job disables it; the task
    // token (five minutes of life, two left) goes inactive at once.
    s.clock.advance_secs(180);
    until("the agent's suspension", async || !s.active(&token).await).await;
    let (_, agent) = s.admin_get("/v1/agents/deploy-bot").await;
    assert_eq!(agent["state"], "disabled");
    let (_, t) = s.admin_get(&format!("/v1/tasks/{task}")).await;
    assert_eq!(t["state"], "revoked");
    let (_, audit) = s.admin_get("/v1/audit?action=agent.disable").await;
    let rec = audit.as_array().unwrap().iter().find(|r| r["agent"] == "deploy-bot").unwrap();
    assert_eq!(rec["actor"], "governance:recertification");
    assert!(rec["reason"].as_str().unwrap().starts_with("recertification overdue"), "{rec}");
    // The recertified workflow stays active.
    let (_, w) = s.admin_get("/v1/workflows/deploy").await;
    assert_eq!(w["state"], "active");

    // Carol's new workflow is current; she leaves: it is an orphan, due at once, and
    // suspended (grace 0).
    let ops = json!({"name": "ops", "purpose": "triage", "owner": "carol@example.com"});
    assert_eq!(s.admin_post("/v1/workflows", ops).await.0, 201);
    let (_, due) = s.call("GET", "/v1/recertifications", Some(&erin), None).await;
    let ops = due.as_array().unwrap().iter().find(|d| d["kind"] == "workflow" && d["id"] == "ops").unwrap().clone();
    assert_eq!(ops["standing"], "current");
    let (st, _) = s.admin_post(&format!("/v1/humans/{carol_id}/deactivate"), json!({"reason": "left"})).await;
    assert_eq!(st, 200);
    until("the orphan's suspension", async || s.admin_get("/v1/workflows/ops").await.1["state"] == "suspended").await;
    let (_, due) = s.call("GET", "/v1/recertifications", Some(&erin), None).await;
    let ops = due.as_array().unwrap().iter().find(|d| d["kind"] == "workflow" && d["id"] == "ops").unwrap();
    assert_eq!((ops["orphaned"].as_bool(), ops["live"].as_bool()), (Some(true), Some(false)));
    let (_, audit) = s.admin_get("/v1/audit?action=workflow.suspend").await;
    let rec = audit.as_array().unwrap().iter().find(|r| r["workflow"] == "ops").unwrap();
    assert!(rec["reason"].as_str().unwrap().contains("owner was deactivated"), "{rec}");

    // Owners were told, through the signed channel.
    until("the notices", async || notices.lock().unwrap().len() >= 2).await;
    let got = notices.lock().unwrap().clone();
    assert!(
        got.iter().any(|n| n["notice"]["type"] == "recertification" && n["notice"]["id"] == "deploy-bot"),
        "{got:?}"
    );
    assert!(got.iter().all(|n| !n.to_string().contains("remit_")), "no credential in a notice");
    s.stop().await;
}
