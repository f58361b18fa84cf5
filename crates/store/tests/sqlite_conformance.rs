//! The conformance suite against a real SQLite file in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

async fn make() -> (remit_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = remit_store::sqlite::SqliteStore::open(dir.path().join("remit.db")).unwrap();
    (store, dir)
}

remit_store::conformance_tests!(make());

/// The same suite through the liveness cache: caching must not change any answer.
mod cached {
    use std::sync::Arc;
    use std::time::Duration;

    async fn make() -> (remit_store::cache::CachingStore, tempfile::TempDir) {
        let (s, dir) = super::make().await;
        (remit_store::cache::CachingStore::new(Arc::new(s), Duration::from_secs(60)), dir)
    }

    remit_store::conformance_tests!(make());
}

/// The liveness cache answers what the store answers, over random sequences of kills,
/// resumes, enables, renewals, joins, starts and reads; a second cache on the same store
/// (fed by the in-process change feed) agrees too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_agrees_with_store_over_random_sequences() {
    for seed in [1, 2, 3, 0x5EED] {
        let (s, _dir) = make().await;
        let s: std::sync::Arc<dyn remit_store::Store> = std::sync::Arc::new(s);
        remit_store::cache_property::cache_agrees_with_store(s.clone(), Some(s), seed, 150).await;
    }
}

/// The entity cache holds at most its byte budget, whatever the ids callers ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entity_cache_is_bounded_by_bytes() {
    use remit_store::Store as _;
    let (s, _dir) = make().await;
    let budget = 64 * 1024;
    let c = remit_store::cache::CachingStore::with_entity_budget(
        std::sync::Arc::new(s),
        std::time::Duration::from_secs(60),
        budget,
    );
    for i in 0..2000 {
        let id = format!("{i}-{}", "x".repeat(1000));
        assert_eq!(c.policy().entity("User", &id).await.unwrap(), None);
        assert!(c.entity_bytes() <= budget, "{} bytes held after {i} lookups", c.entity_bytes());
    }
    assert!(c.entity_bytes() > 0, "negative answers are still cached within the budget");
}

/// A database made by the previous version is upgraded in place: owners typed in as emails
/// become unverified humans, linked by id.
#[tokio::test]
async fn an_older_database_is_upgraded_and_its_owners_become_humans() {
    use remit_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("remit.db");
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let migrations = remit_store::sqlite::schema::MIGRATIONS;
        let tx = c.transaction().unwrap();
        // 5: the last schema before humans.
        for m in &migrations[..5] {
            tx.execute_batch(m).unwrap();
        }
        tx.pragma_update(None, "user_version", 5).unwrap();
        tx.execute_batch(
            "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
             max_delegation_depth, state, created_at, updated_at) \
             VALUES ('deploy', 'ship', ' A@Example.com', 'internal', '[]', 900, 3, 'active', 1, 1);
             INSERT INTO agents (name, owner, workflows, state, created_at, updated_at) \
             VALUES ('bot', 'a@example.com', '[\"deploy\"]', 'enabled', 1, 1);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = remit_store::sqlite::SqliteStore::open(&path).unwrap();
    let h = s.humans().by_email("a@example.com").await.unwrap().expect("the owner became a human");
    assert_eq!(h.state, remit_core::human::HumanState::Unverified);
    let wf = s.identity().workflow(&remit_core::ids::WorkflowName::parse("deploy").unwrap()).await.unwrap().unwrap();
    let bot = s.identity().agent(&remit_core::ids::AgentName::parse("bot").unwrap()).await.unwrap().unwrap();
    assert_eq!((wf.owner_id.as_ref(), bot.owner_id.as_ref()), (Some(&h.id), Some(&h.id)), "one human for one address");
    assert_eq!(s.humans().list(None, None, 10).await.unwrap().len(), 1);
}
