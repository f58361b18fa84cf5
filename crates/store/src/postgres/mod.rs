//! The PostgreSQL backend: shared state for many stateless Remit replicas.
//!
//! - **Writes** go to one writer task per replica, which takes every job waiting in its queue
//!   into one transaction (group commit), each job inside its own savepoint so one failure
//!   rolls back alone.
//! - **One audit chain across replicas.** Each write transaction first locks the single
//!   row of `audit_head` (`SELECT … FOR UPDATE`), seals its records onto that head, inserts
//!   them and moves the head before it commits. Write transactions from all replicas are
//!   therefore serialized in one total order, and the chain has no forks or gaps. Batching
//!   is what keeps that lock cheap: a replica holds it once per batch, not once per task.
//! - **Changes fan out** with `NOTIFY remit_changes` inside the same transaction, so a
//!   notification is delivered if and only if its change committed. Each replica keeps one
//!   `LISTEN` connection; when it drops, subscribers get [`Change::FeedLost`] (stop trusting
//!   caches) and, once listening again, [`Change::Resync`] (drop every cached entry).
//! - **Faults.** A lost database answers [`StoreError::Unavailable`] (HTTP 503); the pool
//!   reconnects by itself. A write is acknowledged only after `COMMIT` returned, and
//!   PostgreSQL's `synchronous_commit` makes that durable.
//!
//! This module is the machinery; the SQL of each area lives with the area
//! (`crate::<area>::postgres`), as `impl <Area>Store for PgStore`.

pub(crate) mod rows;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remit_core::audit::{AuditEvent, AuditRecord, seal};
use remit_core::time::{Clock, SystemClock};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::{Change, Feed, Result, Store, StoreError};
pub(crate) use rows::map_err;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "remit_changes";
/// Most jobs one group commit takes.
const MAX_BATCH: usize = 512;
/// Jobs queued before callers wait (back-pressure).
const QUEUE: usize = 8192;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type JobFn = Box<dyn for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, (bool, Completion)> + Send>;

/// One queued write. Task starts, the hot path, get their own variant so a batch inserts
/// all of them with one statement instead of one statement and a savepoint each.
enum Job {
    Generic(JobFn),
    CreateTask(Box<crate::identity::postgres::NewTask>, oneshot::Sender<Result<()>>),
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering "unavailable".
    pub acquire_timeout: Duration,
    /// Server-side limit on any one statement.
    pub statement_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(15),
        }
    }
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
    /// Changes committed here (announced at once) and by other replicas (from `LISTEN`).
    pub(crate) feed: Arc<Feed>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The last error that failed a whole batch, to explain jobs that never ran.
    last_batch_error: Arc<Mutex<Option<StoreError>>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Removes the password from a connection URL, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl PgStore {
    /// Connects, migrates and starts the writer and the change listener.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgOptions::default(), Arc::new(SystemClock)).await
    }

    pub async fn connect_with(url: &str, opts: PgOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::connect_migrating(url, opts, clock, schema::MIGRATIONS).await
    }

    /// As [`PgStore::connect_with`], applying only `migrations` (tests build "older" databases).
    pub async fn connect_migrating(
        url: &str,
        opts: PgOptions,
        clock: Arc<dyn Clock>,
        migrations: &[&str],
    ) -> Result<Self> {
        let bad_url =
            |e: sqlx::Error| StoreError::Unavailable(format!("invalid postgres url `{}`: {e}", redact_url(url)));
        let timeout_ms = opts.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)
            .map_err(bad_url)?
            .application_name("remit")
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A broken connection fails its request (503) and is dropped by the pool; a
            // ping before every checkout would cost a round trip on every request.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {}: {}", redact_url(url), map_err(e))))?;
        schema::migrate(&pool, migrations).await?;
        let feed = Arc::new(Feed::default());
        // Listen before serving, so no change committed after `connect` returns is missed.
        let mut listener = PgListener::connect_with(&pool).await.map_err(map_err)?;
        listener.listen(CHANNEL).await.map_err(map_err)?;
        let listener = tokio::spawn(listen_loop(pool.clone(), listener, feed.clone()));
        let (tx, rx) = mpsc::channel(QUEUE);
        let last_batch_error = Arc::new(Mutex::new(None));
        tokio::spawn(writer_loop(pool.clone(), rx, last_batch_error.clone()));
        Ok(PgStore { pool, writer: tx, feed, clock, last_batch_error, listener })
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `f` in the writer's next transaction; resolves after `COMMIT` returned and the
    /// changes `f` stated ([`WriteCtx::changed`]) are announced here (other replicas hear of
    /// them by `NOTIFY`, sent in the same transaction).
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<(R, Vec<Change>)>>();
        let job: JobFn = Box::new(move |ctx| {
            Box::pin(async move {
                let before = ctx.changes.len();
                let r = f(ctx).await;
                let ok = r.is_ok();
                let mine = ctx.changes.get(before..).map(<[Change]>::to_vec).unwrap_or_default();
                let done: Completion = Box::new(move |commit: Result<()>| {
                    let _ = tx.send(commit.and(r).map(|r| (r, mine)));
                });
                (ok, done)
            })
        });
        self.writer
            .send(Job::Generic(job))
            .await
            .map_err(|_| StoreError::Unavailable("postgres writer stopped".into()))?;
        let (r, changes) = self.answer(rx).await?;
        self.feed.publish(&changes);
        Ok(r)
    }

    /// Queues a task start on the writer's fast path (one statement for the whole batch).
    pub(crate) async fn write_task(&self, t: crate::identity::postgres::NewTask) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::CreateTask(Box::new(t), tx))
            .await
            .map_err(|_| StoreError::Unavailable("postgres writer stopped".into()))?;
        self.answer(rx).await
    }

    /// Waits for a job's answer; a job dropped unanswered means its batch failed first.
    async fn answer<R>(&self, rx: oneshot::Receiver<Result<R>>) -> Result<R> {
        match rx.await {
            Ok(r) => r,
            // The batch failed before this job ran (e.g. the database went away).
            Err(_) => Err(self
                .last_batch_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_else(|| StoreError::Unavailable("postgres writer stopped".into()))),
        }
    }
}

async fn writer_loop(pool: PgPool, mut rx: mpsc::Receiver<Job>, last_error: Arc<Mutex<Option<StoreError>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut done: Vec<Completion> = Vec::with_capacity(batch.len());
        let result = run_batch(&pool, &mut batch, &mut done).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, jobs = done.len() + batch.len(), "postgres group commit failed");
            if let Ok(mut g) = last_error.lock() {
                *g = Some(e.clone());
            }
        }
        // Jobs that never ran are dropped; their callers read `last_error`.
        batch.clear();
        for d in done {
            d(result.clone());
        }
    }
}

async fn exec(ctx: &mut WriteCtx, sql: &'static str) -> Result<()> {
    sqlx::query(sql).execute(ctx.conn()).await.map_err(map_err)?;
    Ok(())
}

async fn run_batch(pool: &PgPool, batch: &mut Vec<Job>, done: &mut Vec<Completion>) -> Result<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    let head = lock_head(&mut tx).await?;
    let mut ctx = WriteCtx { tx, head, records: Vec::new(), changes: Vec::new() };
    let mut generic = Vec::new();
    let mut tasks = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Generic(f) => generic.push(f),
            Job::CreateTask(t, reply) => tasks.push((t, reply)),
        }
    }
    // A lone job needs no savepoint: if it fails, the whole transaction is rolled back.
    let single = generic.len() == 1 && tasks.is_empty();
    for job in generic {
        if !single {
            exec(&mut ctx, "SAVEPOINT job").await?;
        }
        let (head, records, changes) = (ctx.head, ctx.records.len(), ctx.changes.len());
        let (ok, d) = job(&mut ctx).await;
        done.push(d);
        if !ok {
            ctx.head = head;
            ctx.records.truncate(records);
            ctx.changes.truncate(changes);
            if single {
                return ctx.tx.rollback().await.map_err(map_err);
            }
            exec(&mut ctx, "ROLLBACK TO SAVEPOINT job").await?;
        }
        if !single {
            exec(&mut ctx, "RELEASE SAVEPOINT job").await?;
        }
    }
    if !tasks.is_empty() {
        // Concurrent requests in one batch may be ordered any way: task starts go after the
        // batch's other writes, so a kill in the same batch is seen by the liveness check.
        let outcomes =
            crate::identity::postgres::create_tasks(&mut ctx, tasks.iter().map(|(t, _)| &**t).collect()).await?;
        for ((_, reply), outcome) in tasks.into_iter().zip(outcomes) {
            done.push(Box::new(move |commit: Result<()>| {
                let _ = reply.send(commit.and(outcome));
            }));
        }
    }
    flush(&mut ctx).await?;
    ctx.tx.commit().await.map_err(map_err)
}

/// Forwards notifications to subscribers; on a lost connection announces `FeedLost`,
/// reconnects with back-off, and announces `Resync` once listening again.
async fn listen_loop(pool: PgPool, mut listener: PgListener, out: Arc<Feed>) {
    loop {
        while let Ok(Some(n)) = listener.try_recv().await {
            for c in Change::decode_all(n.payload()) {
                out.forward(c);
            }
        }
        tracing::warn!("postgres change feed lost; caches bypassed until it is back");
        out.forward(Change::FeedLost);
        let mut backoff = Duration::from_millis(50);
        listener = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            let Ok(mut l) = PgListener::connect_with(&pool).await else { continue };
            if l.listen(CHANNEL).await.is_ok() {
                break l;
            }
        };
        tracing::info!("postgres change feed back; caches resynchronized");
        out.forward(Change::Resync);
    }
}

/// Runs a read on a pooled connection; retried once if the connection turned out to be dead
/// (e.g. the database restarted since it was pooled). Reads are idempotent.
macro_rules! pg_read {
    ($self:ident, |$c:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let r = match $self.pool().acquire().await.map_err($crate::postgres::map_err) {
                Ok(mut conn) => {
                    let $c: &mut sqlx::PgConnection = &mut conn;
                    $body.await
                }
                Err(e) => Err(e),
            };
            match r {
                Err($crate::StoreError::Unavailable(_)) if attempt == 0 => attempt += 1,
                r => break r,
            }
        }
    }};
}
pub(crate) use pg_read;

/// The audit chain head.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// One batch's open transaction and what it will append before committing.
pub struct WriteCtx {
    pub tx: Transaction<'static, Postgres>,
    pub head: Head,
    pub records: Vec<AuditRecord>,
    pub changes: Vec<Change>,
}

impl WriteCtx {
    /// States a change this job makes (announced after the commit, and to other replicas).
    pub fn changed(&mut self, c: impl IntoIterator<Item = Change>) {
        self.changes.extend(c);
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Seals `e` onto the chain; it is inserted with the rest of the batch.
    pub fn audit(&mut self, e: AuditEvent) -> Result<u64> {
        let seq = self.head.seq + 1;
        let (rec, hash) = seal(seq, e, &self.head.hash);
        self.records.push(rec);
        self.head = Head { seq, hash };
        Ok(seq)
    }
}

pub(crate) fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Internal(format!("{v} does not fit a BIGINT")))
}

/// Locks the chain head for this transaction and reads it.
pub async fn lock_head(tx: &mut PgConnection) -> Result<Head> {
    let (seq, hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    let hash = crate::hex::decode32(&hash).ok_or_else(|| StoreError::Corrupt("audit head hash is malformed".into()))?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit head seq is negative".into()))?;
    Ok(Head { seq, hash })
}

/// Inserts the batch's audit records, moves the head, and queues the batch's notification
/// (delivered by PostgreSQL only if and when the transaction commits).
pub async fn flush(ctx: &mut WriteCtx) -> Result<()> {
    if !ctx.records.is_empty() {
        let n = ctx.records.len();
        let mut seq = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let (mut actor, mut action, mut outcome, mut detail, mut prev, mut hash) =
            (Vec::with_capacity(n), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut wf, mut task, mut agent, mut reason) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in ctx.records.drain(..) {
            seq.push(i64_of(r.seq)?);
            time.push(r.event.time.0);
            actor.push(r.event.actor);
            action.push(r.event.action);
            outcome.push(r.event.outcome.as_str().to_owned());
            wf.push(r.event.workflow);
            task.push(r.event.task);
            agent.push(r.event.agent);
            reason.push(r.event.reason);
            detail.push(r.event.detail);
            prev.push(r.prev_hash);
            hash.push(r.hash);
        }
        sqlx::query(
            "INSERT INTO audit (seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])",
        )
        .bind(seq)
        .bind(time)
        .bind(actor)
        .bind(action)
        .bind(outcome)
        .bind(wf)
        .bind(task)
        .bind(agent)
        .bind(reason)
        .bind(detail)
        .bind(prev)
        .bind(hash)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
        let head_hash = hex::encode(ctx.head.hash);
        let head_seq = i64_of(ctx.head.seq)?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head_seq)
            .bind(head_hash)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    if !ctx.changes.is_empty() {
        let payload = Change::encode_all(&ctx.changes);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

impl Store for PgStore {
    fn keys(&self) -> &dyn crate::keys::KeyStore {
        self
    }
    fn identity(&self) -> &dyn crate::identity::IdentityStore {
        self
    }
    fn audit(&self) -> &dyn crate::audit::AuditStore {
        self
    }
    fn policy(&self) -> &dyn crate::policy::PolicyStore {
        self
    }
    fn approvals(&self) -> &dyn crate::approvals::ApprovalStore {
        self
    }
    fn humans(&self) -> &dyn crate::humans::HumanStore {
        self
    }
    fn tools(&self) -> &dyn crate::tools::ToolStore {
        self
    }
    fn workload(&self) -> &dyn crate::workload::WorkloadStore {
        self
    }
    fn secrets(&self) -> &dyn crate::secrets::SecretStore {
        self
    }
    fn leases(&self) -> &dyn crate::leases::LeaseStore {
        self
    }
    fn governance(&self) -> &dyn crate::governance::GovernanceStore {
        self
    }
    fn grants(&self) -> &dyn crate::grants::GrantStore {
        self
    }
    fn scim(&self) -> &dyn crate::scim::ScimStore {
        self
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
    fn on_commit(&self, hook: crate::CommitHook) {
        self.feed.on_commit(hook);
    }
    fn backend(&self) -> &'static str {
        "postgres"
    }
}
