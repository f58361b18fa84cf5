//! The embedded SQLite backend.
//!
//! One file in the data directory, WAL mode, `synchronous=FULL`: a commit is on disk before
//! its caller hears "ok". Writes go to a single writer thread that takes every job waiting
//! in its queue into one transaction (group commit): under load a hundred task starts share
//! one fsync instead of paying one each, without weakening durability. Each job runs inside
//! its own savepoint, so one failing job rolls back alone. Reads use a small pool of
//! read-only connections on tokio's blocking threads.

pub(crate) mod rows;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use remit_core::audit::{AuditEvent, AuditRecord, seal};
use remit_core::time::{Clock, SystemClock};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{Semaphore, oneshot};

use crate::{Change, Feed, Result, Store, StoreError};
pub(crate) use rows::map_err;

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
    pub(crate) clock: Arc<dyn Clock>,
    /// Committed changes, announced to commit hooks and subscribers in this process.
    pub(crate) feed: Feed,
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
        let head = load_head(&wconn)?;
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
            feed: Feed::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit is durable and
    /// the changes `f` stated ([`WriteCtx::changed`]) are announced.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel::<(Result<R>, Vec<Change>)>();
        let job: Job = Box::new(move |ctx| {
            let r = f(ctx);
            let ok = r.is_ok();
            let changes = std::mem::take(&mut ctx.changes);
            let done: Completion = Box::new(move |commit: Result<()>| {
                let _ = tx.send((commit.and(r), changes));
            });
            (ok, done)
        });
        self.writer.send(job).map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        let (r, changes) = rx.await.map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        if r.is_ok() {
            self.feed.publish(&changes);
        }
        r
    }

    /// Runs `f` on a pooled read-only connection, on the calling thread.
    ///
    /// Reads are point lookups by key on a WAL database (they never wait for the writer)
    /// and take microseconds, so they run inline: handing each to a blocking thread cost
    /// more than the query (two context switches per read on a 2-core machine).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
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
                let (ok, d) = job(&mut WriteCtx { conn: &tx, head: &mut head, changes: Vec::new() });
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

/// The audit chain head as the writer last committed (or is about to commit) it.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The writer's view inside one open transaction.
pub struct WriteCtx<'a> {
    pub conn: &'a Connection,
    pub head: &'a mut Head,
    /// What this job changed, announced once the transaction commits.
    pub changes: Vec<Change>,
}

impl WriteCtx<'_> {
    /// States a change this job makes (announced after the commit).
    pub fn changed(&mut self, c: impl IntoIterator<Item = Change>) {
        self.changes.extend(c);
    }

    /// Seals `e` onto the chain and inserts it.
    pub fn audit(&mut self, e: AuditEvent) -> Result<u64> {
        let seq = self.head.seq + 1;
        let (rec, hash) = seal(seq, e, &self.head.hash);
        insert_audit(self.conn, &rec)?;
        *self.head = Head { seq, hash };
        Ok(seq)
    }
}

fn insert_audit(c: &Connection, r: &AuditRecord) -> Result<()> {
    let e = &r.event;
    c.prepare_cached(
        "INSERT INTO audit (seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.seq,
            e.time.0,
            e.actor,
            e.action,
            e.outcome.as_str(),
            e.workflow,
            e.task,
            e.agent,
            e.reason,
            e.detail,
            r.prev_hash,
            r.hash
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

pub fn load_head(c: &Connection) -> Result<Head> {
    let row: Option<(u64, String)> = c
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(map_err)?;
    match row {
        None => Ok(Head { seq: 0, hash: remit_core::audit::GENESIS_HASH }),
        Some((seq, h)) => {
            let hash = crate::hex::decode32(&h)
                .ok_or_else(|| StoreError::Corrupt(format!("audit record {seq} has a bad hash")))?;
            Ok(Head { seq, hash })
        }
    }
}

impl Store for SqliteStore {
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
        "sqlite"
    }
}
