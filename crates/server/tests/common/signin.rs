//! Signing humans in to a real Remit through the real OpenID provider, for tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use remit_server::config::OidcProviderConfig;
use serde_json::{Value, json};

use super::TestServer;
use super::oidc::{Browser, OidcProvider, Pkce, query};

/// The client secret of Remit's own client at the test provider.
pub const SECRET: &str = "remit-server-secret-not-for-production";

/// The default OP config plus Remit's own client (confidential, loopback redirect on any
/// port) and `more_accounts`.
pub async fn provider_with(more_accounts: Vec<Value>) -> OidcProvider {
    let mut cfg = super::oidc::default_config();
    cfg["clients"].as_array_mut().unwrap().push(json!({
        "client_id": "remit-server",
        "client_secret": SECRET,
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1/v1/auth/oidc/callback"],
        "id_token_signed_response_alg": "RS256"
    }));
    cfg["accounts"].as_array_mut().unwrap().extend(more_accounts);
    OidcProvider::start_with(cfg).await
}

pub async fn provider() -> OidcProvider {
    provider_with(vec![]).await
}

/// The provider as Remit's `[[oidc]]` entry `corp` (groups `remit-admins` → admin,
/// `engineering` → operator).
pub fn corp(op_issuer: &str, secret_file: &std::path::Path) -> OidcProviderConfig {
    OidcProviderConfig {
        name: "corp".into(),
        issuer: op_issuer.into(),
        client_id: "remit-server".into(),
        client_secret_file: Some(secret_file.to_path_buf()),
        client_secret_env: None,
        algorithms: vec!["RS256".into()],
        scopes: ["openid", "email", "profile", "groups"].map(String::from).to_vec(),
        allowed_domains: vec![],
        groups_claim: "groups".into(),
        roles: [("remit-admins".to_owned(), vec!["admin".to_owned()]), ("engineering".into(), vec!["operator".into()])]
            .into_iter()
            .collect(),
    }
}

/// Remit configured with the provider as `corp` (tweaked by `f`, and the server by `g`).
pub async fn remit_with(
    op: &OidcProvider,
    f: impl FnOnce(&mut OidcProviderConfig),
    g: impl FnOnce(&mut remit_server::config::Config),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut p = corp(&op.issuer, &secret);
    f(&mut p);
    let s = TestServer::start_with(move |c| {
        c.oidc = vec![p];
        g(c)
    })
    .await;
    (s, dir)
}

pub async fn remit(op: &OidcProvider, f: impl FnOnce(&mut OidcProviderConfig)) -> (TestServer, tempfile::TempDir) {
    remit_with(op, f, |_| {}).await
}

/// A browser sign-in of `sub`: the callback's response.
pub async fn browser_sign_in(s: &TestServer, b: &Browser, sub: &str) -> reqwest::Response {
    let back = b.authorize(&format!("{}/v1/auth/oidc/corp/login", s.url), sub).await;
    assert!(back.as_str().starts_with(&format!("{}/v1/auth/oidc/callback", s.url)), "{back}");
    b.get(back.as_str()).await
}

/// `remit login`'s flow for `sub`: the tokens Remit hands to the holder of the verifier
/// (checking on the way that another verifier cannot redeem the code).
pub async fn cli_sign_in(s: &TestServer, op: &OidcProvider, sub: &str) -> Value {
    let pkce = Pkce::new();
    let login = reqwest::Url::parse_with_params(
        &format!("{}/v1/auth/oidc/corp/login", s.url),
        [
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "cli-state"),
        ],
    )
    .unwrap();
    let b = op.browser();
    let back = b.authorize(login.as_str(), sub).await;
    let r = b.get(back.as_str()).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(to.as_str().starts_with("http://127.0.0.1:9/cb?"), "{to}");
    let q = query(&to);
    assert_eq!(q["state"], "cli-state");
    let code = q["code"].as_str().unwrap();
    let (st, e) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"grant_type": "authorization_code", "code": code, "code_verifier": Pkce::new().verifier})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, t) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"grant_type": "authorization_code", "code": code, "code_verifier": pkce.verifier})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    t
}

/// `sub`'s access token, through `remit login`'s flow.
pub async fn access_token(s: &TestServer, op: &OidcProvider, sub: &str) -> String {
    cli_sign_in(s, op, sub).await["access_token"].as_str().unwrap().to_owned()
}
