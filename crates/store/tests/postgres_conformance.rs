//! The conformance suite against the real PostgreSQL server (one throw-away database per
//! case; see `remit_store::postgres::testing`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use remit_store::postgres::PgStore;
use remit_store::postgres::testing::TempDb;

async fn make() -> (PgStore, TempDb) {
    let db = TempDb::create().await.expect("PostgreSQL must be reachable (see REMIT_TEST_PG_URL)");
    let store = PgStore::connect(&db.url).await.unwrap();
    (store, db)
}

remit_store::conformance_tests!(make());

/// The same suite through the liveness cache: caching must not change any answer.
mod cached {
    use std::sync::Arc;
    use std::time::Duration;

    async fn make() -> (remit_store::cache::CachingStore, remit_store::postgres::testing::TempDb) {
        let (s, db) = super::make().await;
        (remit_store::cache::CachingStore::new(Arc::new(s), Duration::from_secs(60)), db)
    }

    remit_store::conformance_tests!(make());
}
