//! Identity: workflows, agents, join tokens, instances, tasks, the tools each task used, and
//! the kill switches that end them.
//!
//! Which cached reads a write invalidates is stated once, next to its SQL, with
//! `ctx.changed(…)`: a workflow state change announces [`Change::Workflow`], an agent's
//! [`Change::Agent`], an instance renewal [`Change::Instance`], a kill or an ended task
//! [`Change::of_kill`]. Creating things announces nothing (nothing cached can be wrong).
//!
//! A kill is decided by [`remit_core::cascade::plan`]; a backend finds what the kill reaches
//! (walking the task tree a level at a time, with no depth limit) and applies the plan.

pub(crate) mod cache;
#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod postgres_kills;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{AgentName, HumanId, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;

use crate::Change;
use crate::{Result, StoreError};

/// What can be owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Workflow(WorkflowName),
    Agent(AgentName),
    Tool(remit_core::ids::ToolName),
}

impl Owned {
    pub(crate) fn table(&self) -> (&'static str, &str, &'static str) {
        match self {
            Owned::Workflow(w) => ("workflows", w.as_str(), "workflow"),
            Owned::Agent(a) => ("agents", a.as_str(), "agent"),
            Owned::Tool(t) => ("tools", t.as_str(), "tool"),
        }
    }
    /// What a new owner invalidates in caches (tools are not cached).
    pub(crate) fn change(&self) -> Option<Change> {
        match self {
            Owned::Workflow(w) => Some(Change::Workflow(w.clone())),
            Owned::Agent(a) => Some(Change::Agent(a.clone())),
            Owned::Tool(_) => None,
        }
    }
}

/// Most distinct tools recorded for one task (the `tools_used` a decision sees).
pub const MAX_TOOLS_PER_TASK: i64 = 256;

pub(crate) const WORKFLOW_COLS: &str = "name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
     max_delegation_depth, state, created_at, updated_at, owner_id, orphaned_at, trust";
pub(crate) const AGENT_COLS: &str =
    "name, owner, workflows, state, created_at, updated_at, kill_generation, owner_id, orphaned_at";
pub(crate) const JOIN_COLS: &str =
    "id, agent, secret_hash, created_at, expires_at, used_at, used_by, agent_generation, revoked_at";
pub(crate) const INSTANCE_COLS: &str =
    "id, agent, state, created_at, expires_at, revoked_at, revoke_reason, workflow, renew_until";
pub(crate) const TASK_COLS: &str = "id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
     state, started_by, created_at, expires_at, ended_at, end_reason, delegation";
/// The columns a kill cascade reads of each task.
pub(crate) const NODE_COLS: &str = "id, parent, workflow, agent, state, expires_at";
/// Ids per statement when a cascade walks the tree (SQLite's parameter limit is 32766).
pub(crate) const WALK_CHUNK: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub workflow: Option<WorkflowName>,
    pub agent: Option<AgentName>,
    pub instance: Option<InstanceId>,
    pub state: Option<TaskState>,
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

/// A kill's refusal as the store reports it.
pub(crate) fn refused(e: remit_core::cascade::KillError) -> StoreError {
    StoreError::Conflict(e.to_string())
}

/// Workflows, agents, join tokens, instances, tasks and kills.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Stores a new workflow. With `owner_id` set, it is linked to the human holding `owner`
    /// (that proposed id is inserted as an unverified human when nobody holds the email), in
    /// the same transaction; `Conflict` if that human is deactivated.
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()>;
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>>;
    async fn list_workflows(&self) -> Result<Vec<Workflow>>;
    /// Moves a workflow `from` → `to` (resume); `Conflict` if it is not in `from`.
    /// Suspension goes through [`IdentityStore::kill`], which also revokes its tasks.
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()>;

    /// Replaces a workflow's allowed tools (announced as `Change::Workflow`, so the next
    /// decision of any of its tasks, on any replica, sees the new list).
    async fn set_workflow_tools(&self, name: &WorkflowName, tools: Vec<String>, audit: AuditEvent) -> Result<()>;
    /// Replaces a workflow's transitive-trust rules (announced as `Change::Workflow`; they
    /// are read when a child task starts).
    async fn set_workflow_trust(
        &self,
        name: &WorkflowName,
        trust: remit_core::delegation::TrustRules,
        audit: AuditEvent,
    ) -> Result<()>;
    /// Gives a workflow or agent a new owner (linked as [`IdentityStore::create_workflow`]
    /// says, `proposed` inserted as an unverified human when nobody holds the email) and
    /// clears its orphan mark. `NotFound`, or `Conflict` for a deactivated owner.
    async fn set_owner(&self, target: Owned, owner: &str, proposed: HumanId, audit: AuditEvent) -> Result<()>;
    /// Stores a new agent; its owner is linked as [`IdentityStore::create_workflow`] says.
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()>;
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>>;
    async fn list_agents(&self) -> Result<Vec<Agent>>;
    /// Re-enables an agent (`from` → `to`). Disabling goes through [`IdentityStore::kill`].
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()>;

    /// Stores a join token under its agent's current kill generation.
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()>;
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>>;
    /// Marks the join token used and creates the instance, atomically: exactly one caller
    /// wins; a used, expired or revoked token, a token of an earlier kill generation, or a
    /// disabled agent is a `Conflict`.
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()>;
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>>;
    /// Extends an active instance's identity; `Conflict` if it is no longer active.
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// Extends a live task to `expires_at`: `Conflict` unless it is active, unexpired at the
    /// audit record's time, its workflow active and its agent enabled (re-checked in the
    /// transaction), and `expires_at` later than its current expiry.
    async fn renew_task(&self, id: &TaskId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()>;

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
    /// Ends an active task as `completed` (or `expired`) and revokes its live subtree.
    /// `Conflict` if it is not active any more.
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport>;
    /// Pulls a kill switch: applies [`remit_core::cascade::plan`] and its audit records, in
    /// one transaction.
    async fn kill(&self, kill: Kill) -> Result<KillReport>;

    /// Records that `task` was allowed to use `tool` (with the decision's audit record, in one
    /// transaction); at most [`MAX_TOOLS_PER_TASK`] distinct tools per task are kept.
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()>;
    /// Counts one allowed call of a task held to a call budget (its delegation's
    /// `max_calls`) against **every** budget above it — its own, each ancestor's that has one,
    /// and its grant's — and records it as [`IdentityStore::record_tool_use`] does (or just its
    /// audit record without a tool), in one transaction. `Ok(false)`, with nothing written,
    /// when any of those budgets is spent: a subtree never makes more calls than its root was
    /// given, nor the tasks under a grant more than the grant.
    async fn record_call(&self, task: &TaskId, tool: Option<&str>, at: UnixMillis, audit: AuditEvent) -> Result<bool>;
    /// The tools `task` was allowed to use, sorted.
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>>;
}
