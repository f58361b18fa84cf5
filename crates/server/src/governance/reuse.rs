//! Identity reuse across purposes: an agent registered for several workflows is flagged unless
//! the workflows are **equivalent** — the same data-sensitivity ceiling, the same owner, and the
//! agent's owner (who can pull its kill switch) that same owner — **and** an owner accepted the
//! reuse, recorded with a reason and an expiry, for exactly that set of workflows.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::AgentName;
use remit_store::ReuseAcceptance;
use serde::{Deserialize, Serialize};

use crate::api::wire::rfc3339;
use crate::app::App;
use crate::caller::Caller;
use crate::error::Error;

/// One agent in more than one workflow.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reuse {
    pub agent: String,
    pub workflows: Vec<String>,
    /// The workflows are equivalent by the rule.
    pub equivalent: bool,
    /// Why not, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
    /// Who accepted it, until when (an unexpired acceptance of this very set of workflows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_until: Option<String>,
    /// Flagged: not equivalent, or not (or no longer) accepted.
    pub flagged: bool,
}

/// Accepting an agent's reuse.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptReuse {
    pub reason: String,
    /// How long the acceptance holds (1..=365 days).
    pub days: u32,
}

impl App {
    /// Every agent serving more than one workflow, and whether its reuse is acceptable.
    pub(crate) async fn reuses(&self) -> Result<Vec<Reuse>, Error> {
        let now = self.clock.now();
        let workflows = self.store.identity().list_workflows().await?;
        let accepted = self.store.governance().reuse_acceptances().await?;
        let mut out = Vec::new();
        for a in self.store.identity().list_agents().await? {
            if a.workflows.len() < 2 || a.state != remit_core::model::AgentState::Enabled {
                continue;
            }
            let mut names: Vec<String> = a.workflows.iter().map(ToString::to_string).collect();
            names.sort();
            let ws: Vec<_> = workflows.iter().filter(|w| a.workflows.contains(&w.name)).collect();
            let differs = if ws.len() != a.workflows.len() {
                Some("some of its workflows no longer exist".to_owned())
            } else if ws.windows(2).any(|p| p[0].ceiling != p[1].ceiling) {
                Some("their data-sensitivity ceilings differ".to_owned())
            } else if ws.iter().any(|w| w.owner_id.is_none()) || ws.windows(2).any(|p| p[0].owner_id != p[1].owner_id) {
                Some("they have different owners".to_owned())
            } else if a.owner_id.is_none() || ws.first().is_some_and(|w| w.owner_id != a.owner_id) {
                Some("the agent's owner (who can disable it) is not the workflows' owner".to_owned())
            } else {
                None
            };
            let acc =
                accepted.iter().find(|x| x.agent == a.name.as_str() && x.workflows == names && x.expires_at > now);
            out.push(Reuse {
                agent: a.name.to_string(),
                flagged: differs.is_some() || acc.is_none(),
                equivalent: differs.is_none(),
                differs,
                accepted_by: acc.map(|x| x.by.clone()),
                accepted_until: acc.map(|x| rfc3339(x.expires_at)),
                workflows: names,
            });
        }
        Ok(out)
    }

    /// Reused agents. Needs `governance.read`.
    pub async fn list_reuse(&self, caller: &Caller) -> Result<Vec<Reuse>, Error> {
        caller.require_human_or_admin()?;
        self.allow(
            caller,
            remit_policy::admin::AdminAction::GovernanceRead,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        self.reuses().await
    }

    /// A signed-in owner (or one with `recertify` on the agent) accepts an agent's reuse across
    /// its current, equivalent workflows, with a reason, for `days`.
    pub async fn accept_reuse(&self, caller: &Caller, name: &AgentName, r: AcceptReuse) -> Result<Reuse, Error> {
        let Caller::Human { human, .. } = caller else {
            return Err(Error::Denied("accepting reuse is a signed-in human's action".into()));
        };
        self.allow_on_agent(caller, remit_policy::admin::AdminAction::Recertify, name).await?;
        crate::service::admin::check_reason(&r.reason)?;
        if !(1..=365).contains(&r.days) {
            return Err(Error::Invalid("`days` is 1..=365".into()));
        }
        let reuse = self.reuses().await?.into_iter().find(|x| x.agent == name.as_str()).ok_or_else(|| {
            Error::Conflict(format!("agent `{name}` serves one workflow (or is disabled): there is no reuse to accept"))
        })?;
        if let Some(d) = &reuse.differs {
            return Err(Error::Denied(format!("agent `{name}`'s workflows are not equivalent: {d}")));
        }
        let now = self.clock.now();
        let until = now.plus_secs(u64::from(r.days) * 86_400);
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::ReuseAccept)
            .agent(name)
            .reason(&r.reason)
            .detail([("workflows", reuse.workflows.clone().into()), ("until", rfc3339(until).into())]);
        let acc = ReuseAcceptance {
            agent: name.to_string(),
            workflows: reuse.workflows.clone(),
            by: human.email.clone(),
            reason: r.reason,
            at: now,
            expires_at: until,
        };
        self.store.governance().accept_reuse(acc, audit).await?;
        self.reuses()
            .await?
            .into_iter()
            .find(|x| x.agent == name.as_str())
            .ok_or_else(|| Error::NotFound(format!("no agent `{name}`")))
    }
}
