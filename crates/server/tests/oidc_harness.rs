//! The test OpenID provider harness (tests/oidc, `common::oidc`) works end to end: a real
//! `oidc-provider` on a loopback port, a full authorization code flow with PKCE (S256), state
//! and nonce through its headless login, back to a redirect URI on a listener this test opens,
//! the code exchanged, the ID token verified against the OP's JWKS (RS256, ES256, PS256,
//! EdDSA), userinfo, refresh, introspection, revocation, RP-initiated logout; and what must
//! fail does (wrong or missing `code_verifier`, no PKCE at all, code replay, aborted login).
//! Providers start fast, run side by side, and leave no process behind.
//!
//! Needs Node.js (>= 20.19) and npm: a missing node is a failure, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::oidc::{AuthRequest, Interact, OidcProvider, default_config, query, verify_id_token};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A loopback "client" endpoint: answers every request with 200 and reports its request
/// target (path and query).
struct Callback {
    port: u16,
    hits: mpsc::UnboundedReceiver<String>,
}

impl Callback {
    async fn open() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, hits) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let _ =
                        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    let _ = tx.send(target);
                });
            }
        });
        Callback { port, hits }
    }

    fn uri(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next request target the listener saw.
    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.hits.recv()).await.unwrap().unwrap()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A config whose clients redirect to `cb` exactly (web clients: the port is part of the
/// registered URI), one per ID token algorithm, plus the default config's public native client.
fn config_for(cb: &Callback) -> Value {
    let mut config = default_config();
    let web = |id: &str, alg: &str, auth: &str| {
        json!({
            "client_id": id,
            "client_secret": format!("{id}-secret"),
            "token_endpoint_auth_method": auth,
            "redirect_uris": [cb.uri("/cb")],
            "post_logout_redirect_uris": [cb.uri("/bye")],
            "id_token_signed_response_alg": alg,
        })
    };
    let mut clients = vec![
        web("rp-rs256", "RS256", "client_secret_basic"),
        web("rp-es256", "ES256", "client_secret_post"),
        web("rp-ps256", "PS256", "client_secret_basic"),
        web("rp-eddsa", "EdDSA", "client_secret_basic"),
    ];
    clients.extend(config["clients"].as_array().unwrap().iter().filter(|c| c["client_id"] == "remit-cli").cloned());
    config["clients"] = json!(clients);
    config
}

/// The token endpoint, authenticating as `client` the way it is registered.
async fn token(op: &OidcProvider, client: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let secret = format!("{client}-secret");
    match client {
        "remit-cli" => op.token(client, None, form).await,
        "rp-es256" => {
            let mut form = form.to_vec();
            form.push(("client_id", client));
            form.push(("client_secret", &secret));
            // client_secret_post: credentials in the body, no Authorization header.
            let resp = op.http.post(op.url("/token")).form(&form).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap())
        }
        _ => op.token(client, Some(&secret), form).await,
    }
}

/// One full login as `sub` through `client`: authorization request (PKCE S256, state, nonce),
/// headless login, redirect back to the callback listener; returns the request and the
/// callback's query.
async fn login(
    op: &OidcProvider,
    cb: &mut Callback,
    client: &str,
    redirect_uri: &str,
    sub: &str,
) -> (AuthRequest, Value) {
    let req = AuthRequest::new(client, redirect_uri, "openid email profile groups").offline();
    let browser = op.browser();
    let back = browser.authorize(&req.url(op), sub).await;
    assert!(back.as_str().starts_with(redirect_uri), "redirected to {back}, not {redirect_uri}");
    // The browser lands on the client: the listener sees code, state and iss.
    let resp = browser.get(back.as_str()).await;
    assert_eq!(resp.status(), 200);
    let target = cb.next().await;
    assert_eq!(format!("http://127.0.0.1:{}{target}", cb.port), back.as_str());
    let q = query(&back);
    assert_eq!(q["state"], req.state, "state comes back unchanged");
    assert_eq!(q["iss"], op.issuer, "RFC 9207 iss in the authorization response");
    assert!(q["code"].as_str().is_some_and(|c| c.len() >= 32), "{q}");
    (req, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_state_and_nonce_for_each_id_token_alg() {
    let mut cb = Callback::open().await;
    let op = OidcProvider::start_with(config_for(&cb)).await;

    // Discovery: every endpoint is plain http on the loopback issuer.
    let d = op.discovery().await;
    assert_eq!(d["issuer"], op.issuer);
    for ep in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ] {
        let url = d[ep].as_str().unwrap_or_else(|| panic!("discovery has no {ep}: {d}"));
        assert!(url.starts_with(&format!("{}/", op.issuer)), "{ep} = {url}");
    }
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
        assert!(d["id_token_signing_alg_values_supported"].as_array().unwrap().contains(&json!(alg)), "{d}");
    }
    for scope in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(d["scopes_supported"].as_array().unwrap().contains(&json!(scope)), "{d}");
    }
    let jwks = op.jwks().await;
    let ktys: Vec<String> = jwks.keys.iter().map(|k| format!("{:?}", k.algorithm)).collect();
    assert!(
        ktys.iter().any(|k| k.starts_with("RSA")) && ktys.iter().any(|k| k.starts_with("EllipticCurve")),
        "{ktys:?}"
    );

    for (client, alg) in [
        ("rp-rs256", Algorithm::RS256),
        ("rp-es256", Algorithm::ES256),
        ("rp-ps256", Algorithm::PS256),
        ("rp-eddsa", Algorithm::EdDSA),
    ] {
        let redirect_uri = cb.uri("/cb");
        let (req, q) = login(&op, &mut cb, client, &redirect_uri, "alice").await;
        let code = q["code"].as_str().unwrap();
        let (s, t) = token(
            &op,
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &req.pkce.verifier),
            ],
        )
        .await;
        assert_eq!(s, 200, "{client}: {t}\n{}", op.logs());
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["refresh_token"].is_string(), "offline_access with prompt=consent gives a refresh token: {t}");
        let id_token = t["id_token"].as_str().unwrap();

        let header = jsonwebtoken::decode_header(id_token).unwrap();
        assert_eq!(header.alg, alg, "{client}");
        let claims =
            verify_id_token(id_token, &jwks, alg, &op.issuer, client).unwrap_or_else(|e| panic!("{client}: {e}"));
        assert_eq!(claims["iss"], op.issuer);
        assert_eq!(claims["aud"], client);
        assert_eq!(claims["nonce"], req.nonce);
        assert_eq!(claims["sub"], "alice");
        let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
        assert!(iat <= now() + 5 && exp > now() && exp - iat == 3600, "iat {iat} exp {exp}");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["name"], "Alice Admin");
        assert_eq!(claims["groups"], json!(["remit-admins", "engineering"]));
        // The same token does not verify as another client's, nor with another alg.
        assert!(verify_id_token(id_token, &jwks, alg, &op.issuer, "someone-else").is_err());
        let other = if alg == Algorithm::ES256 { Algorithm::RS256 } else { Algorithm::ES256 };
        assert!(verify_id_token(id_token, &jwks, other, &op.issuer, client).is_err());

        // Userinfo with the access token.
        let r = op.http.get(op.url("/me")).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let info: Value = r.json().await.unwrap();
        assert_eq!(info["sub"], "alice");
        assert_eq!(info["groups"], json!(["remit-admins", "engineering"]));

        // Refresh: a new ID token for the same subject, signed the same way.
        let rt = t["refresh_token"].as_str().unwrap();
        let (s, r) = token(&op, client, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
        assert_eq!(s, 200, "{client} refresh: {r}");
        assert!(r["access_token"].is_string() && r["access_token"] != t["access_token"]);
        let refreshed = verify_id_token(r["id_token"].as_str().unwrap(), &jwks, alg, &op.issuer, client).unwrap();
        assert_eq!(refreshed["sub"], "alice");
        // (Confidential clients keep their refresh token until 70% of its life has passed.)
        let rt = r["refresh_token"].as_str().unwrap_or(rt).to_owned();

        // The code is single use, and replaying it revokes what it granted (RFC 6749 4.1.2).
        let (s, e) = token(
            &op,
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &req.pkce.verifier),
            ],
        )
        .await;
        assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "code replay: {e}");
        let (s, e) = token(&op, client, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
        assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "refresh after code replay: {e}");
    }
    op.stop().await;
}

/// Logs `sub` in through `client` and exchanges the code; returns the request and the ID token.
async fn id_token_for(op: &OidcProvider, cb: &mut Callback, client: &str) -> (AuthRequest, String) {
    let redirect_uri = cb.uri("/cb");
    let (req, q) = login(op, cb, client, &redirect_uri, "bob").await;
    let (s, t) = token(
        op,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str().unwrap()),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &req.pkce.verifier),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    (req, t["id_token"].as_str().unwrap().to_owned())
}

fn jwt_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&remit_token::b64d(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// The tamper switch makes the OP issue the bad ID tokens an RP must refuse, each exactly as
/// asked and only as often as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_makes_the_op_issue_bad_id_tokens_on_demand() {
    let mut cb = Callback::open().await;
    let op = OidcProvider::start_with(config_for(&cb)).await;
    let jwks = op.jwks().await;
    let rs = Algorithm::RS256;

    // Expired, properly signed by the OP's own key.
    op.tamper(json!({"claims": {"exp": 1_000_000, "iat": 999_000}})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    let err = verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap_err();
    assert!(err.contains("ExpiredSignature"), "{err}");
    assert_eq!(jwt_part(&t, 1)["exp"], 1_000_000);

    // Only once: the next token is fine again.
    let (req, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert_eq!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap()["nonce"], req.nonce);

    // Wrong audience, wrong issuer, wrong nonce, no nonce: signature still valid.
    for (claims, expect) in
        [(json!({"aud": "someone-else"}), "InvalidAudience"), (json!({"iss": "http://127.0.0.1:1"}), "InvalidIssuer")]
    {
        op.tamper(json!({ "claims": claims })).await;
        let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
        let err = verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap_err();
        assert!(err.contains(expect), "{claims}: {err}");
    }
    op.tamper(json!({"claims": {"nonce": "not-yours"}, "times": 2})).await;
    for _ in 0..2 {
        let (req, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
        let c = verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap();
        assert_eq!(c["nonce"], "not-yours");
        assert_ne!(c["nonce"], req.nonce);
    }
    op.tamper(json!({"claims": {"nonce": null}})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap().get("nonce").is_none());

    // A forged signature (a key of the same type, the OP's kid), on an ES256 client.
    op.tamper(json!({"key": "foreign", "client_id": "rp-es256"})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-es256").await;
    let err = verify_id_token(&t, &jwks, Algorithm::ES256, &op.issuer, "rp-es256").unwrap_err();
    assert!(err.contains("InvalidSignature"), "{err}");
    assert!(jwks.find(jwt_part(&t, 0)["kid"].as_str().unwrap()).is_some(), "the kid is the OP's");

    // alg none, unsigned.
    op.tamper(json!({"key": "none"})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert_eq!(jwt_part(&t, 0)["alg"], "none");
    assert!(t.ends_with('.'), "empty signature: {t}");
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").is_err());

    // HS256 keyed with the client secret (alg confusion): valid HMAC, but not what is registered.
    op.tamper(json!({"key": "client_secret"})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert_eq!(jwt_part(&t, 0)["alg"], "HS256");
    let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
    v.set_audience(&["rp-rs256"]);
    let key = jsonwebtoken::DecodingKey::from_secret(b"rp-rs256-secret");
    assert!(jsonwebtoken::decode::<Value>(&t, &key, &v).is_ok());
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").is_err());

    // An unknown kid; and PS256 signed with the OP's RSA key for a client registered for RS256.
    op.tamper(json!({"header": {"kid": "no-such-key"}})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").unwrap_err().contains("not in the JWKS"));
    op.tamper(json!({"header": {"alg": "PS256"}})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert!(verify_id_token(&t, &jwks, Algorithm::PS256, &op.issuer, "rp-rs256").is_ok());
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").is_err());

    // Armed for another client: this one is not touched; cleared: nothing pending.
    op.tamper(json!({"claims": {"exp": 1}, "client_id": "rp-es256"})).await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-rs256").await;
    assert!(verify_id_token(&t, &jwks, rs, &op.issuer, "rp-rs256").is_ok());
    op.clear_tamper().await;
    let (_, t) = id_token_for(&op, &mut cb, "rp-es256").await;
    assert!(verify_id_token(&t, &jwks, Algorithm::ES256, &op.issuer, "rp-es256").is_ok());

    // A bad spec is refused.
    let r = op.http.post(op.url("/_harness/tamper")).json(&json!({"key": "mine"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_enforced_for_every_client() {
    let mut cb = Callback::open().await;
    let op = OidcProvider::start_with(config_for(&cb)).await;
    let redirect_uri = cb.uri("/cb");

    // A wrong code_verifier: invalid_grant.
    let (_, q) = login(&op, &mut cb, "rp-rs256", &redirect_uri, "bob").await;
    let wrong = common::oidc::Pkce::new().verifier;
    let (s, e) = token(
        &op,
        "rp-rs256",
        &[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str().unwrap()),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &wrong),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "wrong verifier: {e}");

    // No code_verifier at all: invalid_grant.
    let (_, q) = login(&op, &mut cb, "rp-es256", &redirect_uri, "bob").await;
    let (s, e) = token(
        &op,
        "rp-es256",
        &[("grant_type", "authorization_code"), ("code", q["code"].as_str().unwrap()), ("redirect_uri", &redirect_uri)],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "no verifier: {e}");

    // No code_challenge, even for a confidential client: the OP refuses the request itself,
    // back to the client with state.
    let req = AuthRequest::new("rp-rs256", &redirect_uri, "openid");
    let url = req.url(&op).replace(&format!("&code_challenge={}", req.pkce.challenge), "");
    assert!(!url.contains("code_challenge="));
    let back = op.browser().authorize(&url, "bob").await;
    let q = query(&back);
    assert_eq!(q["error"], "invalid_request", "{back}");
    assert_eq!(q["state"], req.state);

    // The End-User declines: access_denied, with state.
    let req = AuthRequest::new("rp-rs256", &redirect_uri, "openid email");
    let back = op.browser().try_authorize(&req.url(&op), Interact::Abort).await.unwrap();
    let q = query(&back);
    assert_eq!(q["error"], "access_denied", "{back}");
    assert_eq!(q["state"], req.state);

    // A redirect URI that is not registered: the OP shows an error and never redirects.
    let req = AuthRequest::new("rp-rs256", &cb.uri("/elsewhere"), "openid");
    let err = op.browser().try_authorize(&req.url(&op), Interact::Login("bob")).await.unwrap_err();
    assert!(err.contains("redirect_uri"), "{err}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_native_client_on_any_loopback_port_then_introspect_revoke_logout() {
    // The default config: remit-cli is public and native; its loopback redirect URI matches
    // any port (RFC 8252 7.3), as `remit login` will need.
    let mut cb = Callback::open().await;
    let op = OidcProvider::start().await;
    let redirect_uri = cb.uri("/callback");
    let (req, q) = login(&op, &mut cb, "remit-cli", &redirect_uri, "mallory").await;
    let (s, t) = op
        .token(
            "remit-cli",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", q["code"].as_str().unwrap()),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &req.pkce.verifier),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let jwks = op.jwks().await;
    let id_token = t["id_token"].as_str().unwrap();
    let claims = verify_id_token(id_token, &jwks, Algorithm::RS256, &op.issuer, "remit-cli").unwrap();
    assert_eq!(claims["nonce"], req.nonce);
    assert_eq!(claims["email_verified"], false);

    // Introspection and revocation (by a confidential client of the same OP, and by the owner).
    let at = t["access_token"].as_str().unwrap();
    let (s, i) = op
        .client_post(
            "/token/introspection",
            "remit-rs256",
            Some("remit-rs256-secret-not-for-production"),
            &[("token", at)],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["sub"], "mallory");
    let (s, _) = op.client_post("/token/revocation", "remit-cli", None, &[("token", at)]).await;
    assert_eq!(s, 200);
    let (_, i) = op
        .client_post(
            "/token/introspection",
            "remit-rs256",
            Some("remit-rs256-secret-not-for-production"),
            &[("token", at)],
        )
        .await;
    assert_eq!(i["active"], false, "revoked: {i}");

    // RP-initiated logout back to the registered post-logout URI (any loopback port), with state.
    let browser = op.browser();
    let req = AuthRequest::new("remit-cli", &redirect_uri, "openid");
    let back = browser.authorize(&req.url(&op), "mallory").await;
    assert!(query(&back)["code"].is_string());
    // The browser keeps its OP session: asking again only needs consent (native client), for
    // mallory, not for somebody else.
    let again = AuthRequest::new("remit-cli", &redirect_uri, "openid");
    let back = browser.try_authorize(&again.url(&op), Interact::Login("mallory")).await.unwrap();
    assert_eq!(query(&back)["state"], again.state);
    let err = browser.try_authorize(&again.url(&op), Interact::Login("bob")).await.unwrap_err();
    assert!(err.contains("session_mismatch"), "{err}");
    let post_logout = cb.uri("/logged-out");
    let bye = browser
        .logout(&[("id_token_hint", id_token), ("post_logout_redirect_uri", &post_logout), ("state", "s-123")])
        .await;
    assert!(bye.as_str().starts_with(&post_logout), "{bye}");
    assert_eq!(query(&bye)["state"], "s-123");
    // Signed out: the next authorization asks for a login again, so bob can sign in, this time
    // with an authentication context and methods, which the ID token carries.
    let who = Interact::LoginWith { sub: "bob", acr: Some("urn:remit:test:mfa"), amr: &["pwd", "otp"] };
    let back = browser.try_authorize(&again.url(&op), who).await.unwrap();
    assert!(op.logs().contains("login bob"), "{}", op.logs());
    let (s, t) = op
        .token(
            "remit-cli",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", query(&back)["code"].as_str().unwrap()),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &again.pkce.verifier),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let c = verify_id_token(t["id_token"].as_str().unwrap(), &jwks, Algorithm::RS256, &op.issuer, "remit-cli").unwrap();
    assert_eq!(
        (&c["sub"], &c["acr"], &c["amr"]),
        (&json!("bob"), &json!("urn:remit:test:mfa"), &json!(["pwd", "otp"]))
    );
    op.stop().await;
}

/// Four providers at once: each its own port and keys; stopped or dropped, none is left
/// running. (Start times are printed, not asserted: no wall-clock threshold in a test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_start_side_by_side_and_leave_nothing_behind() {
    let started = Instant::now();
    let ops = futures_util::future::join_all((0..4).map(|_| async {
        let t = Instant::now();
        let op = OidcProvider::start().await;
        (op, t.elapsed())
    }))
    .await;
    let total = started.elapsed();
    let mut issuers: Vec<&str> = ops.iter().map(|(op, _)| op.issuer.as_str()).collect();
    issuers.sort();
    issuers.dedup();
    assert_eq!(issuers.len(), 4, "distinct ports");
    let times: Vec<_> = ops.iter().map(|(_, t)| *t).collect();
    eprintln!("4 providers in {total:?} (each: {times:?})");

    let mut kids = Vec::new();
    for (op, _) in &ops {
        let jwks = op.jwks().await;
        kids.extend(jwks.keys.iter().filter_map(|k| k.common.key_id.clone()));
    }
    let n = kids.len();
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), n, "fresh keys per provider");

    let pids: Vec<u32> = ops.iter().map(|(op, _)| op.pid).collect();
    let mut ops = ops.into_iter();
    // Two stopped cleanly (exit 0), two just dropped (killed).
    for _ in 0..2 {
        ops.next().unwrap().0.stop().await;
    }
    drop(ops);
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Gone, or a zombie that tokio reaps: either way no longer running.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let running =
                stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')) && !stat.is_empty();
            if !running {
                break;
            }
            assert!(Instant::now() < deadline, "provider {pid} still running: {stat}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A bad config is refused at start with the reason, exit status 2, nothing on stdout.
#[test]
fn bad_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(common::oidc::node())
            .arg(common::oidc::provider_script())
            .arg("--config")
            .arg(path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let mut config = default_config();
    config["clients"][0]["redirect_uris"] = json!(["not a url"]);
    let (code, stderr) = run(&config.to_string());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid client remit-rs256") && stderr.contains("redirect_uris"), "{stderr}");

    let (code, stderr) = run(r#"{"clients": [], "accounts": []}"#);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"clients\" must be a non-empty array"), "{stderr}");

    let (code, stderr) = run(
        r#"{"clients": [{"client_id": "a", "client_secret": "b", "redirect_uris": ["http://127.0.0.1/cb"]}], "accounts": [], "clock": 1}"#,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown key \"clock\""), "{stderr}");
}
