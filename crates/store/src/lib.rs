//! Persistence for Remit, one folder per state area.
//!
//! - [`keys`]: the installation record and the signing keys.
//! - [`identity`]: workflows, agents, join tokens, instances, tasks, tool uses and kills.
//! - [`audit`]: the hash-chained audit log and its signed checkpoints.
//! - [`policy`]: policy bundles and the attribute store (entities).
//! - [`approvals`]: approval requests.
//! - [`humans`]: humans and their sessions.
//! - [`scim`]: the SCIM resources an identity provider provisions (Users are humans).
//! - [`grants`]: humans' grants of authority to agents (revoked with every task under them).
//! - [`tools`]: registered tools and the per-tool credentials issued by token exchange.
//! - [`secrets`]: tools' upstream secrets, sealed and versioned.
//! - [`leases`]: logins dynamic engines made for tasks, kept until confirmed gone (they die
//!   with their task in the kill's own transaction).
//! - [`governance`]: Shared Signals streams and their outbox, cluster-wide jobs, bearers'
//!   first presenters, per-workflow governance settings, recertifications.
//! - [`workload`]: registration entries (attested selectors → agent) and attested instances.
//!
//! Each area folder holds its trait, its SQL for both backends (`sqlite.rs`, `postgres.rs`,
//! as `impl <Area>Store for SqliteStore / PgStore`) and its conformance cases. [`Store`]
//! gives one accessor per area, so a service uses only the areas it needs
//! (`store.identity().kill(…)`, `store.approvals().consume(…)`).
//!
//! Every mutating call carries the audit event(s) describing it and commits both in one
//! transaction, so there is never a change without its record or a record without its
//! change. Backends never decide policy: rules live in `remit-core` (lifecycles, the kill
//! cascade, the approval transitions); a backend finds what a rule needs and applies its
//! result with compare-and-set guards, so a concurrent change shows up as
//! [`StoreError::Conflict`] instead of being lost.
//!
//! A write states, next to its SQL, the [`Change`]s it makes; after the commit the backend
//! announces them to commit hooks and subscribers (and on PostgreSQL to every replica), so
//! [`cache::CachingStore`] never honours a revoked token longer than the feed's latency.
//!
//! - [`sqlite`]: the embedded default (WAL, `synchronous=FULL`, group commit).
//! - [`postgres`]: shared state for many stateless replicas (group commit per replica, one
//!   audit chain head locked per transaction, changes fanned out with `LISTEN/NOTIFY`).
//! - `conformance` (feature `testing`): the behaviour every backend must show.

pub mod approvals;
pub mod audit;
pub mod cache;
#[cfg(feature = "testing")]
pub mod cache_property;
mod change;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod governance;
pub mod grants;
pub(crate) mod hex;
pub mod humans;
pub mod identity;
pub mod keys;
pub mod leases;
pub mod policy;
pub mod postgres;
pub mod scim;
pub mod secrets;
pub mod sqlite;
pub mod tools;
pub mod workload;

pub use approvals::{ApprovalStore, Presentation};
pub use audit::{AuditFilter, AuditStore};
pub use change::{CHANGE_FEED_CAPACITY, Change, CommitHook, Feed};
pub use governance::{GovernanceStore, Job, OutboxRow, Recertification, ReuseAcceptance, Stream};
pub use grants::{GrantStore, Revocation};
pub use humans::{Deactivation, HumanStore};
pub use identity::{IdentityStore, MAX_TOOLS_PER_TASK, Owned, StartContext, TaskFilter, TaskSnapshot};
pub use keys::{Installation, KeyPurpose, KeyStore, Reseal, RetiringKey, StoredKey};
pub use leases::{LeaseCounts, LeaseFilter, LeaseStore};
pub use policy::{PolicyStore, StoredEntity, StoredPolicySet};
pub use scim::{HumanWrite, Membership, ScimKind, ScimResource, ScimStore};
pub use secrets::SecretStore;
pub use tools::{Presentation as TokenPresentation, ToolStore};
pub use workload::WorkloadStore;

/// Largest page any list call returns.
pub const MAX_PAGE: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound { kind, id: id.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Remit's persistent state, one accessor per area. Every backend passes the conformance
/// suite.
pub trait Store: Send + Sync + 'static {
    fn keys(&self) -> &dyn KeyStore;
    fn identity(&self) -> &dyn IdentityStore;
    fn audit(&self) -> &dyn AuditStore;
    fn policy(&self) -> &dyn PolicyStore;
    fn approvals(&self) -> &dyn ApprovalStore;
    fn humans(&self) -> &dyn HumanStore;
    fn scim(&self) -> &dyn ScimStore;
    fn tools(&self) -> &dyn ToolStore;
    fn grants(&self) -> &dyn GrantStore;
    fn workload(&self) -> &dyn WorkloadStore;
    fn secrets(&self) -> &dyn SecretStore;
    fn leases(&self) -> &dyn LeaseStore;
    fn governance(&self) -> &dyn GovernanceStore;
    /// Committed [`Change`]s, from this process and (where the backend is shared) every
    /// other process using the same database.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change>;
    /// Runs `hook` with the changes of every write committed through this store, before the
    /// write returns to its caller.
    fn on_commit(&self, hook: CommitHook);
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}
