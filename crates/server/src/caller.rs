//! Who is calling: established once per request by authentication, then handed to every
//! operation, which checks what it may do first.

use remit_core::human::Human;
use remit_core::ids::{AgentName, InstanceId, SessionId, TaskId};
use remit_core::model::{Agent, Instance};
use remit_store::TaskSnapshot;

use crate::error::Error;

/// Who is calling, established once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holder of the admin credential from `remit init` (the break-glass credential),
    /// optionally naming the operator behind it.
    Admin { operator: Option<String> },
    /// A live agent instance, by its instance token, with the instance and agent records
    /// read when it authenticated (so operations need not read them again).
    Instance { id: InstanceId, agent: AgentName, spiffe_id: String, snapshot: Box<InstanceSnapshot> },
    /// A live task, by its own task token (audience including Remit's): it may ask about its
    /// own actions, read and wait for its own approval requests, watch and complete itself.
    Task { id: TaskId, spiffe_id: String, snapshot: Box<TaskSnapshot>, binding: Option<Box<Binding>> },
    /// A signed-in human, by the access token of one of their live sessions.
    Human { human: Box<Human>, session: SessionId },
}

/// A sender-constrained (DPoP) token's `jti` and the thumbprint of the key it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub jti: String,
    pub jkt: String,
}

/// The instance and agent records read when an instance authenticated.
pub type InstanceSnapshot = (Instance, Agent);

impl Caller {
    /// How the caller is named in audit records.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin { operator: Some(o) } => format!("break-glass:{o}"),
            Caller::Admin { operator: None } => "break-glass".into(),
            Caller::Instance { spiffe_id, .. } | Caller::Task { spiffe_id, .. } => spiffe_id.clone(),
            Caller::Human { human, session } => remit_core::human::actor(&human.id, session),
        }
    }

    /// Refuses a task token and a human's session: what follows is for the break-glass
    /// credential or an agent instance (a PEP).
    pub fn require_not_task(&self) -> Result<(), Error> {
        match self {
            Caller::Task { .. } => {
                Err(Error::Denied("a task token may only ask about its own task's actions, approvals and state".into()))
            }
            Caller::Human { .. } => {
                Err(Error::Denied("this is for agents and enforcement points, not a human's session".into()))
            }
            _ => Ok(()),
        }
    }

    /// Refuses agents: what follows is Remit's admin API (a human, checked by Remit's own
    /// policy next, or the break-glass credential).
    pub fn require_human_or_admin(&self) -> Result<(), Error> {
        match self {
            Caller::Admin { .. } | Caller::Human { .. } => Ok(()),
            Caller::Instance { .. } | Caller::Task { .. } => Err(Error::admin_only()),
        }
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        match self {
            Caller::Admin { .. } => Ok(()),
            Caller::Instance { .. } | Caller::Task { .. } | Caller::Human { .. } => Err(Error::admin_only()),
        }
    }
}

/// Accepts an operator name for attribution only if it is short, printable text, in the one
/// normalised form humans are named by ([`remit_core::rules::human_identity`]).
pub fn clean_operator(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control)).then(|| remit_core::rules::human_identity(v))
}
