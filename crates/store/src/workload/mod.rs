//! Workloads: the registration entries that map attested selectors to an agent, and the
//! instances created for attested callers.
//!
//! Entries are few and read on every attestation; the selector set (canonical, sorted JSON)
//! is unique, so two entries never claim exactly the same callers. An attested instance is an
//! ordinary instance row (with the entry's workflow, if any): it lives, renews and dies with
//! the kill switch like a joined one. Every write is audited in its own transaction.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::EntryId;
use remit_core::model::Instance;
use remit_core::workload::Entry;

use crate::Result;

pub(crate) const ENTRY_COLS: &str = "id, selectors, agent, workflow, hint, created_at, created_by";

/// Most registration entries a store holds (attestation reads them all).
pub const MAX_ENTRIES: u32 = 10_000;

/// The canonical stored form of an entry's selector set.
pub(crate) fn selectors_text(e: &Entry) -> String {
    serde_json::to_string(&e.selectors).unwrap_or_default()
}

/// SHA-256 (hex) of [`selectors_text`]: what makes an entry's selector set unique (short
/// enough for any index, whatever the selectors' length).
pub(crate) fn selectors_hash(e: &Entry) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(selectors_text(e).as_bytes()))
}

#[async_trait]
pub trait WorkloadStore: Send + Sync {
    /// Stores an entry; `Conflict` if an entry has the same selector set, if its agent does
    /// not exist (or, when set, its workflow), or if [`MAX_ENTRIES`] are stored.
    async fn create_entry(&self, e: Entry, audit: AuditEvent) -> Result<()>;
    async fn entry(&self, id: &EntryId) -> Result<Option<Entry>>;
    /// Every entry, oldest first.
    async fn entries(&self) -> Result<Vec<Entry>>;
    /// Deletes an entry (instances already attested through it live on until they end);
    /// `NotFound` if unknown.
    async fn delete_entry(&self, id: &EntryId, audit: AuditEvent) -> Result<()>;
    /// Records the instance of an attested caller; `Conflict` if its agent is not enabled.
    async fn attest_instance(&self, inst: Instance, audit: AuditEvent) -> Result<()>;
}
