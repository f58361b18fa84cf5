//! The service layer's errors: what went wrong, in the service's own words, with no HTTP
//! vocabulary. The API layer maps each to a status in one place (`crate::api::error`).

use remit_core::DomainError;
use remit_store::StoreError;
use remit_token::TokenError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed or out of bounds (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// No valid credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid caller may not do this.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    /// The state moved meanwhile, or the transition is not legal now.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the store) is down; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or corrupt data: the detail is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn unauthenticated() -> Self {
        Error::Unauthenticated("a valid bearer credential is required".into())
    }

    pub fn admin_only() -> Self {
        Error::Denied("this operation requires the admin credential".into())
    }
}

impl From<DomainError> for Error {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { .. } | DomainError::TtlTooLong { .. } => Error::Invalid(e.to_string()),
            DomainError::WorkflowSuspended(_)
            | DomainError::AgentDisabled(_)
            | DomainError::AgentNotInWorkflow { .. }
            | DomainError::InstanceInactive(_)
            | DomainError::SensitivityAboveCeiling { .. }
            | DomainError::HumanDeactivated(_) => Error::Denied(e.to_string()),
            DomainError::IllegalTransition { .. } | DomainError::EmailTaken(_) => Error::Conflict(e.to_string()),
            DomainError::JoinTokenExpired | DomainError::JoinTokenUsed | DomainError::JoinTokenRevoked => {
                Error::Unauthenticated(e.to_string())
            }
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Error::NotFound(e.to_string()),
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Unavailable(m) => {
                tracing::warn!(detail = %m, "store unavailable");
                Error::Unavailable("the store is unavailable; retry shortly".into())
            }
            StoreError::Corrupt(m) | StoreError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Error::Unauthenticated(e.to_string())
    }
}

impl From<remit_policy::PolicyError> for Error {
    fn from(e: remit_policy::PolicyError) -> Self {
        Error::Invalid(e.to_string())
    }
}
