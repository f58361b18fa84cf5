//! The PostgreSQL engine: a role per task, `VALID UNTIL` the lease's deadline, with grants
//! from the tool's template; removed by ending its sessions, dropping what it owns, then the
//! role.
//!
//! The admin role needs `CREATEROLE` (and the grant options its templates hand out). Each new
//! role is granted to the admin (`GRANT role TO CURRENT_USER`), which is what lets a
//! non-superuser admin end the role's sessions (`pg_terminate_backend` on a role it is a
//! member of) and drop what it owns. The engine only ever alters or drops roles named exactly
//! as Remit names them (`remit_core::lease::is_role_name`), and never one that existed before
//! it tried to make it. Logins of one tool are made and dropped one at a time (a
//! transaction-scoped advisory lock: concurrent `GRANT`s or `DROP OWNED`s on one object fail
//! with "tuple concurrently updated"); ending sessions runs concurrently.
//! Admin connections are pooled per tool and admin-secret version (a rotated secret gets a
//! new pool), with statement and lock timeouts so a wedged database cannot hold a batch for
//! ever; a batch whose first connection fails fails at once, without waiting per role.

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
    /// `statement_timeout` and `lock_timeout` of admin sessions: well inside a claim.
    statement_timeout: Duration,
}

impl PostgresEngine {
    /// `claim`: how long a batch or a login being made is held; statements (and waits for
    /// the tool's lock) are cut at a quarter of it, at most 10 s.
    pub fn new(connect_timeout: Duration, claim: Duration) -> Self {
        let statement_timeout = (claim / 4).clamp(Duration::from_millis(500), Duration::from_secs(10));
        PostgresEngine { pools: Mutex::new(HashMap::new()), connect_timeout, statement_timeout }
    }

    fn pool(&self, tool: &str, fingerprint: &str, admin_url: &str) -> Result<PgPool, EngineError> {
        let mut pools = self.pools.lock().map_err(|_| EngineError::new("engine state poisoned"))?;
        if let Some((fp, p)) = pools.get(tool)
            && fp == fingerprint
        {
            return Ok(p.clone());
        }
        let ms = format!("{}ms", self.statement_timeout.as_millis());
        let opts = options(admin_url)?
            .application_name("remit")
            .options([("statement_timeout", ms.as_str()), ("lock_timeout", ms.as_str())]);
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

/// The admin URL's options. Never echoes the URL: it holds the admin password.
fn options(admin_url: &str) -> Result<PgConnectOptions, EngineError> {
    PgConnectOptions::from_str(admin_url).map_err(|_| EngineError::new("the admin secret is not a postgres:// URL"))
}

fn db_err(e: sqlx::Error) -> EngineError {
    match e {
        sqlx::Error::Database(d) => EngineError {
            exists: d.code().as_deref() == Some("42710"),
            message: format!("postgres: {}", remit_core::lease::error_text(d.message())),
        },
        sqlx::Error::PoolTimedOut => EngineError::new("postgres: no connection within the connect timeout"),
        sqlx::Error::Io(e) => EngineError::new(format!("postgres unreachable: {e}")),
        sqlx::Error::Tls(_) => EngineError::new("postgres: TLS failed"),
        e => EngineError::new(format!("postgres: {}", remit_core::lease::error_text(&e.to_string()))),
    }
}

/// Runs one statement Remit built (extended protocol: exactly one statement, never cached).
async fn exec(c: &mut sqlx::PgConnection, sql: &str) -> Result<(), EngineError> {
    sqlx::query(sql).persistent(false).execute(c).await.map(|_| ()).map_err(db_err)
}

/// Takes the tool's transaction-scoped advisory lock: one tool's logins are made and dropped
/// one at a time (concurrent `GRANT`s and `DROP OWNED`s on one object fail with "tuple
/// concurrently updated").
async fn lock_tool(c: &mut sqlx::PgConnection, tool: &str) -> Result<(), EngineError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("remit-engine:{tool}"))
        .execute(c)
        .await
        .map(|_| ())
        .map_err(db_err)
}

async fn revoke_one(pool: &PgPool, tool: &str, role: &str) -> Result<(), EngineError> {
    if !is_role_name(role) {
        return Err(EngineError::new(format!("`{role}` is not a role Remit made; refusing to touch it")));
    }
    let mut c = pool.acquire().await.map_err(db_err)?;
    let q = quote_ident(role);
    // Under the tool's lock, which a login being made holds until it commits: a role not
    // found here is really not there (not merely uncommitted). No new session from then on.
    let mut tx = sqlx::Connection::begin(&mut *c).await.map_err(db_err)?;
    lock_tool(&mut tx, tool).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    if exists.is_none() {
        return tx.commit().await.map_err(db_err);
    }
    exec(&mut tx, &format!("ALTER ROLE {q} NOLOGIN")).await?;
    tx.commit().await.map_err(db_err)?;
    // End the sessions it has (waiting up to 5 s for each to go, so `DROP OWNED` does not
    // queue behind a dying session's locks).
    sqlx::query(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
    )
    .bind(role)
    .execute(&mut *c)
    .await
    .map_err(db_err)?;
    let mut tx = sqlx::Connection::begin(&mut *c).await.map_err(db_err)?;
    lock_tool(&mut tx, tool).await?;
    exec(&mut tx, &format!("DROP OWNED BY {q}")).await?;
    exec(&mut tx, &format!("DROP ROLE {q}")).await?;
    tx.commit().await.map_err(db_err)
}

#[async_trait]
impl Engine for PostgresEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgres
    }

    fn target(&self, admin_url: &str) -> Result<String, EngineError> {
        let o = options(admin_url)?;
        Ok(format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(o.get_username())))
    }

    async fn create(&self, l: NewLogin<'_>) -> Result<(), EngineError> {
        if !is_role_name(l.role) {
            return Err(EngineError::new("bad role name"));
        }
        let pool = self.pool(l.tool.as_str(), l.admin_fingerprint, l.admin_url)?;
        let secs = u64::try_from(l.until.0.div_euclid(1000)).map_err(|_| EngineError::new("bad expiry"))?;
        let until = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        let mut tx = pool.begin().await.map_err(db_err)?;
        lock_tool(&mut tx, l.tool.as_str()).await?;
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
        // One connection first: a database that is down fails the batch once, not per role.
        if let Err(e) = pool.acquire().await.map_err(db_err) {
            return roles.iter().map(|_| Err(e.clone())).collect();
        }
        let owned: Vec<String> = roles.to_vec();
        let tool = admin.tool.to_string();
        futures_util::stream::iter(owned)
            .map(move |r| {
                let (pool, tool) = (pool.clone(), tool.clone());
                async move { revoke_one(&pool, &tool, &r).await }
            })
            .buffered(POOL_SIZE as usize)
            .collect()
            .await
    }
}
