//! Approval requests: stored as the core lifecycle says ([`remit_core::approval`]). A backend
//! reads the row inside its write transaction, asks the core whether the transition is
//! legal, and applies it with a compare-and-set on the previous state, so two concurrent
//! retries can never both use one approval.
//!
//! Nothing here is cached; a decided or used request announces [`crate::Change::Approval`],
//! so whoever waits for it (an agent, on any replica) wakes up.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::approval::{Approval, ApprovalError, ApprovalState, Consumed, Decision};
use remit_core::audit::AuditEvent;
use remit_core::ids::ApprovalId;
use remit_core::time::UnixMillis;

use crate::{Result, StoreError};

/// Columns of an approval row, in the order the row readers expect.
pub(crate) const APPROVAL_COLS: &str = "id, state, digest, policy_version, request, reasons, requested_by, \
     requested_at, expires_at, decided_by, decided_at, decision_reason, used_at, task, workflow";

/// A retry presenting an approval: the call's digest and the policy version deciding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub digest: String,
    pub policy_version: u64,
    pub at: UnixMillis,
}

/// Approval requests.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Stores a new pending request.
    async fn create(&self, a: Approval, audit: AuditEvent) -> Result<()>;
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>>;
    /// Requests in `state` (all when `None`), newest first, at most `limit`.
    async fn list(&self, state: Option<ApprovalState>, limit: u32) -> Result<Vec<Approval>>;
    /// `pending → approved | denied` (see [`remit_core::approval::decide`]); returns the
    /// decided request. `NotFound`, or `Conflict` naming why the transition is refused.
    async fn decide(&self, id: &ApprovalId, d: Decision, audit: AuditEvent) -> Result<Approval>;
    /// `approved → used`, once, for the presented call (see [`remit_core::approval::consume`]);
    /// returns the proof a decision takes. `NotFound`, or `Conflict` naming why not.
    async fn consume(&self, id: &ApprovalId, p: Presentation, audit: AuditEvent) -> Result<Consumed>;
}

/// A refused transition, as the store reports it.
pub(crate) fn refused(e: ApprovalError) -> StoreError {
    StoreError::Conflict(e.to_string())
}

/// The core's view of a presentation.
pub(crate) fn presented(p: &Presentation) -> remit_core::approval::Presented<'_> {
    remit_core::approval::Presented { digest: &p.digest, policy_version: p.policy_version, at: p.at }
}

/// A proof for a request the compare-and-set just moved to `used`.
pub(crate) fn proof(used: &Approval) -> Result<Consumed> {
    Consumed::after_consume(used).ok_or_else(|| StoreError::Internal("a used approval yields no proof".into()))
}
