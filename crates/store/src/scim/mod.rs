//! SCIM 2.0 resources an organisation's identity provider provisions (RFC 7643): the resource
//! as last written (JSON), its version, and for a User the human it is, written in the same
//! transaction. A User's id is its human's id. Deleting a User deactivates the human (sessions
//! revoked, what they own orphaned) and keeps both records, marked deleted, for the audit
//! trail; a deleted resource is never listed or read again. Group membership is written into
//! each member human's groups in the group's transaction.
//!
//! Names (`userName`, a Group's `displayName`) are unique among live resources of a kind,
//! ignoring letter case; every write is a compare-and-set on the version it replaces.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::human::Human;
use remit_core::ids::HumanId;
use remit_core::time::UnixMillis;

use crate::{Deactivation, Result};

/// The two resource kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimKind {
    User,
    Group,
}

impl ScimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimKind::User => "User",
            ScimKind::Group => "Group",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "User" => Some(ScimKind::User),
            "Group" => Some(ScimKind::Group),
            _ => None,
        }
    }
}

/// One stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimResource {
    /// A User's is its human's id; a Group's is `g-` and 32 hex digits.
    pub id: String,
    pub kind: ScimKind,
    /// `userName` or the Group's `displayName`.
    pub name: String,
    pub external_id: Option<String>,
    /// The resource's attributes as last written (JSON object; no `id`, `meta` or `groups`).
    pub resource: String,
    /// 1 when created, +1 on every write.
    pub version: u64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// What a User's write does to its human, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HumanWrite {
    /// A new human.
    Insert(Human),
    /// The human's attributes, compare-and-set on the `updated_at` they were read with.
    Update { human: Human, read_at: UnixMillis },
    /// Deactivate them (the IdP set `active` false): sessions revoked, what they own orphaned.
    Deactivate { reason: String },
    /// Bring them back (the IdP set `active` true again), then write their attributes.
    Reactivate { human: Human },
    /// Leave the human as they are (a deactivated User whose resource changes).
    Keep,
}

/// A Group membership change, applied to the members' groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Humans who gain the group (by its name).
    pub add: Vec<HumanId>,
    /// Humans who lose it (by the name it had: `old_name` when it was renamed).
    pub remove: Vec<HumanId>,
    pub old_name: Option<String>,
}

#[async_trait]
pub trait ScimStore: Send + Sync {
    /// Writes a User (`prev_version` `None`: create; else compare-and-set) and its human.
    /// `Conflict` when the name is taken or the version moved.
    async fn write_user(
        &self,
        r: ScimResource,
        prev_version: Option<u64>,
        human: HumanWrite,
        audit: AuditEvent,
    ) -> Result<Option<Deactivation>>;
    /// Writes a Group and applies its membership change to the members' groups.
    async fn write_group(
        &self,
        r: ScimResource,
        prev_version: Option<u64>,
        members: Membership,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Marks a resource deleted; a User's human is deactivated (if not already) in the same
    /// transaction, a Group's members lose it. `NotFound` if absent or already deleted.
    async fn delete(
        &self,
        kind: ScimKind,
        id: &str,
        members: Vec<HumanId>,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<Option<Deactivation>>;
    /// A live resource.
    async fn get(&self, kind: ScimKind, id: &str) -> Result<Option<ScimResource>>;
    /// Live resources of `kind` (only the one named `name_eq`, ignoring case, when given) in
    /// creation order: `count` from the 1-based `start`, and how many there are in all.
    async fn list(
        &self,
        kind: ScimKind,
        name_eq: Option<String>,
        start: u64,
        count: u64,
    ) -> Result<(u64, Vec<ScimResource>)>;
}

/// Columns of a resource row.
pub(crate) const SCIM_COLS: &str = "id, kind, name, external_id, resource, version, created_at, updated_at";

/// A group name added to or removed from a human's groups (sorted, without repeats).
pub(crate) fn with_group(h: &Human, add: Option<&str>, remove: Option<&str>, at: UnixMillis) -> Human {
    let mut groups: Vec<String> = h.groups.iter().filter(|g| Some(g.as_str()) != remove).cloned().collect();
    if let Some(a) = add {
        groups.push(a.to_owned());
    }
    groups.sort();
    groups.dedup();
    Human { groups, updated_at: at.after(h.updated_at), ..h.clone() }
}
