//! Policy bundles and the attribute store: versioned bundles (the highest is active), and
//! the entities (users, resources, roles) decisions read, found by id or alias.
//!
//! A pushed bundle announces [`Change::Policy`] (every replica reloads its engine); pushed
//! entities announce [`Change::Entities`] (cached entities are dropped).

pub(crate) mod cache;
#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;

#[allow(unused_imports)]
use crate::Change;
use crate::{Result, StoreError};

/// One version of the policy bundle (JSON, as pushed). The highest version is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicySet {
    pub version: u64,
    pub bundle: String,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// An entity of the attribute store (users, resources, roles an application loads so Remit
/// can decide for it), in Cedar's JSON entity shape, plus aliases it may also be named by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntity {
    pub etype: String,
    pub id: String,
    /// JSON object of attributes.
    pub attrs: String,
    /// JSON array of `{"type", "id"}` parents.
    pub parents: String,
    pub aliases: Vec<String>,
}

impl StoredEntity {
    /// From a stored row: `(id, attrs, parents, aliases as a JSON array)`.
    pub(crate) fn from_row(
        etype: &str,
        (id, attrs, parents, aliases): (String, String, String, String),
    ) -> Result<Self> {
        let aliases =
            serde_json::from_str(&aliases).map_err(|e| StoreError::Corrupt(format!("entity aliases: {e}")))?;
        Ok(StoredEntity { etype: etype.to_owned(), id, attrs, parents, aliases })
    }
}

/// Bundles and entities.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Stores `bundle` as the next version and returns it.
    async fn put_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64>;
    /// The newest version.
    async fn active_set(&self) -> Result<Option<StoredPolicySet>>;
    /// Inserts or replaces entities (and their aliases); `Conflict` if an alias names another.
    async fn put_entities(&self, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()>;
    /// An entity of `etype` by id or alias.
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<StoredEntity>>;
    /// Entities of `etype` with ids after `after`, in id order, at most `limit`.
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<StoredEntity>>;
}
