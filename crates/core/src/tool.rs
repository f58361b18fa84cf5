//! Tools and the per-tool credentials a task obtains for them (RFC 8693 token exchange).
//!
//! A [`Tool`] is registered with a name, the audience URI its credentials carry, the scopes it
//! accepts, the longest credential it takes and the classification of the data behind it. A
//! task trades its own token for a [`Credential`] naming exactly one tool: [`exchange`] decides
//! the scopes and the expiry, pure; the server asks the policy about each scope in between.
//! A credential hangs off its task: it is live only while the task is ([`credential_liveness`]
//! is checked together with the task's own liveness).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{CredentialId, HumanId, TaskId, ToolName};
use crate::model::{Sensitivity, Task};
use crate::rules::{Limits, Liveness, check_owner, check_text, human_identity};
use crate::time::UnixMillis;

/// Most scopes one tool declares.
pub const MAX_SCOPES: usize = 64;
/// Longest scope name.
pub const MAX_SCOPE_LEN: usize = 128;
/// Longest audience URI.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Default longest credential for a tool: five minutes.
pub const DEFAULT_TOOL_MAX_TTL_SECS: u64 = 300;
/// No tool credential lives longer than an hour, whatever the tool says.
pub const HARD_MAX_TOOL_TTL_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolState {
    Active,
    Disabled,
}

impl ToolState {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolState::Active => "active",
            ToolState::Disabled => "disabled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ToolState::Active),
            "disabled" => Some(ToolState::Disabled),
            _ => None,
        }
    }
}

/// What a tool gives access to. With a trust domain configured for its class, a tool's
/// credentials are signed by that trust domain's own keys, so a credential taken from one
/// path (say, model access) verifies nowhere on another (data access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolClass {
    /// A model endpoint (an LLM API, an embedding service).
    Model,
    /// Any other tool (the default).
    Tool,
    /// A data store (a database, a document store, a warehouse).
    Data,
}

impl ToolClass {
    pub const ALL: [ToolClass; 3] = [ToolClass::Model, ToolClass::Tool, ToolClass::Data];
    pub fn as_str(self) -> &'static str {
        match self {
            ToolClass::Model => "model",
            ToolClass::Tool => "tool",
            ToolClass::Data => "data",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "model" => Some(ToolClass::Model),
            "tool" => Some(ToolClass::Tool),
            "data" => Some(ToolClass::Data),
            _ => None,
        }
    }
}

impl std::fmt::Display for ToolClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered tool: an API or service that accepts per-tool credentials from Remit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: ToolName,
    /// The `aud` of its credentials (an absolute URI, unique among tools).
    pub audience: String,
    /// The scopes it accepts, sorted; each is decided as the Cedar action of the same name.
    pub scopes: Vec<String>,
    pub max_ttl_secs: u64,
    /// The most sensitive data behind it.
    pub classification: Sensitivity,
    /// What it gives access to; decides the trust domain its credentials come from.
    pub class: ToolClass,
    /// How the injecting proxy reaches it (`None`: not callable through the proxy).
    pub proxy: Option<crate::proxy::ProxyConfig>,
    /// How Remit makes a login per task for it (`None`: no dynamic credentials).
    pub database: Option<crate::lease::DatabaseConfig>,
    pub owner: String,
    pub owner_id: Option<HumanId>,
    /// When its owner was deactivated and nobody has taken it over since.
    pub orphaned_at: Option<UnixMillis>,
    pub state: ToolState,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// SHA-256 (hex) of the tool's introspection secret; only the tool holds the secret.
    pub secret_hash: String,
}

/// What an operator asks for when registering a tool.
#[derive(Debug, Clone)]
pub struct NewTool {
    pub name: ToolName,
    pub audience: String,
    pub scopes: Vec<String>,
    pub max_ttl_secs: Option<u64>,
    pub classification: Sensitivity,
    pub class: ToolClass,
    pub proxy: Option<crate::proxy::ProxyConfig>,
    pub database: Option<crate::lease::DatabaseConfig>,
    pub owner: String,
    /// SHA-256 (hex) of the introspection secret the server made for it.
    pub secret_hash: String,
}

/// A scope is an RFC 6749 scope-token (`%x21 / %x23-5B / %x5D-7E`), at most
/// [`MAX_SCOPE_LEN`] bytes.
pub fn check_scope(s: &str) -> Result<(), DomainError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "scope",
            format!(
                "`{}` must be 1-{MAX_SCOPE_LEN} printable ASCII characters without spaces, `\"` or `\\`",
                crate::ids::truncate_for_error(s)
            ),
        ))
    }
}

/// An audience is an absolute `https://`, `http://` or `urn:`/`spiffe://` URI without spaces.
/// Whether `a` has the shape a tool's audience must have (an absolute URI); only such an
/// audience can be a registered tool's.
pub fn is_tool_audience(a: &str) -> bool {
    ["https://", "http://", "urn:", "spiffe://"].iter().any(|p| a.starts_with(p) && a.len() > p.len())
        && !a.chars().any(char::is_whitespace)
}

fn check_audience(a: &str) -> Result<(), DomainError> {
    check_text("audience", a, MAX_AUDIENCE_LEN, true)?;
    if !is_tool_audience(a) {
        return Err(DomainError::invalid("audience", "must be an absolute URI (`https://…`, `urn:…`, `spiffe://…`)"));
    }
    Ok(())
}

/// Validates a registration and builds the stored tool.
pub fn new_tool(req: NewTool, limits: &Limits, now: UnixMillis) -> Result<Tool, DomainError> {
    check_audience(&req.audience)?;
    check_owner(&req.owner, limits)?;
    if req.scopes.is_empty() {
        return Err(DomainError::invalid("scopes", "a tool accepts at least one scope"));
    }
    if req.scopes.len() > MAX_SCOPES {
        return Err(DomainError::invalid("scopes", format!("at most {MAX_SCOPES}")));
    }
    for s in &req.scopes {
        check_scope(s)?;
    }
    let scopes: BTreeSet<String> = req.scopes.into_iter().collect();
    if let Some(p) = &req.proxy {
        p.check(&scopes.iter().cloned().collect::<Vec<_>>())?;
    }
    if let Some(d) = &req.database {
        d.check(&scopes.iter().cloned().collect::<Vec<_>>())?;
    }
    let max_ttl = req.max_ttl_secs.unwrap_or(DEFAULT_TOOL_MAX_TTL_SECS);
    if max_ttl == 0 {
        return Err(DomainError::invalid("max ttl", "must be at least one second"));
    }
    if max_ttl > HARD_MAX_TOOL_TTL_SECS {
        return Err(DomainError::TtlTooLong { requested: max_ttl, max: HARD_MAX_TOOL_TTL_SECS });
    }
    Ok(Tool {
        name: req.name,
        audience: req.audience,
        scopes: scopes.into_iter().collect(),
        max_ttl_secs: max_ttl,
        classification: req.classification,
        class: req.class,
        proxy: req.proxy,
        database: req.database,
        owner: human_identity(&req.owner),
        owner_id: None,
        orphaned_at: None,
        state: ToolState::Active,
        created_at: now,
        updated_at: now,
        secret_hash: req.secret_hash,
    })
}

/// Parses an OAuth `scope` parameter (space-separated, RFC 6749 §3.3) into distinct scopes.
pub fn parse_scope_param(s: &str) -> Result<Vec<String>, DomainError> {
    let mut out = BTreeSet::new();
    for part in s.split(' ').filter(|p| !p.is_empty()) {
        check_scope(part)?;
        out.insert(part.to_owned());
    }
    if out.len() > MAX_SCOPES {
        return Err(DomainError::invalid("scope", format!("at most {MAX_SCOPES} scopes")));
    }
    Ok(out.into_iter().collect())
}

/// Why an exchange was refused before any policy was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("tool `{0}` is disabled")]
    ToolDisabled(String),
    #[error("tool `{tool}` does not accept scope `{scope}`")]
    UnknownScope { tool: String, scope: String },
    #[error("the task may not use tool `{0}`")]
    ToolNotAllowed(String),
    #[error("the task's delegation does not include scope `{0}`")]
    ScopeNotDelegated(String),
    #[error("the data behind tool `{tool}` is {classification}, above the task's `{sensitivity}`")]
    Classification { tool: String, classification: Sensitivity, sensitivity: Sensitivity },
}

/// What the task's delegation lets it use (`None`: no narrowing beyond the workflow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowance<'a> {
    /// The workflow's allowed tools (empty: no restriction).
    pub workflow_tools: &'a [String],
    pub tools: Option<&'a BTreeSet<String>>,
    pub scopes: Option<&'a BTreeSet<String>>,
}

/// The scopes worth asking the policy about, and the credential's expiry: scopes the tool
/// accepts (all of them when none are requested) within what the task was delegated; an
/// expiry of at most the tool's max TTL and never past the task's own deadline.
pub fn exchange(
    task: &Task,
    tool: &Tool,
    requested: Option<&[String]>,
    allowance: &Allowance<'_>,
    now: UnixMillis,
) -> Result<(Vec<String>, UnixMillis), ExchangeError> {
    if tool.state != ToolState::Active {
        return Err(ExchangeError::ToolDisabled(tool.name.to_string()));
    }
    let name = tool.name.as_str();
    let wf_ok = allowance.workflow_tools.is_empty() || allowance.workflow_tools.iter().any(|t| t == name);
    if !wf_ok || allowance.tools.is_some_and(|t| !t.contains(name)) {
        return Err(ExchangeError::ToolNotAllowed(name.to_owned()));
    }
    if tool.classification > task.sensitivity {
        return Err(ExchangeError::Classification {
            tool: name.to_owned(),
            classification: tool.classification,
            sensitivity: task.sensitivity,
        });
    }
    let scopes: Vec<String> = match requested {
        Some(r) => {
            for s in r {
                if !tool.scopes.contains(s) {
                    return Err(ExchangeError::UnknownScope { tool: name.to_owned(), scope: s.clone() });
                }
                if allowance.scopes.is_some_and(|d| !d.contains(s)) {
                    return Err(ExchangeError::ScopeNotDelegated(s.clone()));
                }
            }
            r.to_vec()
        }
        None => tool.scopes.iter().filter(|s| allowance.scopes.is_none_or(|d| d.contains(*s))).cloned().collect(),
    };
    let exp = now.plus_secs(tool.max_ttl_secs).min(task.expires_at);
    Ok((scopes, exp))
}

/// A per-tool credential as Remit keeps it: never the token, only what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The token's `jti`.
    pub id: CredentialId,
    pub task: TaskId,
    pub tool: ToolName,
    /// The scopes granted, sorted.
    pub scopes: Vec<String>,
    /// The RFC 7638 thumbprint of the key it is bound to (DPoP), if any.
    pub jkt: Option<String>,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// Whether a credential is honoured, before its task's own liveness: not revoked, not
/// expired, its tool still active.
pub fn credential_liveness(c: &Credential, tool: Option<&Tool>, now: UnixMillis) -> Liveness {
    if c.revoked_at.is_some() {
        Liveness::Inactive("credential revoked")
    } else if now >= c.expires_at {
        Liveness::Inactive("credential expired")
    } else if tool.is_none_or(|t| t.state != ToolState::Active) {
        Liveness::Inactive("tool disabled")
    } else {
        Liveness::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentName, WorkflowName};
    use crate::model::TaskState;

    fn tool() -> Tool {
        new_tool(
            NewTool {
                name: ToolName::parse("tickets").unwrap(),
                audience: "https://tickets.example/api".into(),
                scopes: vec!["write".into(), "read".into(), "read".into()],
                max_ttl_secs: Some(120),
                classification: Sensitivity::Internal,
                class: ToolClass::Tool,
                proxy: None,
                database: None,
                owner: "Ops@Example.com".into(),
                secret_hash: String::new(),
            },
            &Limits::default(),
            UnixMillis(0),
        )
        .unwrap()
    }

    fn task(exp_secs: u64, sensitivity: Sensitivity) -> Task {
        Task {
            id: TaskId::from_random([1; 16]),
            workflow: WorkflowName::parse("wf").unwrap(),
            agent: AgentName::parse("a").unwrap(),
            instance: None,
            parent: None,
            intent: "x".into(),
            intent_hash: String::new(),
            sensitivity,
            audience: vec![],
            state: TaskState::Active,
            started_by: "admin".into(),
            created_at: UnixMillis(0),
            expires_at: UnixMillis(0).plus_secs(exp_secs),
            ended_at: None,
            end_reason: None,
            delegation: Default::default(),
        }
    }

    #[test]
    fn registration_is_validated_and_normalised() {
        let t = tool();
        assert_eq!(t.scopes, vec!["read", "write"]);
        assert_eq!(t.owner, "ops@example.com");
        let bad = |f: &dyn Fn(&mut NewTool)| {
            let mut r = NewTool {
                name: ToolName::parse("x").unwrap(),
                audience: "https://x".into(),
                scopes: vec!["read".into()],
                max_ttl_secs: None,
                classification: Sensitivity::Public,
                class: ToolClass::Tool,
                proxy: None,
                database: None,
                owner: "a@b".into(),
                secret_hash: String::new(),
            };
            f(&mut r);
            new_tool(r, &Limits::default(), UnixMillis(0)).unwrap_err()
        };
        bad(&|r| r.audience = "tickets".into());
        bad(&|r| r.audience = "https://a b".into());
        bad(&|r| r.scopes.clear());
        bad(&|r| r.scopes = vec!["has space".into()]);
        bad(&|r| r.scopes = vec!["quote\"".into()]);
        bad(&|r| r.max_ttl_secs = Some(0));
        bad(&|r| r.max_ttl_secs = Some(HARD_MAX_TOOL_TTL_SECS + 1));
        bad(&|r| r.owner = "nobody".into());
    }

    #[test]
    fn scope_param_is_space_separated_and_deduplicated() {
        assert_eq!(parse_scope_param("write read  read").unwrap(), vec!["read", "write"]);
        assert!(parse_scope_param("read\tx").is_err());
        assert!(parse_scope_param("").unwrap().is_empty());
    }

    #[test]
    fn exchange_never_exceeds_the_task_or_the_tool() {
        let t = tool();
        let none = Allowance::default();
        // Expiry: the tool's max TTL, capped at the task's deadline.
        let (s, exp) = exchange(&task(600, Sensitivity::Internal), &t, None, &none, UnixMillis(0)).unwrap();
        assert_eq!((s, exp), (vec!["read".to_owned(), "write".to_owned()], UnixMillis(120_000)));
        let (_, exp) = exchange(&task(60, Sensitivity::Internal), &t, None, &none, UnixMillis(0)).unwrap();
        assert_eq!(exp, UnixMillis(60_000));
        // Scopes the tool does not accept.
        let r = ["admin".to_owned()];
        assert!(matches!(
            exchange(&task(60, Sensitivity::Internal), &t, Some(&r), &none, UnixMillis(0)),
            Err(ExchangeError::UnknownScope { .. })
        ));
        // Classification above the task's sensitivity.
        assert!(matches!(
            exchange(&task(60, Sensitivity::Public), &t, None, &none, UnixMillis(0)),
            Err(ExchangeError::Classification { .. })
        ));
        // The workflow's list and the delegation's lists.
        let wf = vec!["other".to_owned()];
        let a = Allowance { workflow_tools: &wf, ..Default::default() };
        assert!(matches!(
            exchange(&task(60, Sensitivity::Internal), &t, None, &a, UnixMillis(0)),
            Err(ExchangeError::ToolNotAllowed(_))
        ));
        let scopes: BTreeSet<String> = ["read".to_owned()].into();
        let a = Allowance { scopes: Some(&scopes), ..Default::default() };
        let (s, _) = exchange(&task(60, Sensitivity::Internal), &t, None, &a, UnixMillis(0)).unwrap();
        assert_eq!(s, vec!["read"]);
        let w = ["write".to_owned()];
        assert!(matches!(
            exchange(&task(60, Sensitivity::Internal), &t, Some(&w), &a, UnixMillis(0)),
            Err(ExchangeError::ScopeNotDelegated(_))
        ));
        let mut off = t.clone();
        off.state = ToolState::Disabled;
        assert!(matches!(
            exchange(&task(60, Sensitivity::Internal), &off, None, &none, UnixMillis(0)),
            Err(ExchangeError::ToolDisabled(_))
        ));
    }

    #[test]
    fn a_credential_dies_with_revocation_expiry_or_its_tool() {
        let t = tool();
        let mut c = Credential {
            id: CredentialId::from_random([2; 16]),
            task: TaskId::from_random([1; 16]),
            tool: t.name.clone(),
            scopes: vec!["read".into()],
            jkt: None,
            issued_at: UnixMillis(0),
            expires_at: UnixMillis(1000),
            revoked_at: None,
        };
        assert_eq!(credential_liveness(&c, Some(&t), UnixMillis(999)), Liveness::Active);
        assert_ne!(credential_liveness(&c, Some(&t), UnixMillis(1000)), Liveness::Active);
        assert_ne!(credential_liveness(&c, None, UnixMillis(0)), Liveness::Active);
        c.revoked_at = Some(UnixMillis(1));
        assert_ne!(credential_liveness(&c, Some(&t), UnixMillis(0)), Liveness::Active);
    }
}
