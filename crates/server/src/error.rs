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
    /// Too many requests of this kind for now (a stated rate limit); retry later.
    #[error("{0}")]
    TooMany(String),
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

/// An OAuth 2.0 token endpoint error (RFC 6749 §5.2, RFC 8693 §2.2.2): a registered `error`
/// code and a description; or, with `service` set, a failure of Remit itself (the store is
/// down, a bug) that is answered as any other such failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
    /// Approval requests that must be decided before the scopes asked for are granted.
    pub approvals: Vec<String>,
    pub service: Option<Error>,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        OAuthError { code, description: description.into(), approvals: vec![], service: None }
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        OAuthError { code: "server_error", description: String::new(), approvals: vec![], service: Some(e) }
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
