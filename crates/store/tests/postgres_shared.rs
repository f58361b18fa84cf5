//! PostgreSQL-only behaviour: several stores (replicas) on one database, schema versions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use remit_core::audit::AuditAction;
use remit_core::ids::WorkflowName;
use remit_core::model::{Kill, KillTarget};
use remit_core::time::SystemClock;
use remit_store::conformance::{ev, fixture, task, verify_chain};
use remit_store::postgres::testing::TempDb;
use remit_store::postgres::{PgOptions, PgStore, schema};
use remit_store::{Change, Store, StoreError};

async fn replicas(db: &TempDb, n: usize) -> Vec<Arc<dyn Store>> {
    let mut out: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(PgStore::connect(&db.url).await.unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_appending_at_once_keep_one_chain() {
    let db = TempDb::create().await.unwrap();
    let rs = replicas(&db, 3).await;
    let inst = fixture(&*rs[0]).await;
    let start = rs[0].audit().head().await.unwrap().0;
    let mut handles = Vec::new();
    for i in 0..300 {
        let s = rs[i % 3].clone();
        let inst = inst.id.clone();
        handles.push(tokio::spawn(async move {
            let t = task("deploy", "bot", Some(&inst), None);
            s.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.map(|_| t.id)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        assert!(
            rs[(i + 1) % 3].identity().task(id).await.unwrap().is_some(),
            "acknowledged task {id} visible everywhere"
        );
    }
    assert_eq!(rs[1].audit().head().await.unwrap().0, start + 300);
    for r in &rs {
        verify_chain(&**r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_on_one_replica_reaches_the_others() {
    let db = TempDb::create().await.unwrap();
    let rs = replicas(&db, 3).await;
    fixture(&*rs[0]).await;
    let mut feeds: Vec<_> = rs[1..].iter().map(|r| r.subscribe()).collect();
    let wf = WorkflowName::parse("deploy").unwrap();
    rs[0]
        .identity()
        .kill(Kill {
            target: KillTarget::Workflow(wf.clone()),
            actor: "admin".into(),
            reason: "r".into(),
            at: ev(AuditAction::WorkflowSuspend).time,
        })
        .await
        .unwrap();
    for feed in &mut feeds {
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(Change::Workflow(w)) = feed.recv().await {
                    return w;
                }
            }
        })
        .await
        .expect("the other replica hears of the kill");
        assert_eq!(got, wf);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_an_older_one_upgraded() {
    let db = TempDb::create().await.unwrap();
    // A database made by the previous version: every migration but the newest applied.
    // (5: the last schema before humans, so the owner emails below become humans on upgrade.)
    let previous = &schema::MIGRATIONS[..5];
    let old = PgStore::connect_migrating(&db.url, PgOptions::default(), Arc::new(SystemClock), previous).await.unwrap();
    // It holds rows written by that version (in that version's columns).
    for sql in [
        "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
         max_delegation_depth, state, created_at, updated_at) \
         VALUES ('deploy', 'ship', 'a@example.com', 'internal', '[]', 900, 3, 'active', 1, 1)",
        "INSERT INTO agents (name, owner, workflows, state, created_at, updated_at) \
         VALUES ('bot', 'b@example.com', '[\"deploy\"]', 'enabled', 1, 1)",
        "INSERT INTO join_tokens (id, agent, secret_hash, created_at, expires_at) \
         VALUES ('j-00000000000000000000000000000001', 'bot', 'cd', 1, 9999999999999)",
        "INSERT INTO keys (kid, purpose, sealed, public, created_at) VALUES ('k1', 'jwt', '\\x01', '\\x04', 1)",
    ] {
        sqlx::query(sql).execute(old.pool()).await.unwrap();
    }
    let before = old.audit().head().await.unwrap();
    drop(old);
    // Opening it with this version upgrades it in place, keeping every record and the chain;
    // the new columns read as their defaults.
    let s = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(s.audit().head().await.unwrap(), before);
    let deploy = s.identity().workflow(&WorkflowName::parse("deploy").unwrap()).await.unwrap().unwrap();
    let bot = s.identity().agent(&remit_core::ids::AgentName::parse("bot").unwrap()).await.unwrap().unwrap();
    assert_eq!(bot.kill_generation, 0);
    // Owner emails typed in before humans existed became unverified humans, linked by id.
    for (owner_id, email) in [(&deploy.owner_id, "a@example.com"), (&bot.owner_id, "b@example.com")] {
        let h = s.humans().by_email(email).await.unwrap().expect("an owner became a human");
        assert_eq!(owner_id.as_ref(), Some(&h.id));
        assert_eq!(h.state, remit_core::human::HumanState::Unverified);
    }
    let jt = s
        .identity()
        .join_token(&remit_core::ids::JoinTokenId::parse("j-00000000000000000000000000000001").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((jt.agent_generation, jt.revoked_at), (0, None));
    assert!(
        s.keys().list().await.unwrap().iter().all(|k| k.mac.is_none()),
        "old keys are unsealed until `remit reseal`"
    );
    verify_chain(&s).await;
    let head = s.audit().head().await.unwrap();
    drop(s);
    // Re-opening an up-to-date database changes nothing.
    let s = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(s.audit().head().await.unwrap(), head);
    // A version from the future is refused with a clear error, and nothing is touched.
    let future = i64::try_from(schema::MIGRATIONS.len() + 1).unwrap();
    sqlx::query("UPDATE remit_schema SET version = $1").bind(future).execute(s.pool()).await.unwrap();
    match PgStore::connect(&db.url).await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("newer than this remit"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
    assert_eq!(s.audit().head().await.unwrap(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_unavailable_not_a_panic() {
    let r = PgStore::connect_with(
        "postgres://postgres@127.0.0.1:1/none",
        PgOptions { acquire_timeout: Duration::from_secs(1), ..PgOptions::default() },
        Arc::new(SystemClock),
    )
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{:?}", r.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_snapshot_on_another_replica_is_invalidated_by_a_kill() {
    use remit_store::cache::CachingStore;
    let db = TempDb::create().await.unwrap();
    let a: Arc<dyn Store> =
        Arc::new(CachingStore::new(Arc::new(PgStore::connect(&db.url).await.unwrap()), Duration::from_secs(600)));
    let b = CachingStore::new(Arc::new(PgStore::connect(&db.url).await.unwrap()), Duration::from_secs(600));
    let inst = fixture(&*a).await;
    let t = task("deploy", "bot", Some(&inst.id), None);
    a.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.unwrap();
    // B reads twice: the second answer comes from its cache.
    assert_eq!(b.identity().task_snapshot(&t.id).await.unwrap().unwrap().workflow.state.as_str(), "active");
    assert_eq!(b.identity().task_snapshot(&t.id).await.unwrap().unwrap().workflow.state.as_str(), "active");
    assert!(b.stats().hits >= 1);
    let wf = WorkflowName::parse("deploy").unwrap();
    a.identity()
        .kill(Kill {
            target: KillTarget::Workflow(wf),
            actor: "admin".into(),
            reason: "r".into(),
            at: ev(AuditAction::WorkflowSuspend).time,
        })
        .await
        .unwrap();
    // A sees its own kill at once; B as soon as the notification lands.
    assert_eq!(a.identity().task_snapshot(&t.id).await.unwrap().unwrap().task.state.as_str(), "revoked");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = b.identity().task_snapshot(&t.id).await.unwrap().unwrap();
        if s.task.state.as_str() == "revoked" && s.workflow.state.as_str() == "suspended" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replica B kept serving the stale snapshot");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
