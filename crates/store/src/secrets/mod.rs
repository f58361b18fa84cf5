//! Upstream secrets: the sealed, versioned values a tool's upstream needs.
//!
//! Rows hold only the wrapped data key, the ciphertext and metadata (fingerprint, length,
//! who and when); a value is never stored in clear. Setting a secret adds the next version in
//! one transaction that also marks the previous newest version as retiring after the overlap,
//! and writes the audit record. Versions past their `retire_after` are pruned.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::SecretVersion;
use remit_core::time::UnixMillis;

use crate::Result;

pub(crate) const SECRET_COLS: &str = "tool, name, version, fingerprint, length, wrapped_key, wrapped_by, ciphertext, \
                                       created_at, created_by, retire_after";

/// Most secret versions one listing returns (every tool's, for the leak guard's index).
pub const MAX_SECRET_ROWS: u32 = 100_000;

/// What changes when secrets do: the number of versions and the newest `created_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecretsMarker {
    pub versions: u64,
    pub newest: i64,
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores `v` as the next version of its secret and marks the previous newest version as
    /// retiring at `overlap_until`. `v.version` must be one more than the newest stored (the
    /// caller sealed the value for that version): else `Conflict` (another write came first;
    /// retry). `NotFound` if the tool does not exist; `Conflict` past
    /// [`remit_core::secret::MAX_SECRETS_PER_TOOL`] names. Returns the version.
    async fn put_secret(&self, v: SecretVersion, overlap_until: UnixMillis, audit: AuditEvent) -> Result<u32>;
    /// The versions of one secret not yet pruned, oldest first (empty if none).
    async fn secret_versions(&self, tool: &ToolName, name: &SecretName) -> Result<Vec<SecretVersion>>;
    /// Every stored version, of one tool or all, ordered by tool, name, version.
    async fn list_secrets(&self, tool: Option<&ToolName>) -> Result<Vec<SecretVersion>>;
    /// Deletes every version of a secret; `NotFound` if it has none. Returns how many.
    async fn delete_secret(&self, tool: &ToolName, name: &SecretName, audit: AuditEvent) -> Result<u32>;
    /// Deletes versions whose overlap ended before `before`; returns how many.
    async fn prune_secrets(&self, before: UnixMillis) -> Result<u64>;
    /// Cheap: changes whenever a version is added or removed.
    async fn secrets_marker(&self) -> Result<SecretsMarker>;
}
