//! Governance and continuous control: what Remit does by itself once identities are issued.
//!
//! - [`tail`]: one job per cluster (a lease on a store row, see
//!   [`remit_store::GovernanceStore::take_job`]) reads the audit log in `seq` order from its
//!   cursor and turns records into Security Event Tokens for every stream that should hear of
//!   them, moving the cursor and queuing the SETs in one transaction — so a restart (or another
//!   replica taking over) neither loses nor repeats a SET. The audit log is the change feed
//!   here: every replica writes to it, so the tail sees the whole cluster's activity.
//! - [`push`]: delivers queued SETs to push streams (RFC 8935), in order, retrying with
//!   backoff; poll streams (RFC 8936) are served by [`ssf`].
//! - [`ssf`]: the Shared Signals transmitter's API; [`sets`]: the SETs themselves (what an audit
//!   record gives receivers, the MACed outbox form, signing at delivery).
//! - [`containment`], [`sharing`]: automatic containment and credential-sharing detection.
//! - [`recert`]: recertification and the job that suspends what is overdue.
//! - [`report`]: least privilege from observed use, and the framework-mapped report.
//! - [`notify`]: signed webhook notices for humans.

pub mod containment;
pub mod notify;
pub mod push;
pub mod receive;
pub mod recert;
pub mod report;
pub mod reuse;
pub mod sets;
pub mod sharing;
pub mod ssf;
pub mod tail;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use remit_core::time::UnixMillis;

/// An audit record's `detail` as JSON (`Null` when it has none).
pub(crate) fn detail(rec: &remit_core::audit::AuditRecord) -> serde_json::Value {
    serde_json::from_str(&rec.event.detail).unwrap_or(serde_json::Value::Null)
}

/// How long a replica holds a job before it must renew it; another replica takes over after.
pub const JOB_HOLD: Duration = Duration::from_secs(10);
/// How often the tail looks for records no change announced (decisions).
pub const TAIL_INTERVAL: Duration = Duration::from_millis(250);

/// The process's governance state.
pub struct State {
    /// This process's name as a job holder.
    pub holder: String,
    /// Long polls waiting per stream (bounded).
    pub(crate) polls: Mutex<HashMap<String, usize>>,
    /// Tokens' first presenters this process has seen.
    pub(crate) bearers: sharing::Bearers,
    /// The containment rules' counters (used by the tail's holder).
    pub(crate) containment: Mutex<remit_core::containment::Evaluator>,
    /// The notification channel, resolved on first use.
    pub(crate) channel: std::sync::OnceLock<Option<notify::Channel>>,
    /// Keys of the transmitters Remit receives signals from.
    pub(crate) transmitters: receive::Transmitters,
}

impl State {
    /// On SQLite one process serves the file (it holds the store's lock), so it is always the
    /// same holder and a restart resumes its jobs at once; on PostgreSQL each process is its
    /// own, and a crashed replica's jobs pass to another once their hold lapses.
    pub fn new(random: &dyn remit_core::random::Random, backend: &str) -> Self {
        let holder = if backend == "sqlite" { "local".to_owned() } else { hex::encode(random.bytes16()) };
        State {
            holder,
            polls: Mutex::new(HashMap::new()),
            bearers: sharing::Bearers::default(),
            containment: Mutex::new(remit_core::containment::Evaluator::default()),
            channel: std::sync::OnceLock::new(),
            transmitters: receive::Transmitters::default(),
        }
    }
}

/// A held job: renewed once half its hold has passed.
pub(crate) struct Held {
    name: &'static str,
    until: Option<UnixMillis>,
    /// The job's cursor as this holder last read or moved it.
    pub(crate) cursor: u64,
}

impl Held {
    pub(crate) fn new(name: &'static str) -> Self {
        Held { name, until: None, cursor: 0 }
    }

    /// Whether this process holds the job now, taking or renewing it once half its hold has
    /// passed (a renewal reads the stored cursor back into [`Held::cursor`]).
    pub(crate) async fn hold(&mut self, app: &crate::app::App) -> Result<bool, crate::error::Error> {
        let now = app.clock.now();
        let hold_ms = i64::try_from(JOB_HOLD.as_millis()).unwrap_or(10_000);
        if let Some(u) = self.until
            && u.0 - now.0 > hold_ms / 2
        {
            return Ok(true);
        }
        let until = UnixMillis(now.0 + hold_ms);
        match app.store.governance().take_job(self.name, &app.governance.holder, now, until).await? {
            Some(cursor) => {
                self.until = Some(until);
                self.cursor = cursor;
                Ok(true)
            }
            None => {
                self.until = None;
                Ok(false)
            }
        }
    }

    /// Whether the hold still has `margin` left (work that must not outlive it stops sooner).
    pub(crate) fn has(&self, app: &crate::app::App, margin: std::time::Duration) -> bool {
        let m = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        self.until.is_some_and(|u| u.0 - app.clock.now().0 > m)
    }

    /// Forgets the hold (a conflict said another replica has it).
    pub(crate) fn lost(&mut self) {
        self.until = None;
    }

    pub(crate) async fn release(&self, app: &crate::app::App) {
        if self.until.is_some()
            && let Err(e) = app.store.governance().release_job(self.name, &app.governance.holder).await
        {
            tracing::debug!(job = self.name, error = %e, "releasing a job at shutdown");
        }
    }
}
