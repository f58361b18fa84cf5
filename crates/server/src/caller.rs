//! Who is calling: established once per request by authentication, then handed to every
//! operation, which checks what it may do first.

use remit_core::ids::{AgentName, InstanceId, TaskId};
use remit_core::model::{Agent, Instance};
use remit_store::TaskSnapshot;

use crate::error::Error;

/// Who is calling, established once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holder of the admin credential, optionally naming the operator behind it.
    Admin { operator: Option<String> },
    /// A live agent instance, by its instance token, with the instance and agent records
    /// read when it authenticated (so operations need not read them again).
    Instance { id: InstanceId, agent: AgentName, spiffe_id: String, snapshot: Box<InstanceSnapshot> },
    /// A live task, by its own task token (audience including Remit's): it may ask about its
    /// own actions, read and wait for its own approval requests, watch and complete itself.
    Task { id: TaskId, spiffe_id: String, snapshot: Box<TaskSnapshot> },
}

/// The instance and agent records read when an instance authenticated.
pub type InstanceSnapshot = (Instance, Agent);

impl Caller {
    /// How the caller is named in audit records.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin { operator: Some(o) } => format!("admin:{o}"),
            Caller::Admin { operator: None } => "admin".into(),
            Caller::Instance { spiffe_id, .. } | Caller::Task { spiffe_id, .. } => spiffe_id.clone(),
        }
    }

    /// Refuses a task token: what follows is for the admin or an agent instance.
    pub fn require_not_task(&self) -> Result<(), Error> {
        match self {
            Caller::Task { .. } => {
                Err(Error::Denied("a task token may only ask about its own task's actions, approvals and state".into()))
            }
            _ => Ok(()),
        }
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        match self {
            Caller::Admin { .. } => Ok(()),
            Caller::Instance { .. } | Caller::Task { .. } => Err(Error::admin_only()),
        }
    }
}

/// Accepts an operator name for attribution only if it is short, printable text, in the one
/// normalised form humans are named by ([`remit_core::rules::human_identity`]).
pub fn clean_operator(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control)).then(|| remit_core::rules::human_identity(v))
}
