//! Throw-away databases on a real PostgreSQL server, for tests (this crate's conformance
//! run, the server's multi-replica tests, benchmarks).
//!
//! The server comes from `REMIT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the machine's trust-auth instance). Each
//! [`TempDb`] creates a fresh database with a random name and drops it (terminating any
//! connections still open) when the guard is dropped.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::rows::map_err;
use crate::{Result, StoreError};

/// The admin URL tests use to reach PostgreSQL.
pub fn admin_url() -> String {
    std::env::var("REMIT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database that exists for as long as this guard lives.
#[derive(Debug)]
pub struct TempDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TempDb {
    pub async fn create() -> Result<TempDb> {
        Self::create_on(&admin_url()).await
    }

    pub async fn create_on(admin: &str) -> Result<TempDb> {
        let bytes: [u8; 8] = std::array::from_fn(|i| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos().wrapping_mul(6364136223846793005).wrapping_add(i as u128 * 1442695040888963407) >> (i * 7))
                as u8
        });
        let name = format!("remit_test_{}_{}", std::process::id(), hex::encode(bytes));
        let mut c = PgConnection::connect(admin).await.map_err(|e| {
            StoreError::Unavailable(format!("test postgres at {}: {}", super::redact_url(admin), map_err(e)))
        })?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.map_err(map_err)?;
        let _ = c.close().await;
        Ok(TempDb { url: with_database(admin, &name), name, admin: admin.to_owned() })
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any async context we can rely on: use a private runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
