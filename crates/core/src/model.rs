//! The domain's nouns: workflows, agents, agent instances, join tokens and tasks.
//!
//! These are snapshots: plain data that the store loads and saves and the rules inspect.
//! Wire (HTTP) types live in `remit-server`; these are the stored shapes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgentName, HumanId, InstanceId, JoinTokenId, TaskId, WorkflowName};
use crate::time::UnixMillis;

/// How sensitive the data a task touches is. Ordered: `public < internal < confidential < restricted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// Implements `as_str`, `Display` and `FromStr` for a fieldless enum from one table of names.
macro_rules! string_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    other => Err(DomainError::invalid(
                        $what,
                        format!(concat!("`{}` is not one of: ", $($s, " "),+), crate::ids::truncate_for_error(other)),
                    )),
                }
            }
        }
    };
}

string_enum!(Sensitivity, "sensitivity", {
    Public => "public", Internal => "internal", Confidential => "confidential", Restricted => "restricted",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    Active,
    Suspended,
}
string_enum!(WorkflowState, "workflow state", { Active => "active", Suspended => "suspended" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Enabled,
    Disabled,
}
string_enum!(AgentState, "agent state", { Enabled => "enabled", Disabled => "disabled" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Active,
    Revoked,
}
string_enum!(InstanceState, "instance state", { Active => "active", Revoked => "revoked" });

/// A task's lifecycle: `active → completed | revoked | expired`. The three ends are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Active,
    Completed,
    Revoked,
    Expired,
}
string_enum!(TaskState, "task state", {
    Active => "active", Completed => "completed", Revoked => "revoked", Expired => "expired",
});

/// A trust boundary for one purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: WorkflowName,
    pub purpose: String,
    /// The email of the human who answers for this workflow and may revoke it.
    pub owner: String,
    /// That human's record (every owner is a human known to Remit).
    pub owner_id: Option<HumanId>,
    /// When its owner was deactivated and nobody has taken it over since.
    pub orphaned_at: Option<UnixMillis>,
    /// The most sensitive data any of its tasks may touch.
    pub ceiling: Sensitivity,
    /// Tools its tasks may use; empty means none are named yet.
    pub allowed_tools: Vec<String>,
    pub max_task_ttl_secs: u64,
    pub max_delegation_depth: u32,
    /// Transitive-trust rules: which agent may delegate to which, whether workers may
    /// delegate further.
    #[serde(default)]
    pub trust: crate::delegation::TrustRules,
    pub state: WorkflowState,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// A registered piece of software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: AgentName,
    /// The email of the human who answers for this agent.
    pub owner: String,
    /// That human's record.
    pub owner_id: Option<HumanId>,
    /// When its owner was deactivated and nobody has taken it over since.
    pub orphaned_at: Option<UnixMillis>,
    /// The workflows this agent may start tasks in.
    pub workflows: Vec<WorkflowName>,
    pub state: AgentState,
    /// Incremented by every kill of the agent; a join token made under an earlier
    /// generation can never be redeemed (a counter, not a time: replica clocks drift).
    pub kill_generation: u64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// A one-time credential an agent instance trades for its instance identity.
/// Only a hash of the secret is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: JoinTokenId,
    pub agent: AgentName,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub used_at: Option<UnixMillis>,
    pub used_by: Option<InstanceId>,
    /// The agent's [`Agent::kill_generation`] when the token was made.
    pub agent_generation: u64,
    /// Set when a kill of its agent revoked it unused.
    pub revoked_at: Option<UnixMillis>,
}

/// One running copy of an agent that has proven itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub agent: AgentName,
    pub state: InstanceState,
    pub created_at: UnixMillis,
    /// When the current instance identity lapses unless renewed.
    pub expires_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
    pub revoke_reason: Option<String>,
    /// The one workflow it may start tasks in (set by the registration entry that attested
    /// it); `None`: any workflow its agent may.
    pub workflow: Option<WorkflowName>,
    /// Renewals never extend it past this (an instance attested by a platform token lives no
    /// longer than the token); `None`: renewable without limit.
    pub renew_until: Option<UnixMillis>,
}

/// One unit of work of one workflow, with its own identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub workflow: WorkflowName,
    pub agent: AgentName,
    /// The instance that started it; `None` when an admin started it directly.
    pub instance: Option<InstanceId>,
    pub parent: Option<TaskId>,
    pub intent: String,
    /// SHA-256 of the intent text, hex; this, not the text, goes into tokens.
    pub intent_hash: String,
    pub sensitivity: Sensitivity,
    pub audience: Vec<String>,
    /// The stored state; see [`crate::rules::effective_state`] for the state at a given time.
    pub state: TaskState,
    /// Who started it: a SPIFFE ID or `admin`.
    pub started_by: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub end_reason: Option<String>,
    /// Its depth, ancestors and the authority it holds (narrowed at every hop).
    #[serde(default)]
    pub delegation: crate::delegation::Delegation,
}

/// What a kill switch is aimed at. Cascades, all applied in one transaction:
/// - `Task`: the task and every active task below it (its delegation subtree).
/// - `Instance`: the instance and every active task it started, with their subtrees.
/// - `Agent`: the agent is disabled; all its active instances and tasks are revoked.
/// - `Workflow`: the workflow is suspended; all its active tasks are revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillTarget {
    Task(TaskId),
    Instance(InstanceId),
    Agent(AgentName),
    Workflow(WorkflowName),
}

/// One use of a kill switch: what, by whom, why, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub target: KillTarget,
    pub actor: String,
    pub reason: String,
    pub at: UnixMillis,
}

/// Everything one kill (or a task's completion) ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    pub tasks_revoked: Vec<TaskId>,
    pub instances_revoked: Vec<InstanceId>,
    /// Unused join tokens of a killed agent.
    #[serde(default)]
    pub join_tokens_revoked: Vec<JoinTokenId>,
    /// Leases (logins made by dynamic engines) of the ended tasks now waiting for their
    /// engine to remove them: revocation runs in the background.
    #[serde(default)]
    pub leases_pending: u64,
}
