//! Dynamic credentials: a login a tool's engine makes for one task (a PostgreSQL role with a
//! fresh password), tracked as a [`Lease`] until it is revoked.
//!
//! A lease is written **before** the engine makes the login, so a crash in between leaves a
//! row that revocation cleans up, never an untracked login. It dies with its task: the kill
//! cascade marks the leases of every task it ends as `revoking` in the kill's own transaction;
//! expiry does the same when the lease's deadline passes. Revocation then runs in the
//! background, in bounded batches, and a lease stays `revoking` until its engine confirms —
//! failures are retried with [`backoff`] for ever, and a lease that failed
//! [`STUCK_AFTER_ATTEMPTS`] times is reported as stuck (never dropped, never marked
//! irrevocable).
//!
//! Pure: the rules, the tool's engine configuration ([`DatabaseConfig`]) and the SQL text an
//! engine runs (identifiers quoted here); the IO lives in the server's engines.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgentName, LeaseId, TaskId, ToolName, WorkflowName};
use crate::time::UnixMillis;

/// Most live leases one task holds at once (each call of the credential endpoint makes one).
pub const MAX_LEASES_PER_TASK: u32 = 64;
/// Failed revocation attempts after which a lease is reported as stuck (and still retried).
pub const STUCK_AFTER_ATTEMPTS: u32 = 6;
/// Longest wait between two revocation attempts.
pub const MAX_BACKOFF_MILLIS: i64 = 5 * 60 * 1000;
/// Default and hard maximum of a login's lifetime (always capped by its task's expiry).
pub const DEFAULT_LEASE_TTL_SECS: u64 = 3600;
pub const HARD_MAX_LEASE_TTL_SECS: u64 = 86_400;
/// Default connection limit of one login.
pub const DEFAULT_CONNECTION_LIMIT: u32 = 4;
/// Most grant statements, and the longest one.
pub const MAX_GRANTS: usize = 32;
pub const MAX_GRANT_LEN: usize = 4096;
/// Longest error text kept on a lease.
pub const MAX_ERROR_LEN: usize = 300;
/// What a grant template writes for the role's (quoted) name.
pub const ROLE_PLACEHOLDER: &str = "{{role}}";

/// The kinds of dynamic engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Postgres,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        (s == "postgres").then_some(EngineKind::Postgres)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// The login exists (or is being made) and may be used until `expires_at`.
    Active,
    /// The task ended, the lease expired or someone revoked it: the engine must remove the
    /// login; retried until it confirms.
    Revoking,
    /// The engine confirmed the login is gone.
    Revoked,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(LeaseState::Active),
            "revoking" => Some(LeaseState::Revoking),
            "revoked" => Some(LeaseState::Revoked),
            _ => None,
        }
    }
}

/// One login made for one task. Holds no secret: the password went to the task once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub tool: ToolName,
    pub task: TaskId,
    pub workflow: WorkflowName,
    pub agent: AgentName,
    pub engine: EngineKind,
    /// What the engine calls the login (the role name).
    pub handle: String,
    /// Where the login was made (`host:port/database`): revocation refuses to report a
    /// login gone from a different database than the one it was made on.
    pub target: String,
    pub state: LeaseState,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// When revocation was asked for, and why.
    pub revoke_requested_at: Option<UnixMillis>,
    pub revoke_reason: Option<String>,
    /// Failed revocation attempts so far.
    pub attempts: u32,
    /// When the next revocation attempt is due, or the current claim ends; on a new lease,
    /// the end of the time its login has to be made (revocation waits for it).
    pub next_attempt_at: Option<UnixMillis>,
    /// The last attempt's error (no secret: engine errors are cut and scrubbed).
    pub last_error: Option<String>,
    pub revoked_at: Option<UnixMillis>,
}

impl Lease {
    /// Revocation failed often enough that a human should look.
    pub fn stuck(&self) -> bool {
        self.state == LeaseState::Revoking && self.attempts >= STUCK_AFTER_ATTEMPTS
    }
}

/// How long to wait after the `attempts`-th failure: `base`, twice that, four times … up to
/// five minutes (with the default base of 1 s: 1 s, 2 s, 4 s …).
pub fn backoff(attempts: u32, base_millis: i64) -> i64 {
    let exp = attempts.saturating_sub(1).min(30);
    base_millis.max(1).saturating_mul(1i64 << exp).min(MAX_BACKOFF_MILLIS)
}

/// A lease's deadline: the task's expiry or the engine's longest login, whichever is first.
pub fn lease_expiry(now: UnixMillis, task_expires_at: UnixMillis, max_ttl_secs: u64) -> UnixMillis {
    let cap = now.0.saturating_add(i64::try_from(max_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    UnixMillis(cap.min(task_expires_at.0))
}

/// Cuts an engine error for storage: one line, at most [`MAX_ERROR_LEN`] bytes.
pub fn error_text(e: &str) -> String {
    let line: String = e.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut cut = line.trim().to_owned();
    if cut.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncate(end);
        cut.push('…');
    }
    cut
}

/// A tool's dynamic engine: how Remit makes a login for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub engine: EngineKind,
    /// The tool secret holding the engine's admin connection URL
    /// (`postgres://admin:password@host:port/database`); it needs `CREATEROLE`.
    pub admin_secret: String,
    /// The scope (one of the tool's) a task must be allowed to get a login: the decision's
    /// action.
    pub scope: String,
    /// Statements run, in the same transaction, after the role is made; `{{role}}` stands for
    /// its quoted name (e.g. `GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{role}}`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Longest login, seconds (always capped by the task's expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<u64>,
    /// Most concurrent connections of one login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u32>,
    /// `host[:port]` handed to tasks when they reach the database by another address than
    /// Remit does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_host: Option<String>,
    /// The environment variable `remit exec` sets to the connection URL, when the workflow
    /// lets this tool's logins into a child's environment (default `DATABASE_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl DatabaseConfig {
    pub fn max_ttl(&self) -> u64 {
        self.max_ttl_secs.unwrap_or(DEFAULT_LEASE_TTL_SECS)
    }
    pub fn connection_limit(&self) -> u32 {
        self.connection_limit.unwrap_or(DEFAULT_CONNECTION_LIMIT)
    }
    pub fn env_var(&self) -> &str {
        self.env.as_deref().unwrap_or("DATABASE_URL")
    }

    /// Checks it against the tool's `scopes`.
    pub fn check(&self, scopes: &[String]) -> Result<(), DomainError> {
        let bad = |m: String| Err(DomainError::invalid("database", m));
        crate::ids::SecretName::parse(&self.admin_secret)?;
        if !scopes.iter().any(|s| s == &self.scope) {
            return bad(format!("scope `{}` is not one of the tool's scopes", self.scope));
        }
        if self.grants.len() > MAX_GRANTS {
            return bad(format!("at most {MAX_GRANTS} grant statements"));
        }
        for g in &self.grants {
            check_statement(g).or_else(bad)?;
        }
        match self.max_ttl_secs {
            Some(0) => return bad("max_ttl_secs must be at least 1".into()),
            Some(t) if t > HARD_MAX_LEASE_TTL_SECS => {
                return bad(format!("max_ttl_secs is at most {HARD_MAX_LEASE_TTL_SECS}"));
            }
            _ => {}
        }
        if matches!(self.connection_limit, Some(0) | Some(1001..)) {
            return bad("connection_limit must be 1-1000".into());
        }
        if let Some(h) = &self.connect_host {
            let ok = !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
            if !ok {
                return bad("connect_host must be host[:port]".into());
            }
        }
        if let Some(e) = &self.env {
            let ok = !e.is_empty()
                && e.len() <= 64
                && !e.starts_with(|c: char| c.is_ascii_digit())
                && e.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !e.starts_with("REMIT_");
            if !ok {
                return bad("env must be an upper-case variable name not starting with REMIT_".into());
            }
        }
        Ok(())
    }
}

/// One grant statement: a single statement (no `;` inside), naming the role, with no other
/// placeholder.
fn check_statement(g: &str) -> Result<(), String> {
    let t = g.trim().trim_end_matches(';').trim();
    if t.is_empty() || t.len() > MAX_GRANT_LEN {
        return Err(format!("a grant statement is 1-{MAX_GRANT_LEN} bytes"));
    }
    if t.contains(';') {
        return Err("one statement per grant (no `;` inside)".into());
    }
    if !t.contains(ROLE_PLACEHOLDER) {
        return Err(format!("a grant statement names the role as {ROLE_PLACEHOLDER}"));
    }
    if t.replace(ROLE_PLACEHOLDER, "").contains("{{") {
        return Err(format!("the only placeholder is {ROLE_PLACEHOLDER}"));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("control characters in a grant statement".into());
    }
    Ok(())
}

/// A role name for `task`: `remit_` + the task id's first 8 hex digits + 16 random hex
/// digits. Lower-case letters, digits and `_` only (43 bytes, under PostgreSQL's 63).
pub fn role_name(task: &TaskId, random: [u8; 8]) -> String {
    let t = task.as_str().trim_start_matches("t-");
    let mut r = String::with_capacity(16);
    for b in random {
        r.push_str(&format!("{b:02x}"));
    }
    format!("remit_{}_{r}", &t[..8.min(t.len())])
}

/// Whether `s` is exactly a role name [`role_name`] makes (`remit_` + 8 + `_` + 16 lower-case
/// hex digits): safe in any SQL text, and never an operator's role such as `remit_admin`.
pub fn is_role_name(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    s.strip_prefix("remit_").and_then(|r| r.split_once('_')).is_some_and(|(t, r)| hex(t, 8) && hex(r, 16))
}

/// A PostgreSQL identifier, quoted.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A PostgreSQL string literal (standard-conforming strings), quoted.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A grant statement with the role's quoted name in place of `{{role}}`.
pub fn render_grant(template: &str, role: &str) -> String {
    template.trim().trim_end_matches(';').replace(ROLE_PLACEHOLDER, &quote_ident(role))
}

/// `CREATE ROLE` for a login: `verifier` is the SCRAM-SHA-256 verifier of its password (so the
/// password itself never reaches the database server, its logs or `pg_stat_statements`),
/// valid until `until` (UTC, RFC 3339).
pub fn create_role(role: &str, verifier: &str, until: &str, connection_limit: u32) -> String {
    format!(
        "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
         CONNECTION LIMIT {connection_limit} PASSWORD {} VALID UNTIL {}",
        quote_ident(role),
        quote_literal(verifier),
        quote_literal(until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DatabaseConfig {
        DatabaseConfig {
            engine: EngineKind::Postgres,
            admin_secret: "admin-url".into(),
            scope: "connect".into(),
            grants: vec!["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{role}};".into()],
            max_ttl_secs: None,
            connection_limit: None,
            connect_host: None,
            env: None,
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(1, 1000), 1000);
        assert_eq!(backoff(2, 1000), 2000);
        assert_eq!(backoff(6, 1000), 32_000);
        assert_eq!(backoff(9, 1000), 256_000);
        assert_eq!(backoff(10, 1000), MAX_BACKOFF_MILLIS);
        assert_eq!(backoff(u32::MAX, 1000), MAX_BACKOFF_MILLIS);
        assert_eq!(backoff(3, 50), 200);
        assert_eq!(backoff(u32::MAX, i64::MAX), MAX_BACKOFF_MILLIS);
    }

    #[test]
    fn a_lease_ends_with_its_task_or_sooner() {
        assert_eq!(lease_expiry(UnixMillis(1000), UnixMillis(5000), 3600), UnixMillis(5000));
        assert_eq!(lease_expiry(UnixMillis(1000), UnixMillis(10_000_000), 2), UnixMillis(3000));
    }

    #[test]
    fn configs_are_checked() {
        let scopes = vec!["connect".to_owned()];
        cfg().check(&scopes).unwrap();
        let mut c = cfg();
        c.scope = "other".into();
        assert!(c.check(&scopes).is_err());
        for g in ["GRANT x TO {{role}}; DROP TABLE y", "GRANT SELECT ON t TO bob", "GRANT {{role}} TO {{other}}", ""] {
            let mut c = cfg();
            c.grants = vec![g.into()];
            assert!(c.check(&scopes).is_err(), "{g}");
        }
        let mut c = cfg();
        c.env = Some("REMIT_TASK_TOKEN".into());
        assert!(c.check(&scopes).is_err());
        let mut c = cfg();
        c.connect_host = Some("db.example:5432/evil?x".into());
        assert!(c.check(&scopes).is_err());
        let mut c = cfg();
        c.max_ttl_secs = Some(HARD_MAX_LEASE_TTL_SECS + 1);
        assert!(c.check(&scopes).is_err());
    }

    #[test]
    fn role_names_are_safe_and_statements_quote() {
        let t = TaskId::from_random([0xab; 16]);
        let r = role_name(&t, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r, "remit_abababab_0102030405060708");
        assert!(is_role_name(&r));
        assert!(!is_role_name("remit_x\"; DROP"));
        assert!(!is_role_name("postgres"));
        assert!(!is_role_name("remit_admin"));
        assert!(!is_role_name("remit_abababab_010203040506070"));
        assert!(!is_role_name("remit_abababab_0102030405060708_x"));
        assert_eq!(render_grant("GRANT SELECT ON t TO {{role}};", &r), format!("GRANT SELECT ON t TO \"{r}\""));
        assert_eq!(quote_literal("a'b"), "'a''b'");
        let sql = create_role(&r, "SCRAM-SHA-256$4096:x$y:z", "2026-11-26T10:00:00Z", 4);
        assert!(sql.contains("VALID UNTIL '2026-11-26T10:00:00Z'") && sql.contains("CONNECTION LIMIT 4"), "{sql}");
    }

    #[test]
    fn errors_are_cut_to_one_line() {
        assert_eq!(error_text("a\nb"), "a b");
        assert!(error_text(&"é".repeat(400)).len() <= MAX_ERROR_LEN + 3);
    }
}
