//! Governance: the state behind continuous control — Shared Signals streams and their outbox,
//! cluster-wide jobs with their cursors, the first presenter of each bearer token, per-workflow
//! governance settings, and recertifications.
//!
//! - **Jobs** (`take_job`, `advance_job`): a scheduled job (the governance tail that feeds the
//!   Shared Signals outbox and containment, recertification) runs on one replica at a time:
//!   the holder takes a lease on the job's row until a time and renews it; another replica
//!   takes it over only once that lapses. A job's cursor (the audit `seq` it has read to)
//!   moves only by compare-and-set from the value the holder read, in the same transaction as
//!   the outbox rows it produced, so a stale holder can never enqueue twice.
//! - **Streams and outbox**: a receiver's stream (its configuration as JSON, its status) and
//!   the signed SETs waiting for it; a SET leaves the outbox only when the receiver took it
//!   (push answered 202, or a poll acknowledged it), so delivery survives restarts.
//! - **Bearers**: the first presenter of a token (by `jti`), so a presentation from elsewhere
//!   is seen on every replica.
//! - **Settings** (per workflow) and **recertifications** (who vouched for an object, when).
//!
//! Writes announce [`Change::Outbox`](crate::Change::Outbox) when SETs were queued, so a
//! waiting poll or the pusher on any replica wakes up.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;

use crate::Result;

/// A receiver's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub id: String,
    /// Who manages it: `tool:<name>` or `admin`.
    pub owner: String,
    /// The stream configuration (JSON object) as the transmitter serves it.
    pub config: String,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// Bumped by every update; `0` for a stream not stored yet.
    pub version: u64,
}

/// Stream statuses (SSF 1.0 §8.1.2).
pub const STREAM_STATUSES: [&str; 3] = ["enabled", "paused", "disabled"];

/// One signed SET waiting for its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub stream: String,
    pub jti: String,
    /// Delivery order within the stream (the audit `seq` it came from, or a verification's).
    pub seq: u64,
    /// The SET's claims (JSON) and, after a newline, their MAC under the KEK (bound to the
    /// stream and `jti`); signed when delivered. Never a credential.
    pub set: String,
    pub created_at: UnixMillis,
    pub attempts: u32,
    pub next_at: UnixMillis,
    pub last_error: Option<String>,
}

/// Someone's vouching that an object is still needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recertification {
    /// `agent`, `workflow` or `grant`.
    pub kind: String,
    pub id: String,
    pub at: UnixMillis,
    pub by: String,
    pub reason: String,
}

/// An owner's acceptance that an agent serves several (equivalent) workflows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReuseAcceptance {
    pub agent: String,
    /// The workflows accepted, sorted.
    pub workflows: Vec<String>,
    pub by: String,
    pub reason: String,
    pub at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A cluster job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    /// The process that holds (or last held) it.
    pub holder: String,
    /// Held until then; another process may take it after.
    pub held_until: UnixMillis,
    pub cursor: u64,
}

#[async_trait]
pub trait GovernanceStore: Send + Sync {
    /// Every job, by name (for the operator's status).
    async fn jobs(&self) -> Result<Vec<Job>>;
    /// Takes or renews the job `name` for `holder` until `until`, if it is free, lapsed
    /// (`until <= now`) or already `holder`'s. Returns its cursor when held.
    async fn take_job(&self, name: &str, holder: &str, now: UnixMillis, until: UnixMillis) -> Result<Option<u64>>;
    /// Lets the job go (shutdown), so another replica takes it at once.
    async fn release_job(&self, name: &str, holder: &str) -> Result<()>;
    /// Moves the job's cursor `from` → `to` and queues `outbox` (rows of streams that no longer
    /// exist or are disabled are dropped) with `audits`, in one transaction. `Conflict` unless `holder` holds
    /// the job and its cursor is still `from`.
    async fn advance_job(
        &self,
        name: &str,
        holder: &str,
        from: u64,
        to: u64,
        outbox: Vec<OutboxRow>,
        audits: Vec<AuditEvent>,
    ) -> Result<()>;

    /// Creates a stream (`version` 0), or updates one as read at `version` (its owner never
    /// changes); `Conflict` if the id is taken, the stream changed since it was read or it is
    /// another owner's. A stream stored `disabled` loses its queued SETs in the same
    /// transaction; otherwise its outbox is kept. `queue` is queued after that, in the same
    /// transaction (the notice of a status change).
    async fn put_stream(&self, s: Stream, queue: Vec<OutboxRow>, audit: Option<AuditEvent>) -> Result<()>;
    async fn stream(&self, id: &str) -> Result<Option<Stream>>;
    /// Streams, oldest first; only `owner`'s when given.
    async fn streams(&self, owner: Option<&str>) -> Result<Vec<Stream>>;
    /// Deletes a stream and its outbox; `false` if there was none.
    async fn delete_stream(&self, id: &str, audit: AuditEvent) -> Result<bool>;
    /// Queues SETs outside the job (a verification event).
    async fn enqueue(&self, rows: Vec<OutboxRow>) -> Result<()>;
    /// A stream's queued SETs due at `now` (`next_at <= now`), in `seq` order, at most `limit`.
    async fn outbox(&self, stream: &str, now: UnixMillis, limit: u32) -> Result<Vec<OutboxRow>>;
    /// Removes acknowledged SETs; returns how many were queued.
    async fn acknowledge(&self, stream: &str, jtis: Vec<String>) -> Result<u64>;
    /// A push failed: counts it and schedules the next attempt.
    async fn outbox_failed(&self, stream: &str, jti: &str, next_at: UnixMillis, error: &str) -> Result<()>;
    /// How many SETs a stream has queued.
    async fn outbox_depth(&self, stream: &str) -> Result<u64>;

    /// Records `presenter` as the first presenter of `jti` unless one is recorded; returns
    /// the first presenter (this one when it was first).
    async fn bearer(
        &self,
        jti: &str,
        task: &str,
        presenter: &str,
        at: UnixMillis,
        expires: UnixMillis,
    ) -> Result<String>;
    /// Forgets bearers of tokens that expired before `before`; returns how many.
    async fn prune_bearers(&self, before: UnixMillis) -> Result<u64>;

    /// Stores a workflow's governance settings (JSON), with its audit record.
    async fn set_settings(&self, workflow: &str, settings: String, at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// Every workflow's stored settings: `(workflow, JSON)`.
    async fn settings(&self) -> Result<Vec<(String, String)>>;

    /// Records a recertification (the newest per object is kept), with its audit record.
    async fn recertify(&self, r: Recertification, audit: AuditEvent) -> Result<()>;
    /// The newest recertification of every object that has one.
    async fn recertifications(&self) -> Result<Vec<Recertification>>;

    /// Records (or replaces) an agent's accepted reuse, with its audit record. `NotFound`
    /// without the agent.
    async fn accept_reuse(&self, a: ReuseAcceptance, audit: AuditEvent) -> Result<()>;
    /// Every accepted reuse, expired ones included.
    async fn reuse_acceptances(&self) -> Result<Vec<ReuseAcceptance>>;
}
