//! The audit log detects tampering with the SQLite file: an edited row is named, and so is
//! deleting the newest rows once a signed checkpoint covers them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::json;

async fn verify(s: &TestServer) -> serde_json::Value {
    let (st, v) = s.admin_post("/v1/audit/verify", json!({})).await;
    assert_eq!(st, 200);
    v
}

async fn populated() -> TestServer {
    let s = TestServer::start().await;
    s.setup().await;
    let inst = s.join().await;
    for _ in 0..3 {
        s.start_task(&inst).await;
    }
    let (st, cp) = s.admin_post("/v1/audit/checkpoint", json!({})).await;
    assert_eq!(st, 200);
    assert!(cp["checkpoint"]["seq"].as_u64().unwrap() >= 8);
    s
}

fn raw(s: &TestServer) -> rusqlite::Connection {
    rusqlite::Connection::open(s.db_path()).unwrap()
}

#[tokio::test]
async fn intact_log_verifies() {
    let s = populated().await;
    let v = verify(&s).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["report"]["records"], s.audit_head().await);
    s.stop().await;
}

#[tokio::test]
async fn edited_row_is_named() {
    let s = populated().await;
    let c = raw(&s);
    // The table refuses updates; an attacker with the file drops the guard first.
    assert!(c.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 5", []).is_err());
    c.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'someone-else' WHERE seq = 5;").unwrap();
    let v = verify(&s).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "record 5: hash does not match its contents (record edited)");
    s.stop().await;
}

#[tokio::test]
async fn rehashed_edit_is_caught_by_the_next_link() {
    let s = populated().await;
    let c = raw(&s);
    // A smarter attacker recomputes the edited row's own hash; the next record's link breaks.
    c.execute_batch("DROP TRIGGER audit_no_update;").unwrap();
    let rec: remit_core::audit::AuditRecord = {
        let (_, recs) = s.admin_get("/v1/audit?after=3&limit=1").await;
        serde_json::from_value(recs[0].clone()).unwrap()
    };
    let mut ev = rec.event.clone();
    ev.actor = "someone-else".into();
    let mut prev = [0u8; 32];
    for (i, b) in prev.iter_mut().enumerate() {
        *b = u8::from_str_radix(&rec.prev_hash[i * 2..i * 2 + 2], 16).unwrap();
    }
    let (forged, _) = remit_core::audit::seal(rec.seq, ev, &prev);
    c.execute(
        "UPDATE audit SET actor = ?1, hash = ?2 WHERE seq = ?3",
        rusqlite::params![forged.event.actor, forged.hash, rec.seq],
    )
    .unwrap();
    let v = verify(&s).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "record 5: previous hash does not match record 4 (record edited or removed)");
    s.stop().await;
}

#[tokio::test]
async fn deleted_newest_rows_are_detected() {
    let s = populated().await;
    let head = s.audit_head().await;
    let c = raw(&s);
    c.execute_batch(&format!("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > {};", head - 2)).unwrap();
    let v = verify(&s).await;
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["error"],
        format!(
            "records after {} are missing: a signed checkpoint covers record {head} (newest records deleted)",
            head - 2
        )
    );
    s.stop().await;
}

#[tokio::test]
async fn deleted_middle_row_and_forged_checkpoint() {
    let s = populated().await;
    let c = raw(&s);
    c.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 3;").unwrap();
    let v = verify(&s).await;
    assert_eq!(v["error"], "record 3 is missing (found 4 next)");
    s.stop().await;

    let s = populated().await;
    raw(&s).execute("UPDATE audit_checkpoints SET head_hash = 'ff' || substr(head_hash, 3)", []).unwrap();
    let v = verify(&s).await;
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("signature is invalid"), "{v}");
    s.stop().await;
}
