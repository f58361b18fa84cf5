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

mod ops;
mod rows;
pub mod schema;
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::{Clock, SystemClock, UnixMillis};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    AuditFilter, Change, Installation, Result, StartContext, Store, StoreError, StoredKey, TaskFilter, TaskSnapshot,
};
use ops::WriteCtx;
use rows::map_err;

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "remit_changes";
/// Most jobs one group commit takes.
const MAX_BATCH: usize = 512;
/// Jobs queued before callers wait (back-pressure).
const QUEUE: usize = 8192;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type JobFn = Box<dyn for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, (bool, Completion)> + Send>;

/// One queued write. Task starts, the hot path, get their own variant so a batch inserts
/// all of them with one statement instead of one statement and a savepoint each.
enum Job {
    Generic(JobFn),
    CreateTask(Box<ops::NewTask>, oneshot::Sender<Result<()>>),
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
    changes: broadcast::Sender<Change>,
    clock: Arc<dyn Clock>,
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
        let (changes, _) = broadcast::channel(crate::CHANGE_FEED_CAPACITY);
        // Listen before serving, so no change committed after `connect` returns is missed.
        let mut listener = PgListener::connect_with(&pool).await.map_err(map_err)?;
        listener.listen(CHANNEL).await.map_err(map_err)?;
        let listener = tokio::spawn(listen_loop(pool.clone(), listener, changes.clone()));
        let (tx, rx) = mpsc::channel(QUEUE);
        let last_batch_error = Arc::new(Mutex::new(None));
        tokio::spawn(writer_loop(pool.clone(), rx, last_batch_error.clone()));
        Ok(PgStore { pool, writer: tx, changes, clock, last_batch_error, listener })
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn publish(&self, changes: Vec<Change>) {
        for c in changes {
            let _ = self.changes.send(c);
        }
    }

    /// Runs `f` in the writer's next transaction; resolves after `COMMIT` returned.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteCtx) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: JobFn = Box::new(move |ctx| {
            Box::pin(async move {
                let r = f(ctx).await;
                let ok = r.is_ok();
                let done: Completion = Box::new(move |commit: Result<()>| {
                    let _ = tx.send(commit.and(r));
                });
                (ok, done)
            })
        });
        self.writer
            .send(Job::Generic(job))
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
    let head = ops::lock_head(&mut tx).await?;
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
        let outcomes = ops::create_tasks(&mut ctx, tasks.iter().map(|(t, _)| &**t).collect()).await?;
        for ((_, reply), outcome) in tasks.into_iter().zip(outcomes) {
            done.push(Box::new(move |commit: Result<()>| {
                let _ = reply.send(commit.and(outcome));
            }));
        }
    }
    ops::flush(&mut ctx).await?;
    ctx.tx.commit().await.map_err(map_err)
}

/// Forwards notifications to subscribers; on a lost connection announces `FeedLost`,
/// reconnects with back-off, and announces `Resync` once listening again.
async fn listen_loop(pool: PgPool, mut listener: PgListener, out: broadcast::Sender<Change>) {
    loop {
        while let Ok(Some(n)) = listener.try_recv().await {
            for c in Change::decode_all(n.payload()) {
                let _ = out.send(c);
            }
        }
        tracing::warn!("postgres change feed lost; caches bypassed until it is back");
        let _ = out.send(Change::FeedLost);
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
        let _ = out.send(Change::Resync);
    }
}

/// Runs a read on a pooled connection; retried once if the connection turned out to be dead
/// (e.g. the database restarted since it was pooled). Reads are idempotent.
macro_rules! read {
    ($self:ident, |$c:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let r = match $self.pool.acquire().await.map_err(map_err) {
                Ok(mut conn) => {
                    let $c: &mut PgConnection = &mut conn;
                    $body.await
                }
                Err(e) => Err(e),
            };
            match r {
                Err(StoreError::Unavailable(_)) if attempt == 0 => attempt += 1,
                r => break r,
            }
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn installation(&self) -> Result<Option<Installation>> {
        read!(self, |c| ops::installation(c))
    }
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::install(c, inst, keys, audit))).await
    }
    async fn keys(&self) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        read!(self, |c| ops::keys(c, now))
    }
    async fn rotate_key(&self, new: StoredKey, old: crate::RetiringKey, audit: AuditEvent) -> Result<u64> {
        let seq = self.write(move |c| Box::pin(ops::rotate_key(c, new, old, audit))).await?;
        self.publish(vec![Change::Keys]);
        Ok(seq)
    }
    async fn reseal(&self, seal: crate::Reseal, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::reseal(c, seal, audit))).await?;
        self.publish(vec![Change::Keys]);
        Ok(())
    }
    async fn bundle_sequence(&self) -> Result<u64> {
        read!(self, |c| ops::bundle_sequence(c))
    }
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::create_workflow(c, wf, audit))).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        read!(self, |c| ops::workflow(c, name))
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        read!(self, |c| ops::list_workflows(c))
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(ops::set_workflow_state(c, n, from, to, audit))).await?;
        self.publish(vec![Change::Workflow(name.clone())]);
        Ok(())
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::create_agent(c, agent, audit))).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        read!(self, |c| ops::agent(c, name))
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        read!(self, |c| ops::list_agents(c))
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(ops::set_agent_state(c, n, from, to, audit))).await?;
        self.publish(vec![Change::Agent(name.clone())]);
        Ok(())
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::create_join_token(c, jt, audit))).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        read!(self, |c| ops::join_token(c, id))
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| Box::pin(ops::redeem_join_token(c, id, instance, audit))).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        read!(self, |c| ops::instance(c, id))
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let i = id.clone();
        self.write(move |c| Box::pin(ops::renew_instance(c, i, expires_at, audit))).await?;
        self.publish(vec![Change::Instance(id.clone())]);
        Ok(())
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        read!(self, |c| ops::start_context(c, workflow, agent, instance))
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let job = Job::CreateTask(Box::new(ops::NewTask { task, audit }), tx);
        self.writer.send(job).await.map_err(|_| StoreError::Unavailable("postgres writer stopped".into()))?;
        self.answer(rx).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        read!(self, |c| ops::task(c, id))
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        read!(self, |c| ops::task_snapshot(c, id))
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        let f = &filter;
        read!(self, |c| ops::list_tasks(c, f))
    }
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport> {
        let (i, actor, reason) = (id.clone(), actor.to_owned(), reason.map(str::to_owned));
        let report = self.write(move |c| Box::pin(ops::end_task(c, i, to, at, actor, reason))).await?;
        self.publish(Change::of_kill(&KillTarget::Task(id.clone()), &report));
        Ok(report)
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        let target = kill.target.clone();
        let report = self.write(move |c| Box::pin(ops::kill(c, kill))).await?;
        self.publish(Change::of_kill(&target, &report));
        Ok(report)
    }
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                for e in events {
                    c.audit(e)?;
                }
                Ok(())
            })
        })
        .await
    }
    async fn audit_head(&self) -> Result<(u64, String)> {
        read!(self, |c| ops::audit_head(c))
    }
    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        let f = &filter;
        read!(self, |c| ops::list_audit(c, f))
    }
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.write(move |c| Box::pin(async move { ops::put_checkpoint(c.conn(), cp).await })).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        read!(self, |c| ops::checkpoints(c))
    }
    async fn put_policy_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        let by = by.to_owned();
        let v = self.write(move |c| Box::pin(ops::put_policy_set(c, bundle, at, by, audit))).await?;
        self.publish(vec![Change::Policy]);
        Ok(v)
    }
    async fn active_policy_set(&self) -> Result<Option<crate::StoredPolicySet>> {
        read!(self, |c| ops::active_policy_set(c))
    }
    async fn put_entities(&self, entities: Vec<crate::StoredEntity>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::put_entities(c, entities, audit))).await?;
        self.publish(vec![Change::Entities]);
        Ok(())
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<crate::StoredEntity>> {
        read!(self, |c| ops::entity(c, etype, id_or_alias))
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<crate::StoredEntity>> {
        let a = after.as_deref();
        read!(self, |c| ops::list_entities(c, etype, a, limit))
    }
    async fn create_approval(&self, a: crate::Approval, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(ops::create_approval(c, a, audit))).await
    }
    async fn approval(&self, id: &str) -> Result<Option<crate::Approval>> {
        read!(self, |c| ops::approval(c, id))
    }
    async fn list_approvals(&self, state: Option<String>, limit: u32) -> Result<Vec<crate::Approval>> {
        let st = state.as_deref();
        read!(self, |c| ops::list_approvals(c, st, limit))
    }
    async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: &str,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()> {
        let (id, by, reason) = (id.to_owned(), by.to_owned(), reason.to_owned());
        self.write(move |c| Box::pin(ops::decide_approval(c, id, approve, by, reason, at, audit))).await
    }
    async fn consume_approval(
        &self,
        id: &str,
        digest: &str,
        policy_version: u64,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()> {
        let (id, digest) = (id.to_owned(), digest.to_owned());
        self.write(move |c| Box::pin(ops::consume_approval(c, id, digest, policy_version, at, audit))).await
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let (task, tool) = (task.to_string(), tool.to_owned());
        self.write(move |c| Box::pin(ops::record_tool_use(c, task, tool, at, audit))).await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        let task = task.to_string();
        read!(self, |c| ops::tools_used(c, &task))
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
    fn backend(&self) -> &'static str {
        "postgres"
    }
}
