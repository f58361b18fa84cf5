//! End-to-end behaviour of the HTTP API against a real server and SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::json;

/// The task token verifies with a standard JWT library against the published JWKS.
#[tokio::test]
async fn task_token_verifies_with_jsonwebtoken_against_jwks() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (task_id, token) = s.start_task(&inst).await;

    let (st, jwks) = s.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(st, 200);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["tools"]);
    v.set_required_spec_claims(&["exp", "sub", "aud"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
    let c = data.claims;
    assert_eq!(c["sub"], format!("spiffe://remit.local/workflow/deploy/task/{task_id}"));
    assert!(c["jti"].as_str().unwrap().len() >= 32);
    assert_eq!(c["https://remit.dev/claims"]["workflow"], "deploy");
    assert_eq!(c["https://remit.dev/claims"]["task"], task_id);
    assert_eq!(c["https://remit.dev/claims"]["agent"], "deploy-bot");
    assert_eq!(c["https://remit.dev/claims"]["intent_hash"], remit_core::rules::intent_hash("deploy v1.2 to prod"));
    // The raw JSON header holds exactly alg, kid, typ.
    let raw = remit_token::b64d(token.split('.').next().unwrap()).unwrap();
    let h: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw).unwrap();
    let mut keys: Vec<_> = h.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["alg", "kid", "typ"]);
    s.stop().await;
}

#[tokio::test]
async fn discovery_documents() {
    let s = TestServer::start().await;
    let (st, oidc) = s.call("GET", "/.well-known/openid-configuration", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(oidc["issuer"], s.url);
    assert_eq!(oidc["jwks_uri"], format!("{}/.well-known/jwks.json", s.url));
    let (st, bundle) = s.call("GET", "/.well-known/spiffe-bundle", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(bundle["keys"][0]["use"], "jwt-svid");
    assert!(bundle["keys"][0]["kid"].is_string());
    assert_eq!(bundle["spiffe_sequence"], 1);
    // The X.509 CA, with its certificate, for X.509-SVID validators.
    let x509: Vec<&serde_json::Value> =
        bundle["keys"].as_array().unwrap().iter().filter(|k| k["use"] == "x509-svid").collect();
    assert_eq!(x509.len(), 1, "{bundle}");
    assert!(x509[0]["x5c"][0].as_str().is_some_and(|c| c.starts_with("MII")), "{bundle}");
    assert!(bundle["spiffe_refresh_hint"].as_u64().unwrap() > 0);
    let (st, api) = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(st, 200);
    assert!(api["paths"]["/v1/tasks"]["post"].is_object());
    assert!(api["paths"]["/oauth2/introspect"]["post"].is_object());
    let (st, _) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    let (st, _) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200);
    // Metrics need the admin credential.
    let (st, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(st, 401);
    let r = s.http.get(format!("{}/metrics", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("remit_http_requests_total"));
    s.stop().await;
}

#[tokio::test]
async fn task_lifecycle_and_introspection() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    assert!(s.active(&inst).await, "instance token is active");
    let (task_id, token) = s.start_task(&inst).await;
    let i = s.introspect(&token).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], format!("spiffe://remit.local/workflow/deploy/task/{task_id}"));
    assert_eq!(i["aud"], json!(["tools"]));
    // The instance sees its task; completing it ends the token at once.
    let (st, t) = s.call("GET", &format!("/v1/tasks/{task_id}"), Some(&inst), None).await;
    assert_eq!(st, 200);
    assert_eq!(t["state"], "active");
    let (st, _) = s.call("POST", &format!("/v1/tasks/{task_id}/complete"), Some(&inst), None).await;
    assert_eq!(st, 200);
    assert_eq!(s.introspect(&token).await, json!({"active": false}));
    let (st, _) = s.call("POST", &format!("/v1/tasks/{task_id}/complete"), Some(&inst), None).await;
    assert_eq!(st, 409, "completing twice is a conflict");
    // Expiry, with the injected clock.
    let (_, token2) = s.start_task(&inst).await;
    assert!(s.active(&token2).await);
    s.clock.advance_secs(301);
    assert!(!s.active(&token2).await, "expired task token is inactive");
    s.stop().await;
}

#[tokio::test]
async fn kill_switches_cascade() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (t1, tok1) = s.start_task(&inst).await;
    let (_t2, tok2) = s.start_task(&inst).await;

    // Revoke one task.
    let (st, r) = s.admin_post(&format!("/v1/tasks/{t1}/revoke"), json!({"reason": "looked wrong"})).await;
    assert_eq!(st, 200);
    assert_eq!(r["tasks_revoked"], json!([t1]));
    assert!(!s.active(&tok1).await);
    assert!(s.active(&tok2).await);

    // Suspend the workflow: every live task dies, new ones are refused.
    let (st, r) = s.admin_post("/v1/workflows/deploy/suspend", json!({"reason": "incident 7"})).await;
    assert_eq!(st, 200);
    assert_eq!(r["tasks_revoked"].as_array().unwrap().len(), 1);
    assert!(!s.active(&tok2).await);
    let (st, e) = s
        .call("POST", "/v1/tasks", Some(&inst), Some(json!({"workflow": "deploy", "intent": "x", "audience": ["a"]})))
        .await;
    assert_eq!(st, 403, "{e}");
    assert_eq!(e["error"], "denied");
    let (st, _) = s.admin_post("/v1/workflows/deploy/resume", json!({"reason": "fixed"})).await;
    assert_eq!(st, 200);
    assert!(!s.active(&tok2).await, "resuming does not resurrect revoked tasks");
    let (_, tok3) = s.start_task(&inst).await;

    // Disable the agent: its instances and their tasks die.
    let (st, r) = s.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "compromised"})).await;
    assert_eq!(st, 200);
    assert_eq!(r["instances_revoked"].as_array().unwrap().len(), 1);
    assert!(!s.active(&tok3).await);
    assert!(!s.active(&inst).await);
    let (st, _) = s
        .call("POST", "/v1/tasks", Some(&inst), Some(json!({"workflow": "deploy", "intent": "x", "audience": ["a"]})))
        .await;
    assert_eq!(st, 401, "a revoked instance cannot authenticate");

    // Every kill is audited with who and why.
    let (_, recs) = s.admin_get("/v1/audit?action=workflow.suspend").await;
    assert_eq!(recs[0]["reason"], "incident 7");
    assert_eq!(recs[0]["actor"], "break-glass");
    let (_, recs) = s.admin_get(&format!("/v1/audit?task={t1}")).await;
    assert!(recs.as_array().unwrap().iter().any(|r| r["action"] == "task.revoke" && r["reason"] == "looked wrong"));
    s.stop().await;
}

#[tokio::test]
async fn rfc7009_revocation_by_holder() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, tok) = s.start_task(&inst).await;
    let r = s.http.post(format!("{}/oauth2/revoke", s.url)).form(&[("token", tok.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!s.active(&tok).await);
    // Garbage gets the same 200 and changes nothing.
    let head = s.audit_head().await;
    let r = s.http.post(format!("{}/oauth2/revoke", s.url)).form(&[("token", "garbage")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.audit_head().await, head);
    // Revoking the instance token kills the instance.
    let (_, tok2) = s.start_task(&inst).await;
    let r = s.http.post(format!("{}/oauth2/revoke", s.url)).form(&[("token", inst.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!s.active(&inst).await);
    assert!(!s.active(&tok2).await);
    s.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, old) = s.start_task(&inst).await;
    let (st, r) = s.admin_post("/v1/keys/rotate", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(r["bundle_sequence"], 2);
    let (_, jwks) = s.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(s.active(&old).await, "a token signed by the old key stays valid");
    assert!(s.active(&inst).await);
    let (_, new) = s.start_task(&inst).await;
    let kid_new = jsonwebtoken::decode_header(&new).unwrap().kid.unwrap();
    assert_eq!(kid_new, r["kid"].as_str().unwrap());
    assert!(s.active(&new).await);
    s.stop().await;
}

#[tokio::test]
async fn instance_renewal() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (st, r) = s.call("POST", "/v1/instances/renew", Some(&inst), None).await;
    assert_eq!(st, 200);
    let renewed = r["token"].as_str().unwrap().to_owned();
    assert!(s.active(&renewed).await);
    let (st, _) = s.call("POST", "/v1/instances/renew", Some(&s.admin.clone()), None).await;
    assert_eq!(st, 403, "admin has no instance identity to renew");
    s.stop().await;
}
