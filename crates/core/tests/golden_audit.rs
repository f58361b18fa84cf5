//! Golden vectors for the audit chain: the record hash (`remit-audit-v1`) and the checkpoint
//! message (`remit-audit-checkpoint-v1`), checked in under `tests/data/`. A refactor that
//! changes either encoding breaks the verification of every existing log; this test fails
//! first. A *new* encoding gets a new version tag and a vector file of its own, never an edit
//! of this one.
//!
//! `REMIT_WRITE_GOLDEN=1 cargo test -p remit-core --test golden_audit` (re)writes the file
//! from the current code: only for a new vector file, never to make this test pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use remit_core::audit::{AuditEvent, Outcome, checkpoint_message, record_hash};
use remit_core::time::UnixMillis;
use serde_json::{Value, json};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/audit-v1.json");

/// The inputs: every field set and unset, non-ASCII text, large numbers, a chain of three.
fn cases() -> Vec<(u64, AuditEvent)> {
    let base = AuditEvent::new(UnixMillis(1_795_000_000_000), "admin", remit_core::audit::AuditAction::Init);
    vec![
        (1, base.clone().detail([("trust_domain", "remit.local".into())])),
        (
            2,
            AuditEvent::new(
                UnixMillis(1_795_000_000_123),
                "admin:alice@example.com",
                remit_core::audit::AuditAction::TaskStart,
            )
            .workflow("deploy")
            .task("t-0123456789abcdef0123456789abcdef")
            .agent("deploy-bot")
            .reason("ship v1.2 — «prod»")
            .detail([("jti", "00ff".into()), ("expires_at_ms", 1_795_000_300_123_i64.into())]),
        ),
        (
            3,
            AuditEvent::new(
                UnixMillis(-1),
                "spiffe://remit.local/agent/a/instance/i-1",
                remit_core::audit::AuditAction::AccessEvaluate,
            )
            .outcome(Outcome::Denied)
            .reason(""),
        ),
    ]
}

fn compute() -> Value {
    let mut prev = remit_core::audit::GENESIS_HASH;
    let mut records = Vec::new();
    for (seq, e) in cases() {
        let h = record_hash(seq, &e, &prev);
        records.push(json!({"seq": seq, "event": e, "prev_hash": hex::encode(prev), "hash": hex::encode(h)}));
        prev = h;
    }
    let head = records.last().unwrap()["hash"].as_str().unwrap().to_owned();
    let msg = checkpoint_message(3, &head, UnixMillis(1_795_000_001_000));
    json!({
        "record_encoding": "remit-audit-v1",
        "records": records,
        "checkpoint": {"seq": 3, "head_hash": head, "time": 1_795_000_001_000_i64,
                       "message": String::from_utf8(msg).unwrap()},
    })
}

#[test]
fn audit_hashes_and_checkpoint_messages_match_the_golden_vectors() {
    let now = compute();
    if std::env::var_os("REMIT_WRITE_GOLDEN").is_some() {
        std::fs::write(FILE, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(FILE).expect("tests/data/audit-v1.json")).unwrap();
    // Each stored event must hash to its stored hash (the vector is self-contained: it does
    // not rely on the builder code above producing the same events).
    let mut prev = remit_core::audit::GENESIS_HASH;
    for r in golden["records"].as_array().unwrap() {
        let e: AuditEvent = serde_json::from_value(r["event"].clone()).unwrap();
        assert_eq!(r["prev_hash"], hex::encode(prev));
        let h = record_hash(r["seq"].as_u64().unwrap(), &e, &prev);
        assert_eq!(hex::encode(h), r["hash"].as_str().unwrap(), "record {} no longer hashes the same", r["seq"]);
        prev = h;
    }
    let cp = &golden["checkpoint"];
    let msg = checkpoint_message(
        cp["seq"].as_u64().unwrap(),
        cp["head_hash"].as_str().unwrap(),
        UnixMillis(cp["time"].as_i64().unwrap()),
    );
    assert_eq!(String::from_utf8(msg).unwrap(), cp["message"].as_str().unwrap());
    assert_eq!(now, golden, "the builders now produce other records than the vector holds");
}
