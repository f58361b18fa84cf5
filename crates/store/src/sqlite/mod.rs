//! The embedded SQLite backend.
//!
//! One file in the data directory, WAL mode, `synchronous=FULL`: a commit is on disk before
//! its caller hears "ok". Writes go to a single writer thread that takes every job waiting
//! in its queue into one transaction (group commit): under load a hundred task starts share
//! one fsync instead of paying one each, without weakening durability. Each job runs inside
//! its own savepoint, so one failing job rolls back alone. Reads use a small pool of
//! read-only connections on tokio's blocking threads.

mod ops;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::{Clock, SystemClock, UnixMillis};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use crate::{
    AuditFilter, Change, Installation, Result, StartContext, Store, StoreError, StoredKey, TaskFilter, TaskSnapshot,
};
use ops::{Head, WriteCtx};
use rows::map_err;

/// Most jobs one group commit takes.
const MAX_BATCH: usize = 512;
/// Read-only connections in the pool.
const READERS: usize = 8;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Completion) + Send>;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    /// Queue into the writer thread; dropping the store closes it and the thread exits.
    writer: mpsc::Sender<Job>,
    /// Idle read connections; the semaphore bounds how many are in use.
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Arc<Semaphore>,
    path: PathBuf,
    /// Used only to decide which keys are past `retire_after`.
    clock: Arc<dyn Clock>,
    /// Committed changes, for cache invalidation in this process.
    changes: tokio::sync::broadcast::Sender<Change>,
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let c = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(5)).map_err(map_err)?;
    c.pragma_update(None, "foreign_keys", "ON").map_err(map_err)?;
    // Reads through a memory map skip a read() syscall and a copy per page; 64 MiB of page
    // cache per connection keeps the hot indexes resident.
    c.pragma_update(None, "mmap_size", 256 * 1024 * 1024).map_err(map_err)?;
    c.pragma_update(None, "cache_size", -64 * 1024).map_err(map_err)?;
    if !read_only {
        c.pragma_update(None, "journal_mode", "WAL").map_err(map_err)?;
        c.pragma_update(None, "synchronous", "FULL").map_err(map_err)?;
    }
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut wconn = open_conn(&path, false)?;
        schema::migrate(&mut wconn)?;
        let head = ops::load_head(&wconn)?;
        let readers = (0..READERS).map(|_| open_conn(&path, true)).collect::<Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("remit-sqlite-writer".into())
            .spawn(move || writer_loop(wconn, head, rx))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(Mutex::new(readers)),
            read_permits: Arc::new(Semaphore::new(READERS)),
            path,
            clock,
            changes: tokio::sync::broadcast::channel(crate::CHANGE_FEED_CAPACITY).0,
        })
    }

    fn publish(&self, changes: Vec<Change>) {
        for c in changes {
            let _ = self.changes.send(c);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit is durable.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |ctx| {
            let r = f(ctx);
            let ok = r.is_ok();
            let done: Completion = Box::new(move |commit: Result<()>| {
                let _ = tx.send(commit.and(r));
            });
            (ok, done)
        });
        self.writer.send(job).map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?
    }

    /// Runs `f` on a pooled read-only connection, on the calling thread.
    ///
    /// Reads are point lookups by key on a WAL database (they never wait for the writer)
    /// and take microseconds, so they run inline: handing each to a blocking thread cost
    /// more than the query (two context switches per read on a 2-core machine).
    async fn read<R: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<R> + Send + 'static) -> Result<R> {
        let _permit =
            self.read_permits.acquire().await.map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let conn = self.readers.lock().map_err(|_| StoreError::Internal("reader pool poisoned".into()))?.pop();
        let conn = conn.ok_or_else(|| StoreError::Internal("reader pool empty".into()))?;
        let r = f(&conn);
        if let Ok(mut p) = self.readers.lock() {
            p.push(conn);
        }
        r
    }
}

fn writer_loop(mut conn: Connection, mut head: Head, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let committed = head;
        let mut done: Vec<Completion> = Vec::with_capacity(batch.len());
        let result = (|| -> Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_err)?;
            // Cached statements: parsing these per job showed up in profiles.
            let exec = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([])).map_err(map_err);
            for job in batch.drain(..) {
                exec("SAVEPOINT job")?;
                let before = head;
                let (ok, d) = job(&mut WriteCtx { conn: &tx, head: &mut head });
                if ok {
                    exec("RELEASE job")?;
                } else {
                    exec("ROLLBACK TO job")?;
                    exec("RELEASE job")?;
                    head = before;
                }
                done.push(d);
            }
            tracing::trace!(jobs = done.len(), "sqlite group commit");
            tx.commit().map_err(map_err)
        })();
        if let Err(e) = &result {
            tracing::error!(error = %e, jobs = done.len(), "sqlite group commit failed");
            head = committed;
        }
        // Jobs that never ran (the transaction failed to begin) are answered too.
        for _ in batch.drain(..) {}
        for d in done {
            d(result.clone());
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn installation(&self) -> Result<Option<Installation>> {
        self.read(ops::installation).await
    }
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::install(c, inst, keys, audit)).await
    }
    async fn keys(&self) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        self.read(move |c| ops::keys(c, now)).await
    }
    async fn rotate_key(&self, new: StoredKey, old: crate::RetiringKey, audit: AuditEvent) -> Result<u64> {
        let seq = self.write(move |c| ops::rotate_key(c, new, old, audit)).await?;
        self.publish(vec![Change::Keys]);
        Ok(seq)
    }
    async fn reseal(&self, seal: crate::Reseal, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::reseal(c, seal, audit)).await?;
        self.publish(vec![Change::Keys]);
        Ok(())
    }
    async fn bundle_sequence(&self) -> Result<u64> {
        self.read(ops::bundle_sequence).await
    }
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::create_workflow(c, wf, audit)).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        let name = name.clone();
        self.read(move |c| ops::workflow(c, &name)).await
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        self.read(ops::list_workflows).await
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| ops::set_workflow_state(c, &n, from, to, audit)).await?;
        self.publish(vec![Change::Workflow(name.clone())]);
        Ok(())
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::create_agent(c, agent, audit)).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        let name = name.clone();
        self.read(move |c| ops::agent(c, &name)).await
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.read(ops::list_agents).await
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| ops::set_agent_state(c, &n, from, to, audit)).await?;
        self.publish(vec![Change::Agent(name.clone())]);
        Ok(())
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::create_join_token(c, jt, audit)).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        let id = id.clone();
        self.read(move |c| ops::join_token(c, &id)).await
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| ops::redeem_join_token(c, &id, instance, audit)).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let id = id.clone();
        self.read(move |c| ops::instance(c, &id)).await
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let i = id.clone();
        self.write(move |c| ops::renew_instance(c, &i, expires_at, audit)).await?;
        self.publish(vec![Change::Instance(id.clone())]);
        Ok(())
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        let (w, a, i) = (workflow.clone(), agent.clone(), instance.cloned());
        self.read(move |c| ops::start_context(c, &w, &a, i.as_ref())).await
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::create_task(c, task, audit)).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = id.clone();
        self.read(move |c| ops::task(c, &id)).await
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        let id = id.clone();
        self.read(move |c| ops::task_snapshot(c, &id)).await
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        self.read(move |c| ops::list_tasks(c, &filter)).await
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
        let report = self.write(move |c| ops::end_task(c, &i, to, at, &actor, reason.as_deref())).await?;
        self.publish(Change::of_kill(&remit_core::model::KillTarget::Task(id.clone()), &report));
        Ok(report)
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        let target = kill.target.clone();
        let report = self.write(move |c| ops::kill(c, kill)).await?;
        self.publish(Change::of_kill(&target, &report));
        Ok(report)
    }
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            for e in events {
                c.audit(e)?;
            }
            Ok(())
        })
        .await
    }
    async fn audit_head(&self) -> Result<(u64, String)> {
        self.read(|c| {
            let h = ops::load_head(c)?;
            Ok((h.seq, remit_core_hex(&h.hash)))
        })
        .await
    }
    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        self.read(move |c| ops::list_audit(c, &filter)).await
    }
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.write(move |c| ops::put_checkpoint(c.conn, &cp)).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.read(ops::checkpoints).await
    }
    async fn put_policy_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        let by = by.to_owned();
        let v = self.write(move |c| ops::put_policy_set(c, &bundle, at, &by, audit)).await?;
        self.publish(vec![Change::Policy]);
        Ok(v)
    }
    async fn active_policy_set(&self) -> Result<Option<crate::StoredPolicySet>> {
        self.read(ops::active_policy_set).await
    }
    async fn put_entities(&self, entities: Vec<crate::StoredEntity>, audit: AuditEvent) -> Result<()> {
        let at = audit.time;
        self.write(move |c| ops::put_entities(c, &entities, at, audit)).await?;
        self.publish(vec![Change::Entities]);
        Ok(())
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<crate::StoredEntity>> {
        let (t, k) = (etype.to_owned(), id_or_alias.to_owned());
        self.read(move |c| ops::entity(c, &t, &k)).await
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<crate::StoredEntity>> {
        let t = etype.to_owned();
        self.read(move |c| ops::list_entities(c, &t, after.as_deref(), limit)).await
    }
    async fn create_approval(&self, a: crate::Approval, audit: AuditEvent) -> Result<()> {
        self.write(move |c| ops::create_approval(c, &a, audit)).await
    }
    async fn approval(&self, id: &str) -> Result<Option<crate::Approval>> {
        let id = id.to_owned();
        self.read(move |c| ops::approval(c, &id)).await
    }
    async fn list_approvals(&self, state: Option<String>, limit: u32) -> Result<Vec<crate::Approval>> {
        self.read(move |c| ops::list_approvals(c, state.as_deref(), limit)).await
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
        self.write(move |c| ops::decide_approval(c, &id, approve, &by, &reason, at, audit)).await
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
        self.write(move |c| ops::consume_approval(c, &id, &digest, policy_version, at, audit)).await
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let (task, tool) = (task.to_string(), tool.to_owned());
        self.write(move |c| ops::record_tool_use(c, &task, &tool, at, audit)).await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        let task = task.to_string();
        self.read(move |c| ops::tools_used(c, &task)).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

fn remit_core_hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
