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
