//! Tools: the registered APIs a task may obtain a per-tool credential for, and the
//! credentials issued by token exchange (what each said, never the token).
//!
//! Nothing here is cached: introspection reads a credential and its tool from the store on
//! every call, so a revocation (of the credential, its tool or its task) holds on every
//! replica at once. A credential names its task; the task's own liveness is checked beside
//! it, so every kill that ends the task ends its credentials with no write here.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{CredentialId, ToolName};
use remit_core::time::UnixMillis;
use remit_core::tool::{Credential, Tool, ToolState};

use crate::Result;

pub(crate) const TOOL_COLS: &str = "name, audience, scopes, max_ttl_secs, classification, owner, owner_id, state, created_at, updated_at, secret_hash, orphaned_at, class, proxy, database";
pub(crate) const CREDENTIAL_COLS: &str = "id, task, tool, scopes, jkt, issued_at, expires_at, revoked_at";

/// Registered tools and the credentials issued for them.
#[async_trait]
pub trait ToolStore: Send + Sync {
    /// Registers a tool, its owner linked as workflows' and agents' are (the proposed id
    /// inserted as an unverified human when nobody holds the email). `Conflict` when the name
    /// or the audience is taken, or the owner is deactivated.
    async fn create_tool(&self, tool: Tool, audit: AuditEvent) -> Result<()>;
    async fn tool(&self, name: &ToolName) -> Result<Option<Tool>>;
    async fn tool_by_audience(&self, audience: &str) -> Result<Option<Tool>>;
    async fn list_tools(&self) -> Result<Vec<Tool>>;
    /// Moves a tool `from` → `to`; `Conflict` if it is not in `from`, `NotFound` if unknown.
    /// Disabling it also moves its active leases (database logins) to `revoking`.
    async fn set_tool_state(&self, name: &ToolName, from: ToolState, to: ToolState, audit: AuditEvent) -> Result<()>;
    /// Records an issued credential with its audit record. `Conflict` unless its task is
    /// still active (re-checked inside the transaction) and its tool active.
    async fn issue_credential(&self, c: Credential, audit: AuditEvent) -> Result<()>;
    async fn credential(&self, id: &CredentialId) -> Result<Option<Credential>>;
    /// Revokes one credential; `Ok(false)` when it was already revoked or is unknown.
    async fn revoke_credential(&self, id: &CredentialId, at: UnixMillis, audit: AuditEvent) -> Result<bool>;
    /// Remembers a DPoP proof by `key` (a hash of its key thumbprint and `jti`) until
    /// `expires_at`, forgetting proofs past theirs; `Ok(false)` if it was seen before (a
    /// replay), on any replica. Not audited: a cache of proofs, not a change of state.
    async fn use_proof(&self, key: &str, at: UnixMillis, expires_at: UnixMillis) -> Result<bool>;
    /// Forgets a remembered proof, so the same one is accepted once more: for a caller that
    /// claimed a one-time message (`use_proof`) and then failed to act on it, and asks its
    /// sender to retry. Forgetting an unknown key is not an error.
    async fn forget_proof(&self, key: &str) -> Result<()>;
    /// Deletes credential rows that expired before `before` (introspection answers "unknown",
    /// i.e. inactive, for them as it did once they expired; their issuance stays in the audit
    /// log). Returns how many went. Not audited: nothing live changes.
    async fn prune_credentials(&self, before: UnixMillis) -> Result<u64>;
    /// Deletes presentation rows last seen before `before` (their first sighting stays in the
    /// audit log). Returns how many went.
    async fn prune_presentations(&self, before: UnixMillis) -> Result<u64>;
    /// Records that a token (`jti`) was presented with a DPoP key (`jkt`) at `audience`: the
    /// first time with its audit record, later times only counted.
    async fn record_presentation(&self, p: Presentation, audit: AuditEvent) -> Result<()>;
}

/// One presentation of a token Remit saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub jti: String,
    pub jkt: String,
    pub audience: String,
    pub at: UnixMillis,
}
