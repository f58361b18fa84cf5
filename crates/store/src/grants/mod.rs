//! Grants: a human's delegation of part of a workflow's authority to an agent.
//!
//! A grant is proposed, confirmed by its human (a compare-and-set on `proposed`), and revoked
//! — by its human, an operator, or the human's deactivation — together with every task
//! started under it and their subtrees, in one transaction (tasks find their grant through
//! `tasks.grant_id`, a column generated from their stored delegation). Grants are not cached;
//! what is cached (task snapshots) is invalidated by the kills the revocation applies.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::grant::Grant;
use remit_core::ids::{GrantId, HumanId};
use remit_core::model::KillReport;
use remit_core::time::UnixMillis;

use crate::Result;

pub(crate) const GRANT_COLS: &str = "id, human, human_email, agent, workflow, authority, max_depth, state, \
     confirmation_hash, created_at, expires_at, confirmed_at, revoked_at";

/// Who revoked a grant, why and when (the kills of its tasks carry the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub actor: String,
    pub reason: String,
    pub at: UnixMillis,
}

#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores a proposed grant; `Conflict` if its human is not active.
    async fn create(&self, g: Grant, audit: AuditEvent) -> Result<()>;
    async fn get(&self, id: &GrantId) -> Result<Option<Grant>>;
    /// Grants, newest first (one human's when `human` is set).
    async fn list(&self, human: Option<&HumanId>, limit: u32) -> Result<Vec<Grant>>;
    /// `proposed` → `active`; `Conflict` if it is no longer proposed or its human is not active.
    async fn confirm(&self, id: &GrantId, at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// Revokes the grant and kills every live task started under it (with their subtrees), in
    /// one transaction; `Conflict` if it was already revoked, `NotFound` if unknown.
    async fn revoke(&self, id: &GrantId, r: Revocation, audit: AuditEvent) -> Result<KillReport>;
}
