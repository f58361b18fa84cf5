//! OIDC federation of workloads through the RFC 7523 `jwt-bearer` grant, with a real OpenID
//! provider (npm `oidc-provider`, the shared harness) as the platform issuing the tokens:
//! a token from the configured issuer whose claims match a registration entry becomes an agent
//! instance's identity (usable on Remit's API); a token for another audience, signed by a
//! foreign key, expired, from an unconfigured issuer, or matching no entry, is `invalid_grant`
//! — each refusal audited with its selectors, none telling the caller why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use common::oidc::{AuthRequest, OidcProvider, query};
use remit_server::config::WorkloadIssuerConfig;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const CLIENT: &str = "remit-es256";
const SECRET: &str = "remit-es256-secret-not-for-production";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A token the platform issues for `sub` (the OP's ID token for `client`).
async fn platform_token(op: &OidcProvider, client: &str, secret: &str, sub: &str) -> String {
    let req = AuthRequest::new(client, REDIRECT, "openid email");
    let back = op.browser().authorize(&req.url(op), sub).await;
    let q: Value = query(&back);
    let code = q["code"].as_str().unwrap_or_else(|| panic!("no code: {q}"));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &req.pkce.verifier),
    ];
    let (st, t) = op.token(client, Some(secret), &form).await;
    assert_eq!(st, 200, "{t}");
    t["id_token"].as_str().unwrap().to_owned()
}

async fn grant(s: &TestServer, assertion: &str) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/oauth2/token", s.url))
        .form(&[("grant_type", GRANT), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_token_attests_a_workload_and_anything_else_is_invalid_grant() {
    let op = OidcProvider::start().await;
    let issuer = op.issuer.clone();
    let s = TestServer::start_with(move |c| {
        c.workload_issuers = vec![WorkloadIssuerConfig {
            name: "ci".into(),
            issuer,
            audience: CLIENT.into(),
            algorithms: vec!["ES256".into(), "RS256".into()],
            claims: vec!["email".into()],
        }]
    })
    .await;
    s.setup().await;
    let (st, d) = s.call("GET", "/.well-known/openid-configuration", None, None).await;
    assert_eq!(st, 200);
    assert!(d["grant_types_supported"].as_array().unwrap().contains(&json!(GRANT)), "{d}");
    let entry = json!({"selectors": ["oidc:ci:sub:alice", "oidc:ci:email:alice@example.com"],
                       "agent": "deploy-bot", "workflow": "deploy"});
    let (st, e) = s.admin_post("/v1/entries", entry).await;
    assert_eq!(st, 201, "{e}");

    // Alice's platform token: an instance of deploy-bot, held to its workflow.
    let token = platform_token(&op, CLIENT, SECRET, "alice").await;
    let (st, t) = grant(&s, &token).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["issued_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert!(t["spiffe_id"].as_str().unwrap().starts_with("spiffe://remit.local/agent/deploy-bot/instance/i-"), "{t}");
    let instance = t["access_token"].as_str().unwrap().to_owned();
    let (task, _) = s.start_task(&instance).await;
    assert!(task.starts_with("t-"));
    let i = s.introspect(&instance).await;
    assert_eq!(i["active"], true, "{i}");
    // An assertion is used once.
    let (st, r) = grant(&s, &token).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "a replay: {r}");
    // Renewing never takes the instance past the platform token's expiry.
    let token_exp = jsonwebtoken::dangerous::insecure_decode::<Value>(&token).unwrap().claims["exp"].as_i64().unwrap();
    let (st, renewed) = s.call("POST", "/v1/instances/renew", Some(&instance), None).await;
    assert_eq!(st, 200, "{renewed}");
    let renewed_exp =
        jsonwebtoken::dangerous::insecure_decode::<Value>(renewed["token"].as_str().unwrap()).unwrap().claims["exp"]
            .as_i64()
            .unwrap();
    assert!(renewed_exp <= token_exp, "renewed to {renewed_exp}, past the assertion's {token_exp}");
    assert!(
        i["exp"].as_i64().unwrap()
            <= jsonwebtoken::dangerous::insecure_decode::<Value>(&token).unwrap().claims["exp"].as_i64().unwrap(),
        "the instance never outlives the platform token"
    );

    // Bob is not registered.
    let bob = platform_token(&op, CLIENT, SECRET, "bob").await;
    let (st, r) = grant(&s, &bob).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    // A token for another audience (another client of the same OP).
    let other = platform_token(&op, "remit-rs256", "remit-rs256-secret-not-for-production", "alice").await;
    let (st, r) = grant(&s, &other).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    // Signed by a key that is not the issuer's; expired.
    for spec in [json!({"key": "foreign", "client_id": CLIENT}), json!({"claims": {"exp": 1}, "client_id": CLIENT})] {
        op.tamper(spec.clone()).await;
        let bad = platform_token(&op, CLIENT, SECRET, "alice").await;
        let (st, r) = grant(&s, &bad).await;
        assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{spec}: {r}");
    }
    // A token from an issuer Remit does not trust; garbage; no assertion at all.
    let (st, r) = grant(&s, &instance).await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    let (st, r) = grant(&s, "not-a-jwt").await;
    assert_eq!((st, r["error"].as_str()), (400, Some("invalid_grant")), "{r}");
    let r = s.http.post(format!("{}/oauth2/token", s.url)).form(&[("grant_type", GRANT)]).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Audited: the attestation with its selectors, and every refusal.
    let (_, records) = s.admin_get("/v1/audit?action=workload.attest&limit=100").await;
    let records = records.as_array().unwrap();
    let ok: Vec<&Value> = records.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(ok.len(), 1, "{records:?}");
    assert!(ok[0]["detail"].as_str().unwrap().contains("oidc:ci:sub:alice"));
    let denied = records.iter().filter(|r| r["outcome"] == "denied").count();
    assert_eq!(denied, 7, "{records:?}");
    assert!(
        records.iter().any(|r| r["outcome"] == "denied" && r["detail"].as_str().unwrap().contains("oidc:ci:sub:bob"))
    );
}
