//! Domain errors: the reasons a rule refuses a request.
//!
//! Messages are lowercase, without a final period, and put user input in backticks (the
//! Cedar style guide). They never contain a secret or a token.

use crate::model::{Sensitivity, TaskState};

/// Why the domain refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("workflow `{0}` is suspended")]
    WorkflowSuspended(String),
    #[error("agent `{0}` is disabled")]
    AgentDisabled(String),
    #[error("agent `{agent}` may not run workflow `{workflow}`")]
    AgentNotInWorkflow { agent: String, workflow: String },
    #[error("agent instance `{0}` is not active")]
    InstanceInactive(String),
    #[error(
        "requested ttl of {} exceeds the maximum of {}",
        crate::time::format_secs(*requested),
        crate::time::format_secs(*max)
    )]
    TtlTooLong { requested: u64, max: u64 },
    #[error("data sensitivity `{requested}` exceeds the workflow's ceiling `{ceiling}`")]
    SensitivityAboveCeiling { requested: Sensitivity, ceiling: Sensitivity },
    #[error("task is {from} and cannot become {to}")]
    IllegalTransition { from: TaskState, to: TaskState },
    #[error("join token is expired")]
    JoinTokenExpired,
    #[error("join token was already used")]
    JoinTokenUsed,
    #[error("join token was revoked by a kill of its agent")]
    JoinTokenRevoked,
    #[error("human `{0}` is deactivated")]
    HumanDeactivated(String),
    #[error("`{0}` belongs to another human, or the provider has not verified it")]
    EmailTaken(String),
}

impl DomainError {
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        DomainError::Invalid { what, why: why.into() }
    }
}
