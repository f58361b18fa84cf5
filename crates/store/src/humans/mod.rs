//! Humans and their sessions ([`remit_core::human`] decides; this area stores).
//!
//! Emails are unique among humans, and so is a provider identity (issuer + subject). A
//! sign-in writes the human and the new session in one transaction; deactivating a human
//! revokes every session of theirs and marks every workflow and agent they own as orphaned,
//! in one transaction with its audit record. Sessions store only SHA-256 hashes of their
//! secrets; a refresh is a compare-and-set on the refresh hash it replaces, so a refresh
//! secret works once.
//!
//! Nothing here is cached: every use of a session reads it, so a revocation holds on every
//! replica at once. Writes still announce [`crate::Change::Human`] and
//! [`crate::Change::Session`] for whoever watches.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::human::{Human, HumanState, LocalCredential, Session};
use remit_core::ids::{AgentName, HumanId, SessionId, WorkflowName};
use remit_core::time::UnixMillis;

use crate::Result;

/// Columns of a human row, in the order the row readers expect.
pub(crate) const HUMAN_COLS: &str =
    "id, email, display_name, state, roles, member_of, ext_issuer, ext_subject, created_at, updated_at, deactivated_at";
/// Columns of a local credential row.
pub(crate) const LOCAL_COLS: &str =
    "human, password_hash, totp, totp_confirmed, last_totp_step, failures, locked_until, updated_at";
/// Columns of a session row.
pub(crate) const SESSION_COLS: &str =
    "id, human, method, access_hash, refresh_hash, created_at, expires_at, refresh_until, revoked_at, revoke_reason";

/// What deactivating a human did, in the transaction that did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    pub human: Human,
    pub sessions_revoked: Vec<SessionId>,
    pub workflows_orphaned: Vec<WorkflowName>,
    pub agents_orphaned: Vec<AgentName>,
    pub tools_orphaned: Vec<remit_core::ids::ToolName>,
    /// Their grants, revoked with every task started under them.
    pub grants_revoked: Vec<remit_core::ids::GrantId>,
    pub tasks_revoked: Vec<remit_core::ids::TaskId>,
}

/// Humans and sessions.
#[async_trait]
pub trait HumanStore: Send + Sync {
    /// Stores a new human; `Conflict` if the id, the email or the provider identity is taken.
    async fn create(&self, h: Human, audit: AuditEvent) -> Result<()>;
    async fn get(&self, id: &HumanId) -> Result<Option<Human>>;
    /// By normalised email.
    async fn by_email(&self, email: &str) -> Result<Option<Human>>;
    /// By the provider identity a sign-in linked.
    async fn by_external(&self, issuer: &str, subject: &str) -> Result<Option<Human>>;
    /// Humans in `state` (all when `None`) ordered by email, after `after`, at most `limit`.
    async fn list(&self, state: Option<HumanState>, after: Option<String>, limit: u32) -> Result<Vec<Human>>;
    /// Replaces a human's attributes if nobody changed them since they were read at
    /// `read_at` (their `updated_at` then); never moves a human into or out of
    /// `deactivated` (see [`HumanStore::deactivate`]). `NotFound` or `Conflict`.
    async fn update(&self, h: Human, read_at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// The human holding `placeholder.email`, inserting the (unverified) placeholder when
    /// there is none; `audit` is written only when it is inserted.
    async fn ensure(&self, placeholder: Human, audit: AuditEvent) -> Result<Human>;
    /// Writes what a sign-in decided ([`remit_core::human::sign_in`]): the human (inserted
    /// when `read_at` is `None`, else updated if unchanged since then and not deactivated)
    /// and the new session, in one transaction.
    async fn sign_in(&self, h: Human, read_at: Option<UnixMillis>, s: Session, audit: Vec<AuditEvent>) -> Result<()>;
    /// Deactivates a human: their sessions revoked, their workflows and agents orphaned, the
    /// record kept; `audit` gains the lists. `NotFound`, or `Conflict` if already deactivated.
    async fn deactivate(&self, id: &HumanId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Deactivation>;
    /// A session with its human.
    async fn session(&self, id: &SessionId) -> Result<Option<(Session, Human)>>;
    /// A human's sessions, newest first (at most 1,000).
    async fn sessions_of(&self, human: &HumanId) -> Result<Vec<Session>>;
    /// Applies a refresh ([`remit_core::human::refresh`]) if the session still holds
    /// `replaced_refresh_hash` and is not revoked; `Conflict` otherwise (the secret was used).
    async fn refresh(&self, next: Session, replaced_refresh_hash: &str, audit: AuditEvent) -> Result<()>;
    /// Stores a new local human and their credential, in one transaction.
    async fn create_local(&self, h: Human, c: LocalCredential, audit: AuditEvent) -> Result<()>;
    /// A local human's credential.
    async fn local_credential(&self, human: &HumanId) -> Result<Option<LocalCredential>>;
    /// Writes a credential if nobody changed it since it was read at `read_at` (its
    /// `updated_at` then); `audit`, if any, in the same transaction. `Conflict` otherwise.
    async fn put_local_credential(
        &self,
        c: LocalCredential,
        read_at: UnixMillis,
        audit: Option<AuditEvent>,
    ) -> Result<()>;
    /// Keeps (replaces) the identity provider's sealed refresh token of a session.
    async fn put_idp_refresh(&self, session: &SessionId, provider: &str, sealed: Vec<u8>, at: UnixMillis)
    -> Result<()>;
    /// Live sessions (not revoked, not past their end at `now`) holding a provider refresh
    /// token, with their human, at most `limit`, after `after` (paging by session id).
    async fn idp_sessions(
        &self,
        now: UnixMillis,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<(SessionId, HumanId)>>;
    /// The provider and sealed refresh token kept for a session.
    async fn idp_refresh(&self, session: &SessionId) -> Result<Option<(String, Vec<u8>)>>;
    /// Revokes one session; `NotFound`, or `Conflict` if it was already revoked.
    async fn revoke_session(&self, id: &SessionId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Session>;
}

/// The deactivation's record, naming what it revoked and orphaned.
pub(crate) fn deactivation_record(audit: AuditEvent, d: &Deactivation) -> AuditEvent {
    let names = |v: Vec<String>| serde_json::Value::from(v);
    audit
        .with_detail_field("sessions_revoked", names(d.sessions_revoked.iter().map(ToString::to_string).collect()))
        .with_detail_field("workflows_orphaned", names(d.workflows_orphaned.iter().map(ToString::to_string).collect()))
        .with_detail_field("agents_orphaned", names(d.agents_orphaned.iter().map(ToString::to_string).collect()))
        .with_detail_field("tools_orphaned", names(d.tools_orphaned.iter().map(ToString::to_string).collect()))
        .with_detail_field("grants_revoked", names(d.grants_revoked.iter().map(ToString::to_string).collect()))
        .with_detail_field("tasks_revoked", names(d.tasks_revoked.iter().map(ToString::to_string).collect()))
}

/// Roles and groups as stored (JSON arrays).
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// Ids a statement returned, parsed (one that does not parse is corrupt data).
pub(crate) fn parse_all<T>(
    v: &[String],
    parse: fn(&str) -> std::result::Result<T, remit_core::DomainError>,
) -> Result<Vec<T>> {
    v.iter().map(|s| parse(s).map_err(|e| crate::StoreError::Corrupt(e.to_string()))).collect()
}
