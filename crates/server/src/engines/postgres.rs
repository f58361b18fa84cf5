//! The PostgreSQL engine: a role per task, `VALID UNTIL` the lease's deadline, with grants
//! from the tool's template; removed by ending its sessions, dropping what it owns, then the
//! role.
//!
//! The admin role needs `CREATEROLE` (and the grant options its templates hand out). Each new
//! role is granted to the admin (`GRANT role TO CURRENT_USER`), so a non-superuser admin may
//! end the role's sessions and drop what it owns. The engine only ever alters or drops roles
//! named as Remit names them (`remit_…`, see `remit_core::lease::is_role_name`). Admin
//! connections are pooled per tool and admin-secret version (a rotated secret gets a new
//! pool), with statement and lock timeouts so a wedged database cannot hold a batch for ever.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use remit_core::lease::{EngineKind, create_role, is_role_name, quote_ident, render_grant};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{Admin, Engine, EngineError, NewLogin};

/// Connections per tool's pool (and revocations in flight per batch).
const POOL_SIZE: u32 = 4;

pub struct PostgresEngine {
    /// By tool: the admin secret's fingerprint and its pool.
    pools: Mutex<HashMap<String, (String, PgPool)>>,
    connect_timeout: Duration,
}

impl PostgresEngine {
    pub fn new(connect_timeout: Duration) -> Self {
        PostgresEngine { pools: Mutex::new(HashMap::new()), connect_timeout }
    }

    fn pool(&self, tool: &str, fingerprint: &str, admin_url: &str) -> Result<PgPool, EngineError> {
        let mut pools = self.pools.lock().map_err(|_| EngineError("engine state poisoned".into()))?;
        if let Some((fp, p)) = pools.get(tool)
            && fp == fingerprint
        {
            return Ok(p.clone());
        }
        // Never echo the URL: it holds the admin password.
        let opts = PgConnectOptions::from_str(admin_url)
            .map_err(|_| EngineError("the admin secret is not a postgres:// URL".into()))?
            .application_name("remit")
            .options([("statement_timeout", "10s"), ("lock_timeout", "5s")]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(opts);
        if let Some((_, old)) = pools.insert(tool.to_owned(), (fingerprint.to_owned(), pool.clone())) {
            tokio::spawn(async move { old.close().await });
        }
        Ok(pool)
    }
}

fn db_err(e: sqlx::Error) -> EngineError {
    match e {
        sqlx::Error::Database(d) => EngineError(format!("postgres: {}", d.message())),
        sqlx::Error::PoolTimedOut => EngineError("postgres: no connection within the connect timeout".into()),
        sqlx::Error::Io(e) => EngineError(format!("postgres unreachable: {e}")),
        sqlx::Error::Tls(_) => EngineError("postgres: TLS failed".into()),
        e => EngineError(format!("postgres: {}", remit_core::lease::error_text(&e.to_string()))),
    }
}

/// Runs one statement Remit built (extended protocol: exactly one statement, never cached).
async fn exec(c: &mut sqlx::PgConnection, sql: &str) -> Result<(), EngineError> {
    sqlx::query(sql).persistent(false).execute(c).await.map(|_| ()).map_err(db_err)
}

async fn revoke_one(pool: &PgPool, role: &str) -> Result<(), EngineError> {
    if !is_role_name(role) {
        return Err(EngineError(format!("`{role}` is not a role Remit made; refusing to touch it")));
    }
    let mut c = pool.acquire().await.map_err(db_err)?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *c)
        .await
        .map_err(db_err)?;
    if exists.is_none() {
        return Ok(());
    }
    let q = quote_ident(role);
    // No new session from here on, then end the ones it has.
    exec(&mut c, &format!("ALTER ROLE {q} NOLOGIN")).await?;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
    )
    .bind(role)
    .execute(&mut *c)
    .await
    .map_err(db_err)?;
    let mut tx = sqlx::Connection::begin(&mut *c).await.map_err(db_err)?;
    exec(&mut tx, &format!("DROP OWNED BY {q}")).await?;
    exec(&mut tx, &format!("DROP ROLE {q}")).await?;
    tx.commit().await.map_err(db_err)
}

#[async_trait]
impl Engine for PostgresEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgres
    }

    async fn create(&self, l: NewLogin<'_>) -> Result<(), EngineError> {
        if !is_role_name(l.role) {
            return Err(EngineError("bad role name".into()));
        }
        let pool = self.pool(l.tool.as_str(), l.admin_fingerprint, l.admin_url)?;
        let secs = u64::try_from(l.until.0.div_euclid(1000)).map_err(|_| EngineError("bad expiry".into()))?;
        let until = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        let mut tx = pool.begin().await.map_err(db_err)?;
        exec(&mut tx, &create_role(l.role, l.verifier, &until, l.cfg.connection_limit())).await?;
        exec(&mut tx, &format!("GRANT {} TO CURRENT_USER", quote_ident(l.role))).await?;
        for g in &l.cfg.grants {
            exec(&mut tx, &render_grant(g, l.role)).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn revoke(&self, admin: Admin<'_>, roles: &[String]) -> Vec<Result<(), EngineError>> {
        let pool = match self.pool(admin.tool.as_str(), admin.admin_fingerprint, admin.admin_url) {
            Ok(p) => p,
            Err(e) => return roles.iter().map(|_| Err(e.clone())).collect(),
        };
        let owned: Vec<String> = roles.to_vec();
        futures_util::stream::iter(owned)
            .map(move |r| {
                let pool = pool.clone();
                async move { revoke_one(&pool, &r).await }
            })
            .buffered(POOL_SIZE as usize)
            .collect()
            .await
    }
}
