//! Leases: the logins dynamic engines made for tasks, kept until each is confirmed gone.
//!
//! A lease is written before its login is made (so a crash leaves a row to clean up, never an
//! untracked login) and only ever moves `active` → `revoking` → `revoked`. The kill cascade
//! moves the leases of every task it ends to `revoking` inside the kill's own transaction
//! (`mark_revoking`, called by the identity area) and reports how many; background
//! revocation claims due work in bounded batches ([`LeaseStore::claim_revocations`]): the
//! claim pushes the next attempt forward, so a replica that dies mid-batch only delays its
//! leases until the claim lapses. Nothing here drops a lease: a failed attempt is counted and
//! rescheduled.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{LeaseId, TaskId, ToolName, WorkflowName};
use remit_core::lease::{Lease, LeaseState};
use remit_core::time::UnixMillis;

use crate::Result;

pub(crate) const LEASE_COLS: &str = "id, tool, task, workflow, agent, engine, handle, state, created_at, expires_at, \
                                      revoke_requested_at, revoke_reason, attempts, next_attempt_at, last_error, \
                                      revoked_at, target";

/// Which leases a listing returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct LeaseFilter {
    pub task: Option<TaskId>,
    pub workflow: Option<WorkflowName>,
    pub tool: Option<ToolName>,
    pub state: Option<LeaseState>,
    /// Only leases whose revocation failed at least `STUCK_AFTER_ATTEMPTS` times.
    pub stuck: bool,
    /// At most this many (capped at [`crate::MAX_PAGE`]).
    pub limit: u32,
}

/// How many leases are in each unfinished state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaseCounts {
    pub active: u64,
    pub revoking: u64,
    /// Of the revoking: those past `STUCK_AFTER_ATTEMPTS` failed attempts.
    pub stuck: u64,
}

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Records a lease before its login is made. `Conflict` unless its task is active and
    /// unexpired at `l.created_at` (re-checked inside the transaction, so a concurrent kill
    /// wins), its tool is active, and the task holds fewer than
    /// [`remit_core::lease::MAX_LEASES_PER_TASK`] unrevoked leases. `l.next_attempt_at` is
    /// the creation hold: a revocation asked for before it passes waits for it (the login may
    /// still be in the making), since every move to `revoking` keeps a later due time.
    async fn create_lease(&self, l: Lease, audits: Vec<AuditEvent>) -> Result<()>;
    /// The login exists: ends the creation hold of a lease still `active` and says so;
    /// `Ok(false)` when a revocation came meanwhile (the caller removes the login itself).
    async fn lease_made(&self, id: &LeaseId) -> Result<bool>;
    async fn lease(&self, id: &LeaseId) -> Result<Option<Lease>>;
    async fn list_leases(&self, f: LeaseFilter) -> Result<Vec<Lease>>;
    /// Asks for one lease's revocation, due at once: `active` → `revoking`. `Ok(false)` if it
    /// was not active; `NotFound` if unknown.
    async fn revoke_lease(&self, id: &LeaseId, at: UnixMillis, reason: &str, audit: Option<AuditEvent>)
    -> Result<bool>;
    /// The revocation work due at `now`, at most `limit` leases. First moves active leases
    /// past their deadline to `revoking` (reason `expired`); then claims revoking leases whose
    /// next attempt is due — fresh ones (fewest attempts) first, so a database that keeps
    /// failing never delays a kill's logins elsewhere — by moving that attempt to `hold_until` (so no other
    /// replica takes them meanwhile, and a crash only delays them until then).
    async fn claim_revocations(&self, now: UnixMillis, limit: u32, hold_until: UnixMillis) -> Result<Vec<Lease>>;
    /// The engine confirmed these logins are gone: `revoking` → `revoked`, with their audit
    /// records, in one transaction. Returns how many moved.
    async fn revoked(&self, ids: Vec<LeaseId>, at: UnixMillis, audits: Vec<AuditEvent>) -> Result<u64>;
    /// One attempt failed: counts it, keeps `error` and schedules the next at `next_at`, with
    /// `audit` (the lease just became stuck) in the same transaction. Returns the attempts.
    async fn revocation_failed(
        &self,
        id: &LeaseId,
        error: &str,
        next_at: UnixMillis,
        audit: Option<AuditEvent>,
    ) -> Result<u32>;
    async fn lease_counts(&self) -> Result<LeaseCounts>;
    /// Whether any revocation work is due at `now` (read-only, cheap: the partial indexes).
    async fn revocation_due(&self, now: UnixMillis) -> Result<bool>;
    /// Deletes leases revoked before `before` (their history stays in the audit log).
    async fn prune_leases(&self, before: UnixMillis) -> Result<u64>;
}
