//! A Shared Signals stream whose receiver never takes its SETs does not grow without bound: past
//! `[governance] max_outbox` it is disabled (audited) and its queue dropped; re-enabled by its
//! receiver, it gets new SETs again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpolled_stream_is_disabled_at_its_outbox_limit() {
    let s = TestServer::start_with(|c| c.governance.max_outbox = 10).await;
    s.setup().await;
    let body = json!({"events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]});
    let (st, stream) = s.call("POST", "/ssf/streams", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 201, "{stream}");
    let sid = stream["stream_id"].as_str().unwrap().to_owned();
    let inst = s.join().await;
    for _ in 0..12 {
        let (task, _) = s.start_task(&inst).await;
        let (st, _) = s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "churn"})).await;
        assert_eq!(st, 200);
    }
    let status = format!("/ssf/status?stream_id={sid}");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = s.admin_get(&status).await;
        if st["status"] == "disabled" {
            assert!(st["reason"].as_str().unwrap().starts_with("outbox full"), "{st}");
            break;
        }
        assert!(Instant::now() < end, "never disabled: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, audit) = s.admin_get("/v1/audit?action=ssf.stream_update").await;
    assert!(audit.as_array().unwrap().iter().any(|r| r["actor"] == "governance:signals"), "{audit}");
    // Its queue is gone; re-enabled, it hears of the next kill.
    let poll = format!("/ssf/poll/{sid}");
    let (_, p) = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({"returnImmediately": true}))).await;
    assert_eq!(p["sets"], json!({}), "{p}");
    let enable = json!({"stream_id": sid, "status": "enabled"});
    assert_eq!(s.call("POST", "/ssf/status", Some(&s.admin.clone()), Some(enable)).await.0, 200);
    let (task, _) = s.start_task(&inst).await;
    s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "one more"})).await;
    let (st, p) = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({}))).await;
    assert_eq!(st, 200);
    assert_eq!(p["sets"].as_object().unwrap().len(), 1, "{p}");
    s.stop().await;
}
