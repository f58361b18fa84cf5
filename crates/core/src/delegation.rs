//! Delegation that only narrows: a supervisor's task starts child tasks for worker agents,
//! each with an ephemeral identity whose authority is its parent's, narrowed.
//!
//! A task's [`Delegation`] is stored with it: its depth, the chain of ancestors (root first)
//! and its [`Authority`] — the tools, scopes, resource prefix and number of calls it may use
//! beyond its workflow's own rules, and whether it may delegate further. [`child`] is the only
//! place a child's delegation is made: every attribute is the parent's or narrower, the TTL
//! ends no later than the parent's, the depth stays within the workflow's maximum, and the
//! workflow's [`TrustRules`] say which agent may delegate to which. A request to widen
//! anything is a [`Widen`] naming the attribute.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, GrantId, HumanId, TaskId};
use crate::model::{Sensitivity, Task, Workflow};
use crate::time::UnixMillis;

/// Longest resource prefix.
pub const MAX_PREFIX_LEN: usize = 512;
/// Most tools or scopes one hop may name.
pub const MAX_LIST: usize = 64;

/// What a task may use beyond its workflow's rules. `None` means "no narrowing here" (the
/// workflow's tools, whatever scope the tool accepts, any resource, any number of calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeSet<String>>,
    /// Scopes at token exchange, and the actions of its decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<BTreeSet<String>>,
    /// A call's resource id (or a tool call's `target`) must start with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_prefix: Option<String>,
    /// The most allowed decisions the task may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    /// Whether it may start child tasks.
    #[serde(default = "yes")]
    pub may_delegate: bool,
}

fn yes() -> bool {
    true
}

impl Default for Authority {
    fn default() -> Self {
        Authority { tools: None, scopes: None, resource_prefix: None, max_calls: None, may_delegate: true }
    }
}

impl Authority {
    /// Whether a call with this action, tool and resource is within the authority (before
    /// any policy); the reason when not.
    pub fn admits(&self, action: &str, tool: Option<&str>, resource: Option<&str>) -> Result<(), String> {
        if let (Some(allowed), Some(t)) = (&self.tools, tool)
            && !allowed.contains(t)
        {
            return Err(format!("tool `{t}` was not delegated to this task"));
        }
        if let Some(s) = &self.scopes
            && !s.contains(action)
        {
            return Err(format!("action `{action}` was not delegated to this task"));
        }
        if let Some(p) = &self.resource_prefix
            && !resource.is_some_and(|r| r.starts_with(p.as_str()))
        {
            return Err(format!("the call's resource is outside the delegated prefix `{p}`"));
        }
        Ok(())
    }
}

/// One ancestor in a task's delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub task: TaskId,
    pub agent: AgentName,
}

/// A task's place in its delegation tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Delegation {
    #[serde(default)]
    pub depth: u32,
    /// Every ancestor, root first (empty for a root task).
    #[serde(default)]
    pub chain: Vec<Hop>,
    #[serde(default)]
    pub authority: Authority,
    /// The human whose grant the authority comes from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<HumanId>,
    /// That grant: revoking it ends every task under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantId>,
    /// A depth the chain may not pass beyond the workflow's own (a grant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// The DPoP key (RFC 7638 thumbprint) the task's token is bound to: its children are
    /// started only with a proof from the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// A workflow's transitive-trust rules: which agent may delegate to which, and whether a
/// worker may delegate further. No rule: no agent-to-agent delegation at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TrustRules {
    #[serde(default)]
    pub delegations: Vec<DelegationRule>,
    /// Whether a task that is itself a delegate (depth ≥ 1) may start children.
    #[serde(default)]
    pub workers_may_delegate: bool,
    /// Every task token of the workflow must be DPoP-bound (RFC 9449): a task started without
    /// a proof is refused.
    #[serde(default)]
    pub require_dpop: bool,
    /// Tools whose dynamic logins `remit exec` may put into a child's environment (its
    /// connection URL as an environment variable); none by default, each such login audited.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub env_credentials: BTreeSet<String>,
}

/// `from` (an agent, or `*`) may delegate to `to` (agents, or `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationRule {
    pub from: String,
    pub to: Vec<String>,
}

/// Most trust rules a workflow holds.
pub const MAX_RULES: usize = 64;

impl TrustRules {
    /// Every name is an agent name or `*`; at most [`MAX_RULES`] rules of [`MAX_LIST`] names.
    pub fn check(&self) -> Result<(), crate::DomainError> {
        let bad = |why: String| crate::DomainError::Invalid { what: "trust rules", why };
        if self.delegations.len() > MAX_RULES {
            return Err(bad(format!("at most {MAX_RULES} rules")));
        }
        for r in &self.delegations {
            if r.to.is_empty() || r.to.len() > MAX_LIST {
                return Err(bad(format!("a rule names 1-{MAX_LIST} agents it delegates to")));
            }
            for n in std::iter::once(&r.from).chain(&r.to) {
                if n != "*" && AgentName::parse(n).is_err() {
                    return Err(bad(format!(
                        "`{}` is neither an agent name nor `*`",
                        crate::ids::truncate_for_error(n)
                    )));
                }
            }
        }
        if self.env_credentials.len() > MAX_LIST {
            return Err(bad(format!("at most {MAX_LIST} env-credential tools")));
        }
        for t in &self.env_credentials {
            crate::ids::ToolName::parse(t)?;
        }
        Ok(())
    }

    pub fn allows(&self, from: &AgentName, to: &AgentName) -> bool {
        self.delegations
            .iter()
            .any(|r| (r.from == "*" || r.from == from.as_str()) && r.to.iter().any(|t| t == "*" || t == to.as_str()))
    }
}

/// What a parent asks for its child; `None` keeps the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildRequest {
    pub tools: Option<BTreeSet<String>>,
    pub scopes: Option<BTreeSet<String>>,
    pub resource_prefix: Option<String>,
    pub max_calls: Option<u64>,
    pub may_delegate: Option<bool>,
    pub ttl_secs: Option<u64>,
    pub sensitivity: Option<Sensitivity>,
}

/// A refused widening, naming the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Widen {
    #[error("delegation would widen `tools`: `{0}` is not among the parent's")]
    Tool(String),
    #[error("delegation would widen `scopes`: `{0}` is not among the parent's")]
    Scope(String),
    #[error("delegation would widen `resource_prefix`: `{child}` is not within the parent's `{parent}`")]
    ResourcePrefix { parent: String, child: String },
    #[error("delegation would widen `max_calls`: {child} is more than the parent's {parent}")]
    MaxCalls { parent: u64, child: u64 },
    #[error("delegation would widen `may_delegate`: the parent may not delegate further")]
    MayDelegate,
    #[error("delegation would widen `ttl`: {requested}s is longer than the parent's remaining {remaining}s")]
    Ttl { requested: u64, remaining: u64 },
    #[error("delegation would widen `sensitivity`: `{child}` is above the parent's `{parent}`")]
    Sensitivity { parent: Sensitivity, child: Sensitivity },
    #[error("delegation would exceed `max_depth`: workflow `{workflow}` allows {max}")]
    Depth { workflow: String, max: u32 },
    #[error("delegation is not trusted: workflow `{workflow}` does not let `{from}` delegate to `{to}`")]
    Untrusted { workflow: String, from: String, to: String },
    #[error("delegation is not allowed: this task may not delegate further")]
    NoRedelegation,
    #[error("invalid delegation: {0}")]
    Invalid(String),
}

/// What a new child gets: its delegation, and the bounds its TTL and sensitivity must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub delegation: Delegation,
    /// The child's deadline may not pass this (the parent's).
    pub expires_by: UnixMillis,
    pub sensitivity: Sensitivity,
}

type Names = Option<BTreeSet<String>>;

fn subset(parent: &Names, child: &Names, w: fn(String) -> Widen) -> Result<Names, Widen> {
    match (parent, child) {
        (_, None) => Ok(parent.clone()),
        (None, Some(c)) => Ok(Some(c.clone())),
        (Some(p), Some(c)) => match c.iter().find(|x| !p.contains(*x)) {
            Some(x) => Err(w(x.clone())),
            None => Ok(Some(c.clone())),
        },
    }
}

/// Decides a child of `parent` for `child_agent` in `wf`.
pub fn child(
    parent: &Task,
    wf: &Workflow,
    trust: &TrustRules,
    child_agent: &AgentName,
    req: &ChildRequest,
    now: UnixMillis,
) -> Result<Child, Widen> {
    let parent_delegation = &parent.delegation;
    let pa = &parent_delegation.authority;
    // Who may delegate at all.
    if !pa.may_delegate || (parent_delegation.depth >= 1 && !trust.workers_may_delegate) {
        return Err(Widen::NoRedelegation);
    }
    if !trust.allows(&parent.agent, child_agent) {
        return Err(Widen::Untrusted {
            workflow: wf.name.to_string(),
            from: parent.agent.to_string(),
            to: child_agent.to_string(),
        });
    }
    let depth = parent_delegation.depth + 1;
    let max = parent_delegation.max_depth.map_or(wf.max_delegation_depth, |g| g.min(wf.max_delegation_depth));
    if depth > max {
        return Err(Widen::Depth { workflow: wf.name.to_string(), max });
    }
    let authority = narrow(pa, req)?;
    let sensitivity = match req.sensitivity {
        None => parent.sensitivity,
        Some(s) if s > parent.sensitivity => return Err(Widen::Sensitivity { parent: parent.sensitivity, child: s }),
        Some(s) => s,
    };
    let remaining = u64::try_from((parent.expires_at.0 - now.0).max(0) / 1000).unwrap_or(0);
    if let Some(t) = req.ttl_secs
        && t > remaining
    {
        return Err(Widen::Ttl { requested: t, remaining });
    }
    let mut chain = parent_delegation.chain.clone();
    chain.push(Hop { task: parent.id.clone(), agent: parent.agent.clone() });
    Ok(Child {
        delegation: Delegation {
            depth,
            chain,
            authority,
            on_behalf_of: parent_delegation.on_behalf_of.clone(),
            grant: parent_delegation.grant.clone(),
            max_depth: parent_delegation.max_depth,
            jkt: None,
        },
        expires_by: parent.expires_at,
        sensitivity,
    })
}

/// Narrows `pa` by what `req` asks (tools, scopes, resource prefix, calls, may it delegate):
/// each the same or narrower, or a [`Widen`] naming the attribute. A root task narrows the
/// authority it would otherwise hold (all, or its grant's) the same way.
pub fn narrow(pa: &Authority, req: &ChildRequest) -> Result<Authority, Widen> {
    for list in [&req.tools, &req.scopes].into_iter().flatten() {
        if list.len() > MAX_LIST {
            return Err(Widen::Invalid(format!("at most {MAX_LIST} tools or scopes")));
        }
        if list.iter().any(|s| s.is_empty() || s.len() > 256 || s.chars().any(char::is_control)) {
            return Err(Widen::Invalid("a tool or scope must be 1-256 printable characters".into()));
        }
    }
    let tools = subset(&pa.tools, &req.tools, Widen::Tool)?;
    let scopes = subset(&pa.scopes, &req.scopes, Widen::Scope)?;
    let resource_prefix = match (&pa.resource_prefix, &req.resource_prefix) {
        (p, None) => p.clone(),
        (_, Some(c)) if c.len() > MAX_PREFIX_LEN || c.chars().any(char::is_control) => {
            return Err(Widen::Invalid(format!("a resource prefix is 1-{MAX_PREFIX_LEN} printable characters")));
        }
        (None, Some(c)) => Some(c.clone()),
        (Some(p), Some(c)) if c.starts_with(p.as_str()) => Some(c.clone()),
        (Some(p), Some(c)) => return Err(Widen::ResourcePrefix { parent: p.clone(), child: c.clone() }),
    };
    let max_calls = match (pa.max_calls, req.max_calls) {
        (p, None) => p,
        (Some(p), Some(c)) if c > p => return Err(Widen::MaxCalls { parent: p, child: c }),
        (_, Some(c)) => Some(c),
    };
    let may_delegate = match req.may_delegate {
        None => pa.may_delegate,
        Some(true) if !pa.may_delegate => return Err(Widen::MayDelegate),
        Some(m) => m,
    };
    Ok(Authority { tools, scopes, resource_prefix, max_calls, may_delegate })
}

#[cfg(test)]
mod tests;
