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

/// The liveness cache answers what the store answers, over random sequences of kills,
/// resumes, enables, renewals, joins, starts and reads; a second replica (its own store and
/// cache on the same database, fed by LISTEN/NOTIFY) agrees once the notification arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_agrees_with_store_over_random_sequences() {
    for seed in [1, 2, 3, 0x5EED] {
        let (s, db) = make().await;
        let other = PgStore::connect(&db.url).await.unwrap();
        remit_store::cache_property::cache_agrees_with_store(
            std::sync::Arc::new(s),
            Some(std::sync::Arc::new(other)),
            seed,
            150,
        )
        .await;
    }
}
