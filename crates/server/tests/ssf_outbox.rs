//! A Shared Signals stream whose receiver never takes its SETs does not grow without bound: past
//! `[governance] max_outbox` it is disabled (audited), its queue dropped and a stream-updated
//! notice sent in its place; re-enabled by its receiver, it gets new SETs again.
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
    // Its queue is gone but for the notice that Remit disabled it (SSF 1.0 §8.1.5: the
    // receiver hears of it before the stream stops).
    let poll = format!("/ssf/poll/{sid}");
    let (_, p) = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({"returnImmediately": true}))).await;
    let sets = p["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1, "{p}");
    let set = sets.values().next().unwrap();
    let claims = remit_token::jwt::unverified_claims(set.as_str().unwrap()).unwrap();
    let ev = &claims["events"]["https://schemas.openid.net/secevent/ssf/event-type/stream-updated"];
    assert_eq!(ev["status"], "disabled", "{claims}");
    assert!(ev["reason"].as_str().unwrap().starts_with("outbox full"), "{claims}");
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": sid}));
    // A verification asked of the disabled stream is refused (it would never be delivered).
    let (st, v) = s.call("POST", "/ssf/verify", Some(&s.admin.clone()), Some(json!({"stream_id": sid}))).await;
    assert_eq!(st, 400, "{v}");
    // Re-enabled by its receiver before it acknowledged the notice: the notice, stale now, is
    // gone, and the stream hears of the next kill.
    let enable = json!({"stream_id": sid, "status": "enabled"});
    assert_eq!(s.call("POST", "/ssf/status", Some(&s.admin.clone()), Some(enable)).await.0, 200);
    let (task, _) = s.start_task(&inst).await;
    s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "one more"})).await;
    let (st, p) = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({}))).await;
    assert_eq!(st, 200);
    let sets = p["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 1, "{p}");
    let claims = remit_token::jwt::unverified_claims(sets.values().next().unwrap().as_str().unwrap()).unwrap();
    assert!(
        claims["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"].is_object(),
        "{claims}"
    );
    s.stop().await;
}

/// The header of a compact JWS.
fn header(jws: &str) -> serde_json::Value {
    use base64::Engine;
    let h = jws.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

/// A SET is signed when it is delivered, not when it is queued: one waiting for its receiver
/// across a key rotation arrives under the key the JWKS publishes now (the old one may have
/// been retired meanwhile), with the same `jti` and claims; a row Remit did not queue is never
/// signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_waiting_across_a_key_rotation_arrives_under_the_current_key() {
    let s = TestServer::start().await;
    s.setup().await;
    let body = json!({"events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]});
    let (st, stream) = s.call("POST", "/ssf/streams", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 201, "{stream}");
    let poll = format!("/ssf/poll/{}", stream["stream_id"].as_str().unwrap());
    let inst = s.join().await;
    let (task, _) = s.start_task(&inst).await;
    assert_eq!(s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "done"})).await.0, 200);
    let first = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({}))).await.1;
    let (jti, set) = first["sets"].as_object().unwrap().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    let old_kid = header(set.as_str().unwrap())["kid"].as_str().unwrap().to_owned();

    let (st, rotated) = s.admin_post("/v1/keys/rotate", json!({})).await;
    assert_eq!(st, 200, "{rotated}");
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    // Not acknowledged: delivered again, now under the new key.
    let again = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({"returnImmediately": true}))).await.1;
    let set2 = again["sets"][&jti].as_str().unwrap_or_else(|| panic!("the same SET again: {again}"));
    let h = header(set2);
    assert_eq!((h["kid"].as_str(), h["typ"].as_str()), (Some(new_kid.as_str()), Some("secevent+jwt")));
    let claims = |jws: &str| remit_token::jwt::unverified_claims(jws).unwrap();
    assert_eq!(claims(set2), claims(set.as_str().unwrap()), "the same event");
    let (_, jwks) = s.call("GET", "/.well-known/jwks.json", None, None).await;
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == new_kid.as_str()), "{jwks}");

    // Rows written into the database by anyone but Remit are never signed: the queued row's
    // claims and MAC under another jti, and claims with a made-up MAC, are dropped unsigned.
    let sid = stream["stream_id"].as_str().unwrap().to_owned();
    let g = s.app.store.governance();
    let queued = g.outbox(&sid, remit_core::time::UnixMillis(i64::MAX), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let (claims, _) = queued[0].set.rsplit_once('\n').expect("claims and their MAC");
    let forged = |jti: &str, set: String| remit_store::OutboxRow { jti: jti.into(), set, ..queued[0].clone() };
    g.enqueue(vec![
        forged("moved", queued[0].set.clone()),
        forged("made-up", format!("{claims}\n{}", "00".repeat(32))),
    ])
    .await
    .unwrap();
    let p = s.call("POST", &poll, Some(&s.admin.clone()), Some(json!({"returnImmediately": true}))).await.1;
    assert_eq!(p["sets"].as_object().unwrap().keys().collect::<Vec<_>>(), [&jti], "{p}");
    assert_eq!(g.outbox_depth(&sid).await.unwrap(), 1, "the forged rows are gone");
    // Nor is a real row moved to another stream (the MAC names its stream).
    let body = json!({"events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]});
    let (_, other) = s.call("POST", "/ssf/streams", Some(&s.admin.clone()), Some(body)).await;
    let other = other["stream_id"].as_str().unwrap().to_owned();
    g.enqueue(vec![remit_store::OutboxRow { stream: other.clone(), ..queued[0].clone() }]).await.unwrap();
    assert_eq!(g.outbox_depth(&other).await.unwrap(), 1);
    let p = s
        .call("POST", &format!("/ssf/poll/{other}"), Some(&s.admin.clone()), Some(json!({"returnImmediately": true})))
        .await
        .1;
    assert_eq!(p["sets"], json!({}), "{p}");
    assert_eq!(g.outbox_depth(&other).await.unwrap(), 0, "dropped unsigned");
    s.stop().await;
}
