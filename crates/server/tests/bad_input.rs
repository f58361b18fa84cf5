//! Malformed, forged and out-of-bounds requests: each gets a clear error with the right
//! status, and none changes stored state (the audit head and the data stay as they were,
//! except where a refusal is itself worth recording).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

fn b64(v: &[u8]) -> String {
    remit_token::b64e(v)
}

/// Re-encodes `token` with a different header (signature kept).
fn with_header(token: &str, header: Value) -> String {
    let mut p: Vec<String> = token.split('.').map(str::to_owned).collect();
    p[0] = b64(header.to_string().as_bytes());
    p.join(".")
}

#[tokio::test]
async fn forged_tokens_are_inactive_and_cannot_authenticate() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, tok) = s.start_task(&inst).await;
    let kid = jsonwebtoken::decode_header(&tok).unwrap().kid.unwrap();
    let parts: Vec<&str> = tok.split('.').collect();
    let head = s.audit_head().await;

    let alg_none = format!("{}.{}.", b64(json!({"alg": "none", "kid": kid}).to_string().as_bytes()), parts[1]);
    // HS256 keyed with the published public key (the classic algorithm-confusion forgery).
    let (_, jwks) = s.call("GET", "/.well-known/jwks.json", None, None).await;
    let jwk = &jwks["keys"][0];
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let claims: Value = serde_json::from_slice(&remit_token::b64d(parts[1]).unwrap()).unwrap();
    let hs256 =
        jsonwebtoken::encode(&hs_header, &claims, &jsonwebtoken::EncodingKey::from_secret(jwk.to_string().as_bytes()))
            .unwrap();
    let unknown_kid = {
        let other = remit_token::SigningKey::generate().unwrap();
        let c: remit_token::Claims = serde_json::from_value(claims.clone()).unwrap();
        remit_token::jwt::mint(&other, &c)
    };
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&[7u8; 64]));
    let tampered_claims = {
        let mut c = claims.clone();
        c["aud"] = json!(["everything"]);
        format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2])
    };
    let extra_header = with_header(&tok, json!({"alg": "ES256", "kid": kid, "typ": "JWT", "jku": "http://evil"}));
    for (name, forged) in [
        ("alg none", alg_none.as_str()),
        ("hs256 with public key", hs256.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("bad signature", bad_sig.as_str()),
        ("tampered claims", tampered_claims.as_str()),
        ("extra header", extra_header.as_str()),
        ("garbage", "not.a.token"),
        ("empty", ""),
    ] {
        assert_eq!(s.introspect(forged).await, json!({"active": false}), "{name}");
        let (st, e) = s.call("GET", "/v1/tasks", Some(forged), None).await;
        assert_eq!(st, 401, "{name}: {e}");
        assert_eq!(e["error"], "unauthenticated");
        assert!(!e.to_string().contains(parts[2]), "errors never echo token material");
    }
    // A task token is not an API credential, whatever its audience.
    let (st, _) = s.call("GET", "/v1/tasks", Some(&tok), None).await;
    assert_eq!(st, 401);
    assert_eq!(s.audit_head().await, head, "no forged request changed the log");
    assert!(s.active(&tok).await, "the real token is untouched");
    s.stop().await;
}

#[tokio::test]
async fn expired_and_wrong_audience_tokens() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, tok) = s.start_task(&inst).await;
    // Instance token past its lifetime (1h default) plus the clock-skew allowance.
    s.clock.advance_secs(3600 + 31);
    assert_eq!(s.introspect(&tok).await, json!({"active": false}));
    assert_eq!(s.introspect(&inst).await, json!({"active": false}));
    let (st, e) = s.call("GET", "/v1/tasks", Some(&inst), None).await;
    assert_eq!(st, 401);
    assert_eq!(e["message"], "token is expired");
    s.stop().await;

    // Wrong audience: an instance token minted for another audience is refused by the API.
    let s = TestServer::start_with(|c| c.audience = "other-remit".into()).await;
    s.setup().await;
    let (_, jt) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({})).await;
    let (_, i) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    let inst = i["token"].as_str().unwrap().to_owned();
    let c: Value = serde_json::from_slice(&remit_token::b64d(inst.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(c["aud"], json!(["other-remit"]));
    s.stop().await;
    let s2 = TestServer::start().await;
    let (st, e) = s2.call("GET", "/v1/tasks", Some(&inst), None).await;
    assert_eq!(st, 401, "a token from another Remit (unknown key) is refused: {e}");
    s2.stop().await;
}

#[tokio::test]
async fn wrong_audience_is_refused_by_the_api() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    // Same key, but an audience that is not Remit's: mint directly with the server's key.
    let mut c: remit_token::Claims =
        serde_json::from_slice(&remit_token::b64d(inst.split('.').nth(1).unwrap()).unwrap()).unwrap();
    c.aud = vec!["some-tool".into()];
    let other_aud = remit_token::jwt::mint(s.app.keyring().signer(), &c);
    let (st, e) = s.call("GET", "/v1/tasks", Some(&other_aud), None).await;
    assert_eq!(st, 401);
    assert_eq!(e["message"], "token audience does not include `remit`");
    s.stop().await;
}

#[tokio::test]
async fn admin_api_is_never_anonymous() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    for (m, p) in [
        ("GET", "/v1/workflows"),
        ("POST", "/v1/workflows"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/audit/verify"),
        ("POST", "/v1/keys/rotate"),
        ("GET", "/metrics"),
        ("POST", "/oauth2/introspect"),
    ] {
        let (st, _) = s.call(m, p, None, None).await;
        assert_eq!(st, 401, "{m} {p} without credentials");
        let (st, _) = s.call(m, p, Some("remit_admin_wrong"), None).await;
        assert_eq!(st, 401, "{m} {p} with a wrong admin credential");
    }
    // An instance is authenticated but not an admin.
    for (m, p, b) in [
        ("GET", "/v1/workflows", None),
        ("POST", "/v1/workflows/deploy/suspend", Some(json!({"reason": "x"}))),
        ("POST", "/v1/agents/deploy-bot/join-tokens", Some(json!({}))),
        ("GET", "/v1/audit", None),
        ("POST", "/v1/keys/rotate", None),
    ] {
        let (st, e) = s.call(m, p, Some(&inst), b).await;
        assert_eq!(st, 403, "{m} {p} as an instance: {e}");
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let head = s.audit_head().await;
    let start = |body: Value| {
        let inst = inst.clone();
        let s = &s;
        async move { s.call("POST", "/v1/tasks", Some(&inst), Some(body)).await }
    };
    // TTL above the workflow's max.
    let (st, e) = start(json!({"workflow": "deploy", "intent": "x", "audience": ["a"], "ttl_seconds": 601})).await;
    assert_eq!(st, 400);
    assert_eq!(e["message"], "requested ttl of 10m1s exceeds the maximum of 10m");
    // Unknown workflow, malformed names, missing fields, unknown fields, bad enum.
    let (st, _) = start(json!({"workflow": "nope", "intent": "x", "audience": ["a"]})).await;
    assert_eq!(st, 404);
    let (st, e) = start(json!({"workflow": "Bad/Name", "intent": "x", "audience": ["a"]})).await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = start(json!({"workflow": "deploy", "audience": ["a"]})).await;
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("intent"), "{e}");
    let (st, _) = start(json!({"workflow": "deploy", "intent": "x", "audience": ["a"], "admin": true})).await;
    assert_eq!(st, 400);
    let (st, _) = start(json!({"workflow": "deploy", "intent": "x", "audience": []})).await;
    assert_eq!(st, 400);
    let (st, e) = start(json!({"workflow": "deploy", "intent": "x", "audience": ["a"], "sensitivity": "secret"})).await;
    assert_eq!(st, 400, "{e}");
    // Above the workflow's data ceiling: denied (and the refusal is audited).
    let (st, e) =
        start(json!({"workflow": "deploy", "intent": "x", "audience": ["a"], "sensitivity": "restricted"})).await;
    assert_eq!(st, 403, "{e}");
    let denied_head = s.audit_head().await;
    assert_eq!(denied_head, head + 1, "the denied attempt is recorded");
    let (_, recs) = s.admin_get(&format!("/v1/audit?after={head}")).await;
    assert_eq!(recs[0]["outcome"], "denied");
    // An instance cannot start tasks as another agent.
    let (st, _) = start(json!({"workflow": "deploy", "agent": "other", "intent": "x", "audience": ["a"]})).await;
    assert_eq!(st, 403);
    // Not JSON at all.
    let r = s
        .http
        .post(format!("{}/v1/tasks", s.url))
        .bearer_auth(&inst)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Oversized body.
    let huge = "x".repeat(100 * 1024);
    let (st, e) = start(json!({"workflow": "deploy", "intent": huge, "audience": ["a"]})).await;
    assert_eq!(st, 413, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("too large")), "a JSON error body: {e}");
    // Unknown ids.
    let (st, _) = s.admin_get("/v1/tasks/t-00000000000000000000000000000000").await;
    assert_eq!(st, 404);
    let (st, _) = s.admin_get("/v1/tasks/not-a-task-id").await;
    assert_eq!(st, 400);
    let (st, _) = s.admin_get("/v1/workflows/nope").await;
    assert_eq!(st, 404);
    let (st, _) = s.admin_post("/v1/agents/nope/disable", json!({"reason": "r"})).await;
    assert_eq!(st, 404);
    let (st, e) = s.admin_post("/v1/workflows/deploy/suspend", json!({"reason": ""})).await;
    assert_eq!(st, 400, "a kill needs a reason: {e}");
    let (st, _) = s.admin_post("/v1/workflows", json!({"name": "deploy", "purpose": "p", "owner": "a@b.c"})).await;
    assert_eq!(st, 409);
    let (st, _) = s.admin_post("/v1/workflows", json!({"name": "w2", "purpose": "p", "owner": "not-an-email"})).await;
    assert_eq!(st, 400);
    let (st, _) = s.admin_get("/v1/nowhere").await;
    assert_eq!(st, 404);
    assert_eq!(s.audit_head().await, denied_head, "no bad request changed the log");
    let (_, wfs) = s.admin_get("/v1/workflows").await;
    assert_eq!(wfs.as_array().unwrap().len(), 1);
    assert_eq!(wfs[0]["state"], "active");
    s.stop().await;
}

#[tokio::test]
async fn join_tokens_are_single_use_and_expire() {
    let s = TestServer::start().await;
    s.setup().await;
    let (_, jt) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({"ttl_seconds": 60})).await;
    let token = jt["token"].as_str().unwrap().to_owned();
    let (st, _) = s.call("POST", "/v1/join", None, Some(json!({"join_token": token}))).await;
    assert_eq!(st, 201);
    let (st, e) = s.call("POST", "/v1/join", None, Some(json!({"join_token": token}))).await;
    assert_eq!(st, 401);
    assert_eq!(e["message"], "join token is invalid, expired or already used");
    // Right id, wrong secret: same answer, nothing recorded.
    let head = s.audit_head().await;
    let (_, jt2) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({"ttl_seconds": 60})).await;
    let head2 = s.audit_head().await;
    assert_eq!(head2, head + 1);
    let forged = format!("{}.AAAA", jt2["id"].as_str().unwrap());
    let (st, _) = s.call("POST", "/v1/join", None, Some(json!({"join_token": forged}))).await;
    assert_eq!(st, 401);
    assert_eq!(s.audit_head().await, head2);
    // Expired.
    s.clock.advance_secs(61);
    let (st, _) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt2["token"]}))).await;
    assert_eq!(st, 401);
    // TTL bounds.
    let (st, _) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({"ttl_seconds": 0})).await;
    assert_eq!(st, 400);
    let (st, _) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({"ttl_seconds": 999999999})).await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test]
async fn no_secret_in_the_audit_log_or_errors() {
    let s = TestServer::start().await;
    s.setup().await;
    let (_, jt) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({})).await;
    let join_secret = jt["token"].as_str().unwrap().split_once('.').unwrap().1.to_owned();
    let (_, i) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    let inst = i["token"].as_str().unwrap().to_owned();
    let (_, tok) = s.start_task(&inst).await;
    let r = s.http.get(format!("{}/v1/audit/export?limit=0", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    let log = r.text().await.unwrap();
    assert!(log.lines().count() >= 6);
    for secret in
        [s.admin.as_str(), join_secret.as_str(), tok.split('.').nth(2).unwrap(), inst.split('.').nth(2).unwrap()]
    {
        assert!(!log.contains(secret), "audit log must not contain credential material");
    }
    s.stop().await;
}
