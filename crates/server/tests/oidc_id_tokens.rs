//! Remit's ID-token verifier (`remit_token::oidc`) against the real OpenID provider harness
//! (npm `oidc-provider`, `tests/oidc`): a code flow with PKCE, state and nonce yields an RS256
//! or ES256 ID token that verifies; and every bad ID token the provider can be made to issue
//! (`/_harness/tamper`) is refused with its own reason — a forged signature, `alg: none`, an
//! HMAC keyed with the client secret, an unknown key, another audience, another issuer, an
//! expired one, one issued in the future, a wrong nonce — as is a good token checked for the
//! wrong nonce, client or algorithm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oidc::{AuthRequest, OidcProvider, query};
use jsonwebtoken::Algorithm;
use remit_token::oidc::{Expect, IdTokenError, verify_id_token};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// One sign-in of `sub` through `client`: the ID token and the nonce the request sent.
async fn sign_in(op: &OidcProvider, client: &str, secret: &str, sub: &str) -> (String, String) {
    let req = AuthRequest::new(client, REDIRECT, "openid email profile groups");
    let back = op.browser().authorize(&req.url(op), sub).await;
    let q: Value = query(&back);
    assert_eq!(q["state"], req.state.as_str(), "{q}");
    let code = q["code"].as_str().unwrap_or_else(|| panic!("no code: {q}"));
    let (st, t) = op
        .token(
            client,
            Some(secret),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &req.pkce.verifier),
            ],
        )
        .await;
    assert_eq!(st, 200, "{t}\n{}", op.logs());
    (t["id_token"].as_str().unwrap().to_owned(), req.nonce)
}

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

const ALLOWED: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_id_tokens_verify_and_bad_ones_are_refused_each_for_its_reason() {
    let op = OidcProvider::start().await;
    let jwks = op.jwks().await;
    let issuer = op.issuer.clone();
    let expect = |client: &'static str, nonce: &str| {
        Expect { issuer: &issuer, client_id: client, nonce, algorithms: ALLOWED, now: now(), leeway: 30 }.clone_owned()
    };

    // Good tokens, RS256 and ES256.
    for (client, secret) in [
        ("remit-rs256", "remit-rs256-secret-not-for-production"),
        ("remit-es256", "remit-es256-secret-not-for-production"),
    ] {
        let (token, nonce) = sign_in(&op, client, secret, "alice").await;
        let e = expect(client, &nonce);
        let claims = verify_id_token(&token, &jwks, &e.borrow()).unwrap_or_else(|err| panic!("{client}: {err}"));
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
        assert_eq!(claims.email_verified, Some(true));
        assert!(claims.groups.contains(&"remit-admins".to_owned()), "{claims:?}");

        // The same good token, checked against the wrong expectations.
        let wrong_nonce = expect(client, "another-sign-in");
        assert_eq!(verify_id_token(&token, &jwks, &wrong_nonce.borrow()), Err(IdTokenError::WrongNonce));
        let other_client = expect("someone-else", &nonce);
        assert_eq!(verify_id_token(&token, &jwks, &other_client.borrow()), Err(IdTokenError::WrongAudience));
        let mut only_eddsa = expect(client, &nonce);
        only_eddsa.algorithms = vec![Algorithm::EdDSA];
        assert!(matches!(
            verify_id_token(&token, &jwks, &only_eddsa.borrow()),
            Err(IdTokenError::AlgorithmNotAllowed(_))
        ));
        let mut later = expect(client, &nonce);
        later.now += 24 * 3600;
        assert_eq!(verify_id_token(&token, &jwks, &later.borrow()), Err(IdTokenError::Expired));
    }

    // Bad tokens the real provider is made to issue, each refused for its own reason.
    let (client, secret) = ("remit-rs256", "remit-rs256-secret-not-for-production");
    type RefusedAs = fn(&IdTokenError) -> bool;
    let cases: Vec<(Value, RefusedAs)> = vec![
        (json!({"key": "foreign"}), |e| *e == IdTokenError::BadSignature),
        (json!({"key": "none"}), |e| matches!(e, IdTokenError::Malformed(_) | IdTokenError::AlgorithmNotAllowed(_))),
        (json!({"key": "client_secret"}), |e| matches!(e, IdTokenError::AlgorithmNotAllowed(_))),
        (json!({"header": {"kid": "unknown-kid"}}), |e| matches!(e, IdTokenError::UnknownKey(_))),
        (json!({"header": {"kid": null}}), |e| *e == IdTokenError::NoKeyId),
        (json!({"claims": {"aud": "someone-else"}}), |e| *e == IdTokenError::WrongAudience),
        (json!({"claims": {"aud": ["remit-rs256", "someone-else"], "azp": null}}), |e| {
            *e == IdTokenError::WrongAudience
        }),
        (json!({"claims": {"iss": "http://127.0.0.1:1"}}), |e| *e == IdTokenError::WrongIssuer),
        (json!({"claims": {"exp": 1}}), |e| *e == IdTokenError::Expired),
        (json!({"claims": {"iat": now() + 3600}}), |e| *e == IdTokenError::IssuedInFuture),
        (json!({"claims": {"nonce": "replayed-from-another-sign-in"}}), |e| *e == IdTokenError::WrongNonce),
        (json!({"claims": {"nonce": null}}), |e| *e == IdTokenError::WrongNonce),
    ];
    for (spec, refused_as) in cases {
        let mut tamper = spec.clone();
        tamper["client_id"] = json!(client);
        op.tamper(tamper).await;
        let (token, nonce) = sign_in(&op, client, secret, "bob").await;
        let e = expect(client, &nonce);
        match verify_id_token(&token, &jwks, &e.borrow()) {
            Err(err) => assert!(refused_as(&err), "{spec}: refused, but as {err:?}"),
            Ok(c) => panic!("{spec}: accepted {c:?}"),
        }
    }
    op.stop().await;
}

/// [`Expect`] borrows; the test keeps owned copies it can change.
struct Owned {
    issuer: String,
    client_id: String,
    nonce: String,
    algorithms: Vec<Algorithm>,
    now: i64,
    leeway: u64,
}

trait CloneOwned {
    fn clone_owned(&self) -> Owned;
}

impl CloneOwned for Expect<'_> {
    fn clone_owned(&self) -> Owned {
        Owned {
            issuer: self.issuer.to_owned(),
            client_id: self.client_id.to_owned(),
            nonce: self.nonce.to_owned(),
            algorithms: self.algorithms.to_vec(),
            now: self.now,
            leeway: self.leeway,
        }
    }
}

impl Owned {
    fn borrow(&self) -> Expect<'_> {
        Expect {
            issuer: &self.issuer,
            client_id: &self.client_id,
            nonce: &self.nonce,
            algorithms: &self.algorithms,
            now: self.now,
            leeway: self.leeway,
        }
    }
}
