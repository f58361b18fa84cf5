//! Persistence for Remit behind one trait.
//!
//! [`Store`] is the only way the server touches state. Each mutating call carries the audit
//! event(s) describing it and commits both in one transaction, so there is never a change
//! without its record or a record without its change. Backends never decide policy: rules
//! live in `remit-core`; a backend applies their result with compare-and-set guards so a
//! concurrent change shows up as [`StoreError::Conflict`] instead of being lost.
//!
//! - [`sqlite`]: the embedded default (WAL, `synchronous=FULL`, group commit).
//! - [`postgres`]: shared state for many stateless replicas (group commit per replica, one
//!   audit chain head locked per transaction, changes fanned out with `LISTEN/NOTIFY`).
//! - [`conformance`]: the test suite every backend must pass, written against the trait.
//!
//! Every backend also publishes a [`Change`] after each committed write that can make a
//! cached answer wrong (a revocation, a kill, a state change, a key rotation), so servers can
//! cache liveness and still never honour a revoked token longer than the feed's latency.

pub mod cache;
pub mod cache_property;
mod cols;
pub mod conformance;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Largest page any list call returns.
pub const MAX_PAGE: u32 = 10_000;

/// Most distinct tools recorded for one task (the `tools_used` a decision sees).
pub const MAX_TOOLS_PER_TASK: i64 = 256;

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

/// What a key is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Signs JWT-SVIDs.
    Jwt,
    /// Signs audit checkpoints.
    Audit,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Jwt => "jwt",
            KeyPurpose::Audit => "audit",
        }
    }
}

/// A signing key as stored: the private half sealed under the key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub purpose: KeyPurpose,
    /// AES-256-GCM(kek, pkcs8), bound to the kid.
    pub sealed: Vec<u8>,
    /// Uncompressed SEC1 public point.
    pub public: Vec<u8>,
    pub created_at: UnixMillis,
    /// `None` while it is the active signer; once rotated out, when it stops being published.
    pub retire_after: Option<UnixMillis>,
    /// Hex MAC under the KEK over the row (see `remit-server`'s key loading); `None` only in
    /// rows written before Remit sealed its records, which are refused until resealed.
    pub mac: Option<String>,
}

/// The active key of a purpose being rotated out: until when it stays trusted, and the MAC
/// over its row with that time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringKey {
    pub kid: String,
    pub retire_after: UnixMillis,
    pub mac: String,
}

/// Integrity seals for an installation written before Remit sealed its records (`remit
/// reseal`): the installation record's MAC, its issuer, and a MAC per key row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reseal {
    pub issuer: String,
    pub installation_mac: String,
    /// `(kid, mac)` for every key row.
    pub key_macs: Vec<(String, String)>,
}

/// The one-time installation record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub trust_domain: String,
    /// `iss` of every token this installation issues and accepts.
    pub issuer: Option<String>,
    /// SHA-256 (hex) of the admin credential.
    pub admin_hash: String,
    pub installed_at: UnixMillis,
    /// Hex MAC under the KEK over trust domain, issuer, admin hash and time; `None` only in
    /// installations made before Remit sealed its records, refused until resealed.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub workflow: Option<WorkflowName>,
    pub agent: Option<AgentName>,
    pub instance: Option<InstanceId>,
    pub state: Option<TaskState>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub workflow: Option<String>,
    pub task: Option<String>,
    pub agent: Option<String>,
    pub action: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    /// Only records with `seq` greater than this (paging).
    pub after_seq: u64,
    pub limit: u32,
}

/// Everything needed to decide whether a task token is still live, read at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot {
    pub task: Task,
    pub workflow: Workflow,
    pub agent: Agent,
    pub instance: Option<Instance>,
}

/// The state of the world a new task is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContext {
    pub workflow: Option<Workflow>,
    pub agent: Option<Agent>,
    pub instance: Option<Instance>,
}

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

/// A request for a human to approve one exact call that policy marked `@approval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// `a-` + 32 hex.
    pub id: String,
    /// `pending`, `approved`, `denied` or `used`.
    pub state: String,
    /// SHA-256 (hex) of the canonical call: subject, action, resource and context.
    pub digest: String,
    /// The policy version that asked for it; a retry under another version does not match.
    pub policy_version: u64,
    /// The call, as JSON, for the approver to read.
    pub request: String,
    /// The `@approval` texts of the policies that asked.
    pub reasons: Vec<String>,
    pub requested_by: String,
    pub requested_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub decided_by: Option<String>,
    pub decided_at: Option<UnixMillis>,
    pub decision_reason: Option<String>,
    pub used_at: Option<UnixMillis>,
    /// The task whose call it is (task-token decisions); `None` for AuthZEN subjects.
    pub task: Option<String>,
    /// That task's workflow: its owner may decide the request.
    pub workflow: Option<String>,
}

/// A committed change that invalidates cached reads. Published to every subscriber of the
/// store (on PostgreSQL: to every replica sharing the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A task ended or was revoked.
    Task(TaskId),
    /// An instance was revoked or renewed.
    Instance(InstanceId),
    /// An agent was disabled or enabled.
    Agent(AgentName),
    /// A workflow was suspended or resumed.
    Workflow(WorkflowName),
    /// The key set changed (rotation).
    Keys,
    /// A new policy bundle version is active.
    Policy,
    /// Attribute-store entities changed.
    Entities,
    /// The change feed was interrupted: cached state may be stale until [`Change::Resync`].
    FeedLost,
    /// The feed is back (or too much changed to list): drop every cached entry.
    Resync,
}

/// Changes a slow subscriber may fall behind by before it must resync.
pub const CHANGE_FEED_CAPACITY: usize = 4096;

/// Most changes one notification lists before collapsing into [`Change::Resync`].
const MAX_LISTED_CHANGES: usize = 64;

impl Change {
    /// The changes a kill (or an ended task) makes.
    pub fn of_kill(target: &KillTarget, report: &KillReport) -> Vec<Change> {
        let mut out = match target {
            KillTarget::Workflow(w) => vec![Change::Workflow(w.clone())],
            KillTarget::Agent(a) => vec![Change::Agent(a.clone())],
            KillTarget::Instance(i) => vec![Change::Instance(i.clone())],
            KillTarget::Task(t) => vec![Change::Task(t.clone())],
        };
        // A workflow or agent change already drops every cached task; list tasks only
        // for narrower kills.
        if matches!(target, KillTarget::Task(_) | KillTarget::Instance(_)) {
            out.extend(report.tasks_revoked.iter().cloned().map(Change::Task));
        }
        if out.len() > MAX_LISTED_CHANGES { vec![Change::Resync] } else { out }
    }

    /// The compact text form carried in a notification payload: one change per line.
    pub fn encode_all(changes: &[Change]) -> String {
        if changes.len() > MAX_LISTED_CHANGES {
            return "r".into();
        }
        let line = |c: &Change| match c {
            Change::Task(t) => format!("t:{t}"),
            Change::Instance(i) => format!("i:{i}"),
            Change::Agent(a) => format!("a:{a}"),
            Change::Workflow(w) => format!("w:{w}"),
            Change::Keys => "k".into(),
            Change::Policy => "p".into(),
            Change::Entities => "e".into(),
            Change::FeedLost | Change::Resync => "r".into(),
        };
        changes.iter().map(line).collect::<Vec<_>>().join("\n")
    }

    /// Parses [`Change::encode_all`]'s output; anything unreadable becomes a resync, which
    /// is always safe.
    pub fn decode_all(payload: &str) -> Vec<Change> {
        let one = |l: &str| -> Option<Change> {
            Some(match l.split_once(':') {
                Some(("t", v)) => Change::Task(TaskId::parse(v).ok()?),
                Some(("i", v)) => Change::Instance(InstanceId::parse(v).ok()?),
                Some(("a", v)) => Change::Agent(AgentName::parse(v).ok()?),
                Some(("w", v)) => Change::Workflow(WorkflowName::parse(v).ok()?),
                None if l == "k" => Change::Keys,
                None if l == "p" => Change::Policy,
                None if l == "e" => Change::Entities,
                _ => return None,
            })
        };
        let mut out = Vec::new();
        for l in payload.lines() {
            match one(l) {
                Some(c) => out.push(c),
                None => return vec![Change::Resync],
            }
        }
        out
    }
}

/// Remit's persistent state. Every backend passes [`conformance`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The installation record, if `remit init` has run.
    async fn installation(&self) -> Result<Option<Installation>>;
    /// Records the installation and its first keys; `Conflict` if already installed.
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()>;

    /// Every key not yet past its `retire_after`, of every purpose.
    async fn keys(&self) -> Result<Vec<StoredKey>>;
    /// Makes `new` the active key of its purpose; the previous active key (`old`, which must
    /// still be the active one, else `Conflict`) is kept for verification until its
    /// `retire_after`. Bumps the bundle sequence. Returns the new sequence.
    async fn rotate_key(&self, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64>;
    /// Writes integrity seals on an installation made before Remit sealed its records.
    async fn reseal(&self, seal: Reseal, audit: AuditEvent) -> Result<()>;
    /// Increments on every change to the published key set.
    async fn bundle_sequence(&self) -> Result<u64>;

    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()>;
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>>;
    async fn list_workflows(&self) -> Result<Vec<Workflow>>;
    /// Moves a workflow `from` → `to` (resume); `Conflict` if it is not in `from`.
    /// Suspension goes through [`Store::kill`], which also revokes its tasks.
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()>;

    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()>;
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>>;
    async fn list_agents(&self) -> Result<Vec<Agent>>;
    /// Re-enables an agent (`from` → `to`). Disabling goes through [`Store::kill`].
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()>;

    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()>;
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>>;
    /// Marks the join token used and creates the instance, atomically: exactly one caller
    /// wins; a used or expired token or a disabled agent is a `Conflict`.
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()>;
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>>;
    /// Extends an active instance's identity; `Conflict` if it is no longer active.
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()>;

    /// Reads the workflow, agent and instance a new task is checked against.
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext>;
    /// Stores a new task. Re-checks inside the transaction that its workflow is active, its
    /// agent enabled and its instance (if any) active, so a concurrent kill always wins.
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()>;
    async fn task(&self, id: &TaskId) -> Result<Option<Task>>;
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>>;
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>>;
    /// Ends an active task as `completed` (or `expired`) and revokes its active subtree.
    /// `Conflict` if it is not active any more.
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport>;
    /// Pulls a kill switch: applies the cascade described on [`remit_core::model::KillTarget`]
    /// and audits the kill and every task and instance it revoked, in one transaction.
    async fn kill(&self, kill: Kill) -> Result<KillReport>;

    /// Appends events that change nothing else (e.g. refused attempts).
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()>;
    /// The newest record's `(seq, hash)`; `(0, zeros)` when empty.
    async fn audit_head(&self) -> Result<(u64, String)>;
    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>>;
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()>;
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;

    /// Stores `bundle` as the next policy version and makes it the active one, atomically;
    /// the audit event gets the version in its detail. Returns the version.
    async fn put_policy_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64>;
    /// The active (highest) policy version.
    async fn active_policy_set(&self) -> Result<Option<StoredPolicySet>>;
    /// Inserts or replaces entities (and their aliases) atomically; an alias already naming
    /// another entity of the same type is a `Conflict` and nothing is written.
    async fn put_entities(&self, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()>;
    /// An entity by type and id, or by one of its aliases.
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<StoredEntity>>;
    /// Entities of one type in id order, after `after` (paging), at most `limit`.
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<StoredEntity>>;

    async fn create_approval(&self, a: Approval, audit: AuditEvent) -> Result<()>;
    async fn approval(&self, id: &str) -> Result<Option<Approval>>;
    /// Newest first; `state` filters.
    async fn list_approvals(&self, state: Option<String>, limit: u32) -> Result<Vec<Approval>>;
    /// `pending` → `approved` (or `denied`) if not expired at `at`; else `Conflict`.
    async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: &str,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Uses an approval exactly once: `approved` → `used` only if its digest and policy
    /// version match and it has not expired at `at`; anything else is a `Conflict`.
    async fn consume_approval(
        &self,
        id: &str,
        digest: &str,
        policy_version: u64,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()>;

    /// Records that `task` used `tool` (first use, last use, count) together with `audit`
    /// (the decision that allowed it), in one transaction. A task holds at most
    /// [`MAX_TOOLS_PER_TASK`] distinct tools; uses of further new tools are not recorded.
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// The tools `task` has used, by name, in name order.
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>>;

    /// Committed [`Change`]s, from this process and (where the backend is shared) every
    /// other replica. A lagging receiver must treat `Lagged` as [`Change::Resync`].
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change>;
    /// Which backend this is, for logs and health (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
}
