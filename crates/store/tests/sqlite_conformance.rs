//! The conformance suite against a real SQLite file in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

async fn make() -> (remit_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = remit_store::sqlite::SqliteStore::open(dir.path().join("remit.db")).unwrap();
    (store, dir)
}

remit_store::conformance_tests!(make());
