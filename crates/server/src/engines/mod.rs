//! Dynamic credential engines: what makes a login for one task and removes it again.
//!
//! An [`Engine`] is given the tool's configuration and its admin connection URL (opened from
//! the tool's sealed secret by the caller, never stored here) and does the IO; what to run is
//! decided in `remit_core::lease`. Both calls are idempotent in effect: making a login that
//! then fails leaves a lease that revocation cleans up, and removing a login that is already
//! gone succeeds — which is what lets background revocation retry without bookkeeping.

pub mod postgres;

use async_trait::async_trait;
use remit_core::ids::ToolName;
use remit_core::lease::{DatabaseConfig, EngineKind};
use remit_core::time::UnixMillis;

/// Why an engine call failed. The text never holds a password or the admin URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub message: String,
    /// A login of that name exists already (not one this lease made: never remove it).
    pub exists: bool,
}

impl EngineError {
    pub fn new(message: impl Into<String>) -> Self {
        EngineError { message: message.into(), exists: false }
    }
}

/// A login to make.
pub struct NewLogin<'a> {
    pub tool: &'a ToolName,
    /// Fingerprint of the admin secret's version (connections are pooled per version).
    pub admin_fingerprint: &'a str,
    pub admin_url: &'a str,
    pub cfg: &'a DatabaseConfig,
    pub role: &'a str,
    /// The password's verifier (the engine never sees the password).
    pub verifier: &'a str,
    pub until: UnixMillis,
}

/// Where the logins to remove live.
pub struct Admin<'a> {
    pub tool: &'a ToolName,
    pub admin_fingerprint: &'a str,
    pub admin_url: &'a str,
}

#[async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;
    /// Where `admin_url` points (`host:port/database`, no credentials): recorded on each
    /// lease, so a login is never reported gone from a database it was not made on.
    fn target(&self, admin_url: &str) -> Result<String, EngineError>;
    /// Makes the login, with its grants, in one transaction.
    async fn create(&self, login: NewLogin<'_>) -> Result<(), EngineError>;
    /// Removes each login (ending its sessions first); one result per role, in order. A role
    /// that does not exist is removed already.
    async fn revoke(&self, admin: Admin<'_>, roles: &[String]) -> Vec<Result<(), EngineError>>;
}

/// The engines this server runs, by kind.
pub struct Engines {
    postgres: postgres::PostgresEngine,
}

impl Engines {
    /// The engines, each waiting at most `connect_timeout` for a connection, with statement
    /// timeouts well inside `claim`.
    pub fn new(connect_timeout: std::time::Duration, claim: std::time::Duration) -> Self {
        Engines { postgres: postgres::PostgresEngine::new(connect_timeout, claim) }
    }

    pub fn get(&self, kind: EngineKind) -> &dyn Engine {
        match kind {
            EngineKind::Postgres => &self.postgres,
        }
    }
}
