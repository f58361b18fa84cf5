//! The audit log and its signed checkpoints: append-only records chained by hash, and the
//! checkpoints that sign the chain head. Records are sealed onto the chain by the backend's
//! writer in the same transaction as the change they describe (every area's writes call
//! `ctx.audit(…)`); this area adds records that change nothing else, and reads.
//!
//! Nothing here announces a change: the log is never cached.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint};
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::time::UnixMillis;

use crate::Result;

/// Columns of an audit row, in the order the row readers expect.
pub(crate) const AUDIT_COLS: &str =
    "seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash";
/// Columns of a checkpoint row.
pub(crate) const CHECKPOINT_COLS: &str = "seq, head_hash, time, key_id, signature";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub workflow: Option<WorkflowName>,
    pub task: Option<TaskId>,
    pub agent: Option<AgentName>,
    /// A dotted action name (`task.start`).
    pub action: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    /// Only records with `seq` greater than this (paging).
    pub after_seq: u64,
    pub limit: u32,
    /// The newest matching records (still returned in `seq` order) rather than the oldest.
    pub newest_first: bool,
}

/// The log and its checkpoints.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events that change nothing else (e.g. decisions, refused attempts).
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()>;
    /// The newest record's `(seq, hash)`; `(0, zeros)` when empty.
    async fn head(&self) -> Result<(u64, String)>;
    /// Records matching `filter`, in `seq` order, at most `filter.limit` (≤ [`crate::MAX_PAGE`]).
    async fn list(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Stores a signed checkpoint (a second one for the same `seq` is ignored).
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()>;
    /// The checkpoint with the highest `seq`, if any.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>>;
    /// Checkpoints with `seq > after`, in `seq` order, at most `limit` (≤ [`crate::MAX_PAGE`]):
    /// verification streams them page by page instead of loading a day's worth at once.
    async fn checkpoints_after(&self, after: u64, limit: u32) -> Result<Vec<Checkpoint>>;
}
