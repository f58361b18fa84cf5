//! Local humans on the real server, for setups without an identity provider: an admin creates
//! one with a password (argon2id at rest), they sign in for a Remit session, enrol a TOTP
//! second factor whose codes come from an independent implementation (PyPI `pyotp`), a code
//! works once, repeated failures lock the account, and every refusal reads the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use remit_core::time::Clock;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// The current code for `secret` from pyotp, at `at` (Unix seconds).
fn pyotp(secret: &str, at: i64) -> String {
    let out = std::process::Command::new(common::python())
        .args(["-c", "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))", secret, &at.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn sign_in(s: &TestServer, email: &str, password: &str, code: Option<&str>) -> (u16, Value) {
    s.call("POST", "/v1/auth/local", None, Some(json!({"email": email, "password": password, "code": code}))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_human_signs_in_with_a_password_and_a_second_factor() {
    let s = TestServer::start().await;
    let body =
        json!({"email": "Dana@Example.com", "display_name": "Dana", "roles": ["operator"], "password": PASSWORD});
    let (st, h) = s.admin_post("/v1/humans", body.clone()).await;
    assert_eq!(st, 201, "{h}");
    assert_eq!((h["email"].clone(), h["roles"].clone()), (json!("dana@example.com"), json!(["operator"])));
    assert_eq!(s.admin_post("/v1/humans", body).await.0, 409);
    let weak = json!({"email": "eve@example.com", "password": "short"});
    assert_eq!(s.admin_post("/v1/humans", weak).await.0, 400);

    // A password: a session, with the human's role.
    let (st, t) = sign_in(&s, "dana@example.com", PASSWORD, None).await;
    assert_eq!(st, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_owned();
    let (_, me) = s.call("GET", "/v1/auth/session", Some(&access), None).await;
    assert_eq!(me["session"]["method"], "local");
    assert_eq!(s.call("GET", "/v1/audit?limit=1", Some(&access), None).await.0, 200, "an operator reads");

    // Every refusal reads the same: a wrong password, an unknown email.
    let (st, wrong) = sign_in(&s, "dana@example.com", "not the password at all", None).await;
    let (st2, unknown) = sign_in(&s, "nobody@example.com", PASSWORD, None).await;
    assert_eq!((st, st2), (401, 401));
    assert_eq!(wrong["message"], unknown["message"]);

    // A second factor: enrolled with a first code from an independent TOTP implementation.
    let (st, e) = s.call("POST", "/v1/auth/totp", Some(&access), None).await;
    assert_eq!(st, 200, "{e}");
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(e["uri"].as_str().unwrap().starts_with("otpauth://totp/Remit%3Adana%40example.com?secret="), "{e}");
    let now = s.clock.now().secs();
    assert_eq!(s.call("POST", "/v1/auth/totp/confirm", Some(&access), Some(json!({"code": "00000"}))).await.0, 400);
    let (st, _) =
        s.call("POST", "/v1/auth/totp/confirm", Some(&access), Some(json!({"code": pyotp(&secret, now)}))).await;
    assert_eq!(st, 204);
    // Now a password alone is not enough; the next code is; a code works once.
    s.clock.advance_secs(30);
    let now = s.clock.now().secs();
    assert_eq!(sign_in(&s, "dana@example.com", PASSWORD, None).await.0, 401);
    let code = pyotp(&secret, now);
    assert_eq!(sign_in(&s, "dana@example.com", PASSWORD, Some(&code)).await.0, 200);
    assert_eq!(sign_in(&s, "dana@example.com", PASSWORD, Some(&code)).await.0, 401, "a code works once");

    // Five failures lock the account, even against the right password and code.
    for _ in 0..5 {
        assert_eq!(sign_in(&s, "dana@example.com", "guess guess guess", None).await.0, 401);
    }
    s.clock.advance_secs(30);
    let code = pyotp(&secret, s.clock.now().secs());
    assert_eq!(sign_in(&s, "dana@example.com", PASSWORD, Some(&code)).await.0, 401, "locked");
    s.clock.advance_secs(15 * 60);
    let code = pyotp(&secret, s.clock.now().secs());
    assert_eq!(sign_in(&s, "dana@example.com", PASSWORD, Some(&code)).await.0, 200, "unlocked after the lock");

    // Refusals are recorded (never the password); the hash at rest is argon2id.
    let (_, recs) = s.admin_get("/v1/audit?action=session.create&limit=100").await;
    let denied = recs.as_array().unwrap().iter().filter(|r| r["outcome"] == "denied").count();
    assert!(denied >= 8, "{recs}");
    let export = s.http.get(format!("{}/v1/audit/export", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    assert!(!export.text().await.unwrap().contains("horse battery"));
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    let phc: String = db.query_row("SELECT password_hash FROM local_credentials", [], |r| r.get(0)).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    s.stop().await;
}
