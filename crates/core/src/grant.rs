//! Human → agent grants: a signed-in human delegates part of a workflow's authority to an
//! agent, for a while.
//!
//! A [`Grant`] is proposed by its human (the tools, scopes, resource prefix, call budget, TTL
//! and delegation depth it hands over) and usable only once the same human confirms it in a
//! second, separate step presenting the confirmation code the proposal returned ([`confirm`]),
//! so a link someone else pasted cannot grant anything. A task started under a grant acts "on
//! behalf of" the human ([`task_delegation`]): its authority is the grant's, its deadline never
//! past the grant's, and every credential derived from it names the human as `sub`. Revoking
//! the grant (or deactivating the human) ends every task started under it, with its subtree.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::delegation::{Authority, Delegation, MAX_LIST, MAX_PREFIX_LEN};
use crate::error::DomainError;
use crate::human::{Human, HumanState};
use crate::ids::{AgentName, GrantId, HumanId, WorkflowName};
use crate::model::{Agent, Workflow};
use crate::time::UnixMillis;

/// Longest grant: a day.
pub const MAX_GRANT_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    /// Proposed, waiting for its human's confirmation.
    Proposed,
    Active,
    Revoked,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Proposed => "proposed",
            GrantState::Active => "active",
            GrantState::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "proposed" => Some(GrantState::Proposed),
            "active" => Some(GrantState::Active),
            "revoked" => Some(GrantState::Revoked),
            _ => None,
        }
    }
}

/// A human's delegation to an agent, for one workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub human: HumanId,
    /// The human's email when the grant was made (for tokens and records).
    pub human_email: String,
    pub agent: AgentName,
    pub workflow: WorkflowName,
    pub authority: Authority,
    /// How deep tasks under it may delegate further (0: not at all).
    pub max_depth: u32,
    pub state: GrantState,
    /// SHA-256 (hex) of the confirmation code; only its human was shown the code.
    pub confirmation_hash: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub confirmed_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
}

/// What a human asks to grant.
#[derive(Debug, Clone, Default)]
pub struct NewGrant {
    pub agent: Option<AgentName>,
    pub workflow: Option<WorkflowName>,
    pub tools: Option<BTreeSet<String>>,
    pub scopes: Option<BTreeSet<String>>,
    pub resource_prefix: Option<String>,
    pub max_calls: Option<u64>,
    pub ttl_secs: u64,
    pub max_depth: u32,
}

/// Validates a proposal by `human` against the agent and workflow it names.
#[allow(clippy::too_many_arguments)]
pub fn propose(
    req: NewGrant,
    human: &Human,
    agent: &Agent,
    wf: &Workflow,
    id: GrantId,
    confirmation_hash: String,
    now: UnixMillis,
) -> Result<Grant, DomainError> {
    if human.state != HumanState::Active {
        return Err(DomainError::HumanDeactivated(human.email.clone()));
    }
    if !agent.workflows.contains(&wf.name) {
        return Err(DomainError::AgentNotInWorkflow { agent: agent.name.to_string(), workflow: wf.name.to_string() });
    }
    if req.ttl_secs == 0 || req.ttl_secs > MAX_GRANT_TTL_SECS {
        return Err(DomainError::TtlTooLong { requested: req.ttl_secs, max: MAX_GRANT_TTL_SECS });
    }
    if req.max_depth > wf.max_delegation_depth {
        return Err(DomainError::Invalid {
            what: "max depth",
            why: format!("workflow `{}` allows at most {}", wf.name, wf.max_delegation_depth),
        });
    }
    for list in [&req.tools, &req.scopes].into_iter().flatten() {
        if list.len() > MAX_LIST
            || list.iter().any(|s| s.is_empty() || s.len() > 256 || s.chars().any(char::is_control))
        {
            return Err(DomainError::Invalid {
                what: "tools or scopes",
                why: format!("at most {MAX_LIST} printable names"),
            });
        }
    }
    if let Some(t) = &req.tools
        && !wf.allowed_tools.is_empty()
        && let Some(x) = t.iter().find(|x| !wf.allowed_tools.contains(x))
    {
        return Err(DomainError::Invalid {
            what: "tools",
            why: format!("`{x}` is not among workflow `{}`'s tools", wf.name),
        });
    }
    if req.resource_prefix.as_ref().is_some_and(|p| p.len() > MAX_PREFIX_LEN || p.chars().any(char::is_control)) {
        return Err(DomainError::Invalid {
            what: "resource prefix",
            why: format!("1-{MAX_PREFIX_LEN} printable characters"),
        });
    }
    Ok(Grant {
        id,
        human: human.id.clone(),
        human_email: human.email.clone(),
        agent: agent.name.clone(),
        workflow: wf.name.clone(),
        authority: Authority {
            tools: req.tools,
            scopes: req.scopes,
            resource_prefix: req.resource_prefix,
            max_calls: req.max_calls,
            may_delegate: req.max_depth > 0,
        },
        max_depth: req.max_depth,
        state: GrantState::Proposed,
        confirmation_hash,
        created_at: now,
        expires_at: now.plus_secs(req.ttl_secs),
        confirmed_at: None,
        revoked_at: None,
    })
}

/// Why a grant cannot be confirmed or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant `{0}` is not waiting for confirmation")]
    NotProposed(GrantId),
    #[error("only the human who proposed grant `{0}` can confirm it")]
    NotYours(GrantId),
    #[error("the confirmation code is not the one grant `{0}` was proposed with")]
    WrongCode(GrantId),
    #[error("grant `{0}` is not active (not confirmed, revoked or expired)")]
    Inactive(GrantId),
    #[error("grant `{id}` is for agent `{agent}` in workflow `{workflow}`")]
    Elsewhere { id: GrantId, agent: String, workflow: String },
}

/// Confirms a proposed grant: only its own human, with the code the proposal returned
/// (`code_ok`: compared in constant time by the caller), before it expires.
pub fn confirm(g: &Grant, by: &HumanId, code_ok: bool, now: UnixMillis) -> Result<(), GrantError> {
    if g.state != GrantState::Proposed || now >= g.expires_at {
        return Err(GrantError::NotProposed(g.id.clone()));
    }
    if &g.human != by {
        return Err(GrantError::NotYours(g.id.clone()));
    }
    if !code_ok {
        return Err(GrantError::WrongCode(g.id.clone()));
    }
    Ok(())
}

/// Whether a grant can be acted under now.
pub fn usable(g: &Grant, now: UnixMillis) -> bool {
    g.state == GrantState::Active && now < g.expires_at
}

/// The delegation of a root task started under `g` by its agent in its workflow, and the
/// deadline it may not pass.
pub fn task_delegation(
    g: &Grant,
    agent: &AgentName,
    workflow: &WorkflowName,
    now: UnixMillis,
) -> Result<(Delegation, UnixMillis), GrantError> {
    if !usable(g, now) {
        return Err(GrantError::Inactive(g.id.clone()));
    }
    if &g.agent != agent || &g.workflow != workflow {
        return Err(GrantError::Elsewhere {
            id: g.id.clone(),
            agent: g.agent.to_string(),
            workflow: g.workflow.to_string(),
        });
    }
    let d = Delegation {
        depth: 0,
        chain: vec![],
        authority: g.authority.clone(),
        on_behalf_of: Some(g.human.clone()),
        grant: Some(g.id.clone()),
        max_depth: Some(g.max_depth),
        jkt: None,
    };
    Ok((d, g.expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::human::new_human;
    use crate::model::{AgentState, Sensitivity, WorkflowState};

    fn fixtures() -> (Human, Agent, Workflow) {
        let h = new_human(
            HumanId::from_random([1; 16]),
            "ann@example.com",
            "",
            HumanState::Active,
            vec![],
            vec![],
            UnixMillis(0),
        )
        .unwrap();
        let wf = Workflow {
            name: WorkflowName::parse("ops").unwrap(),
            purpose: "p".into(),
            owner: "ann@example.com".into(),
            owner_id: None,
            orphaned_at: None,
            ceiling: Sensitivity::Internal,
            allowed_tools: vec!["jira".into()],
            max_task_ttl_secs: 600,
            max_delegation_depth: 2,
            trust: Default::default(),
            state: WorkflowState::Active,
            created_at: UnixMillis(0),
            updated_at: UnixMillis(0),
        };
        let a = Agent {
            name: AgentName::parse("bot").unwrap(),
            owner: "x@y".into(),
            owner_id: None,
            orphaned_at: None,
            workflows: vec![wf.name.clone()],
            state: AgentState::Enabled,
            kill_generation: 0,
            created_at: UnixMillis(0),
            updated_at: UnixMillis(0),
        };
        (h, a, wf)
    }

    #[test]
    fn a_grant_is_confirmed_by_its_human_with_its_code_then_used() {
        let (h, a, wf) = fixtures();
        let req =
            NewGrant { tools: Some(["jira".to_owned()].into()), ttl_secs: 60, max_depth: 1, ..Default::default() };
        let mut g = propose(req, &h, &a, &wf, GrantId::from_random([2; 16]), "hash".into(), UnixMillis(0)).unwrap();
        assert!(task_delegation(&g, &a.name, &wf.name, UnixMillis(0)).is_err(), "unconfirmed");
        let other = HumanId::from_random([9; 16]);
        assert_eq!(confirm(&g, &other, true, UnixMillis(1)), Err(GrantError::NotYours(g.id.clone())));
        assert_eq!(confirm(&g, &h.id, false, UnixMillis(1)), Err(GrantError::WrongCode(g.id.clone())));
        assert!(confirm(&g, &h.id, true, UnixMillis(60_000)).is_err(), "expired");
        confirm(&g, &h.id, true, UnixMillis(1)).unwrap();
        g.state = GrantState::Active;
        let (d, by) = task_delegation(&g, &a.name, &wf.name, UnixMillis(2)).unwrap();
        assert_eq!(d.on_behalf_of, Some(h.id.clone()));
        assert_eq!(d.authority.tools, Some(["jira".to_owned()].into()));
        assert!(d.authority.may_delegate);
        assert_eq!(by, UnixMillis(60_000));
        let elsewhere = WorkflowName::parse("other").unwrap();
        assert!(matches!(task_delegation(&g, &a.name, &elsewhere, UnixMillis(2)), Err(GrantError::Elsewhere { .. })));
        assert!(task_delegation(&g, &a.name, &wf.name, UnixMillis(60_000)).is_err(), "expired");
        g.state = GrantState::Revoked;
        assert!(task_delegation(&g, &a.name, &wf.name, UnixMillis(2)).is_err());
    }

    #[test]
    fn proposals_are_bounded() {
        let (h, a, wf) = fixtures();
        let p = |r: NewGrant| propose(r, &h, &a, &wf, GrantId::from_random([2; 16]), String::new(), UnixMillis(0));
        assert!(p(NewGrant { ttl_secs: 0, ..Default::default() }).is_err());
        assert!(p(NewGrant { ttl_secs: MAX_GRANT_TTL_SECS + 1, ..Default::default() }).is_err());
        assert!(p(NewGrant { ttl_secs: 60, max_depth: 3, ..Default::default() }).is_err());
        assert!(p(NewGrant { ttl_secs: 60, tools: Some(["wiki".to_owned()].into()), ..Default::default() }).is_err());
        let mut gone = h.clone();
        gone.state = HumanState::Deactivated;
        let r = NewGrant { ttl_secs: 60, ..Default::default() };
        assert!(propose(r, &gone, &a, &wf, GrantId::from_random([2; 16]), String::new(), UnixMillis(0)).is_err());
    }
}
