//! A party who can write the database but not read the key-encryption key (a leaked writable
//! backup, a shared PostgreSQL with a compromised role) cannot make Remit trust a key or a
//! credential of theirs: an added JWT key, an added audit key with re-signed checkpoints, a
//! replaced admin credential hash — all refused, on the running server and at the next
//! start. Also: every token's `iss` is checked, and a replica configured with another issuer
//! refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::TestServer;
use remit_core::audit::checkpoint_message;
use remit_token::{Claims, SigningKey, b64e, jwt};
use serde_json::json;

fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&remit_token::b64d(payload).unwrap()).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Inserts a key row the way a database-only attacker can: their public key, a sealed half
/// they cannot produce, and whatever MAC they like.
fn add_key(s: &TestServer, purpose: &str, key: &SigningKey, mac: Option<&str>) {
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO keys (kid, purpose, sealed, public, created_at, retire_after, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            key.kid(),
            purpose,
            vec![7u8; 80],
            key.verifying.public.clone(),
            now_ms() - 1000,
            now_ms() + 365 * 24 * 3600 * 1000,
            mac
        ],
    )
    .unwrap();
}

/// Starting again on the same data directory (same KEK) must fail, naming why.
async fn restart_is_refused(s: TestServer, why: &str) {
    let clock = s.clock.clone();
    let dir = s.stop_keeping_data().await;
    let cfg = remit_server::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    match remit_server::bootstrap(cfg, None, Arc::new(clock), false).await {
        Ok(_) => panic!("a tampered database must not start"),
        Err(e) => assert!(e.to_string().contains(why), "refused, but for another reason: {e}"),
    }
}

#[tokio::test]
async fn an_added_jwt_key_is_never_trusted() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, tok) = s.start_task(&inst).await;
    let attacker = SigningKey::generate().unwrap();
    add_key(&s, "jwt", &attacker, None);
    let other = SigningKey::generate().unwrap();
    add_key(&s, "jwt", &other, Some(&"ab".repeat(32)));
    for key in [&attacker, &other] {
        // A token naming the injected kid makes the server re-read its keys at once.
        let forged_task = jwt::mint(key, &claims_of(&tok));
        assert!(!s.active(&forged_task).await, "a token signed by an injected key is active");
        let forged_inst = jwt::mint(key, &claims_of(&inst));
        let (st, _) = s.call("GET", "/v1/tasks", Some(&forged_inst), None).await;
        assert_eq!(st, 401, "an instance token signed by an injected key authenticated");
        let (st, d) = s
            .admin_post(
                "/v1/decisions",
                json!({"token": forged_task, "action": {"name": "read"},
            "resource": {"type": "Tool", "id": "jira"}}),
            )
            .await;
        assert_eq!((st, d["decision"].as_bool()), (200, Some(false)), "{d}");
    }
    // The genuine tokens still work: the refused reload kept the keys in use.
    assert!(s.active(&tok).await);
    restart_is_refused(s, "has no integrity seal").await;
}

#[tokio::test]
async fn an_added_audit_key_cannot_re_sign_the_log() {
    let s = TestServer::start().await;
    s.setup().await;
    let (st, _) = s.admin_post("/v1/audit/checkpoint", json!({})).await;
    assert_eq!(st, 200);
    let attacker = SigningKey::generate().unwrap();
    add_key(&s, "audit", &attacker, None);
    // Re-sign every checkpoint with the injected key (as after re-hashing an edited chain).
    {
        let db = rusqlite::Connection::open(s.db_path()).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let (seq, hash): (i64, String) = db
            .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        db.execute("DELETE FROM audit_checkpoints", []).unwrap();
        let time = remit_core::time::UnixMillis(now_ms());
        let sig = attacker.sign(&checkpoint_message(seq as u64, &hash, time));
        db.execute(
            "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![seq, hash, time.0, attacker.kid(), b64e(&sig)],
        )
        .unwrap();
    }
    // Make the server re-read its keys (a token naming an unknown kid does).
    let stranger = SigningKey::generate().unwrap();
    let inst_tok = s.join().await;
    assert!(!s.active(&jwt::mint(&stranger, &claims_of(&inst_tok))).await);
    let (st, v) = s.admin_post("/v1/audit/verify", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(v["ok"], false, "checkpoints signed by an injected audit key verified: {v}");
    restart_is_refused(s, "has no integrity seal").await;
}

#[tokio::test]
async fn a_replaced_admin_hash_is_refused() {
    let s = TestServer::start().await;
    let mine = "remit_admin_attackers-own-credential";
    let hash: String = remit_token::sha256(mine.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    {
        let db = rusqlite::Connection::open(s.db_path()).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        db.execute("UPDATE meta SET value = ?1 WHERE key = 'admin_hash'", [hash]).unwrap();
    }
    let (st, _) = s.call("GET", "/v1/workflows", Some(mine), None).await;
    assert_eq!(st, 401);
    restart_is_refused(s, "does not match its seal").await;
}

#[tokio::test]
async fn the_issuer_is_checked_on_every_token_and_fixed_at_init() {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    let (_, tok) = s.start_task(&inst).await;
    // Signed with the installation's own key, but naming another issuer.
    let mut c = claims_of(&tok);
    c.iss = "https://another-remit.example".into();
    let foreign = jwt::mint(s.app.keyring().signer(), &c);
    assert!(!s.active(&foreign).await, "a token with a foreign iss is active");
    let mut c = claims_of(&inst);
    c.iss = "https://another-remit.example".into();
    let (st, _) = s.call("GET", "/v1/tasks", Some(&jwt::mint(s.app.keyring().signer(), &c)), None).await;
    assert_eq!(st, 401);
    assert!(s.active(&tok).await);
    // The discovery document names the stored issuer.
    let (_, d) = s.call("GET", "/.well-known/openid-configuration", None, None).await;
    assert_eq!(d["issuer"], s.app.issuer.as_str());
    // A replica configured with another issuer refuses to start.
    let cfg = remit_server::config::Config {
        data_dir: s.dir.path().to_path_buf(),
        issuer: Some("https://another-remit.example".into()),
        ..Default::default()
    };
    let r = remit_server::bootstrap(cfg, None, Arc::new(s.clock.clone()), false).await;
    assert!(r.err().unwrap().to_string().contains("issuer"));
    s.stop().await;
}

#[tokio::test]
async fn join_tokens_do_not_survive_an_agent_kill() {
    let s = TestServer::start().await;
    s.setup().await;
    let (st, jt) = s.admin_post("/v1/agents/deploy-bot/join-tokens", json!({})).await;
    assert_eq!(st, 201);
    let (st, _) = s.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    let (st, _) = s.admin_post("/v1/agents/deploy-bot/enable", json!({"reason": "fixed"})).await;
    assert_eq!(st, 200);
    let (st, b) = s.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    assert_eq!(st, 401, "a join token issued before the kill redeemed after re-enable: {b}");
    let (_, recs) = s.admin_get("/v1/audit?action=join_token.revoke").await;
    assert_eq!(recs.as_array().unwrap().len(), 1, "{recs}");
    assert_eq!(recs[0]["agent"], "deploy-bot");
    // A token issued after re-enabling works.
    s.join().await;
}
