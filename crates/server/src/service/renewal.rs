//! Task renewal for long-running agents: a live task's expiry is extended, within its
//! workflow's task TTL from now, the installation's `[limits] max_task_lifetime` from its start,
//! and whatever it stands on — the instance that started it, its parent, its grant — and a
//! fresh token is issued. Like an instance's renewal it re-evaluates what it was started under:
//! the workflow active and still allowing the agent, the task's sensitivity within the
//! workflow's ceiling, its grant still active, its parent still live, and — when the active
//! policy declares the action `renew` (`action renew appliesTo { principal: [Task], resource:
//! [Resource], context: TaskContext };`) — Remit's decision for `Action::"renew"` on
//! `Resource::"<workflow>"`, with the task's facts as context. A policy change or a revoked grant therefore takes effect at the next renewal at
//! the latest. Per-tool credentials derived earlier keep their own (shorter) expiry.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{SpiffeId, TaskId};
use remit_core::model::Task;
use remit_core::rules::{self, Liveness};
use remit_token::jwt;

use super::tasks::Issued;
use super::{Caller, Error};
use crate::app::App;

impl App {
    /// Renews a live task (the task itself, the instance that started it, or the admin);
    /// `ttl_secs` defaults to the workflow's task TTL.
    pub async fn renew_task(&self, caller: &Caller, id: &TaskId, ttl_secs: Option<u64>) -> Result<Issued<Task>, Error> {
        let snap = self
            .store
            .identity()
            .task_snapshot(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task `{id}` not found")))?;
        let t = &snap.task;
        match caller {
            Caller::Task { id: me, .. } if me == id => {}
            Caller::Instance { id: me, .. } if t.instance.as_ref() == Some(me) => {}
            Caller::Admin { .. } => {}
            // A human never holds a task's token (humans start tasks through an agent).
            _ => return Err(Error::NotFound(format!("task `{id}` not found"))),
        }
        let now = self.clock.now();
        if let Liveness::Inactive(why) =
            rules::task_liveness(t, &snap.workflow, &snap.agent, snap.instance.as_ref(), now)
        {
            return Err(Error::Conflict(format!("task `{id}` is not live: {why}")));
        }
        // What it was started under, again.
        let refuse = |why: String| Error::Denied(format!("task `{id}` cannot be renewed: {why}"));
        if !snap.agent.workflows.contains(&t.workflow) {
            return Err(refuse(format!("agent `{}` is no longer allowed in workflow `{}`", t.agent, t.workflow)));
        }
        if snap.workflow.trust.require_dpop && t.delegation.jkt.is_none() {
            return Err(refuse(format!("workflow `{}` now requires DPoP-bound tasks", t.workflow)));
        }
        if t.sensitivity > snap.workflow.ceiling {
            return Err(refuse(format!("its sensitivity is above workflow `{}`'s ceiling now", t.workflow)));
        }
        let max_ttl = snap.workflow.max_task_ttl_secs.min(self.cfg.limits.hard_max_task_ttl.as_secs());
        let ttl = ttl_secs.unwrap_or(max_ttl);
        if ttl == 0 || ttl > max_ttl {
            return Err(Error::Invalid(format!("`ttl_seconds` is 1..={max_ttl} for workflow `{}`", t.workflow)));
        }
        let mut until = now.plus_secs(ttl);
        let lifetime = t.created_at.plus_secs(self.cfg.limits.max_task_lifetime.as_secs());
        until = until.min(lifetime);
        if let Some(i) = &snap.instance {
            until = until.min(i.expires_at);
        }
        if let Some(p) = &t.parent {
            let parent = self.store.identity().task_snapshot(p).await?;
            match parent {
                Some(ps)
                    if rules::task_liveness(&ps.task, &ps.workflow, &ps.agent, ps.instance.as_ref(), now)
                        == Liveness::Active =>
                {
                    until = until.min(ps.task.expires_at);
                }
                _ => return Err(refuse("its parent is no longer live".into())),
            }
        }
        if let Some(g) = &t.delegation.grant {
            let grant = self.store.grants().get(g).await?;
            match grant {
                Some(g) if g.state == remit_core::grant::GrantState::Active && g.expires_at > now => {
                    until = until.min(g.expires_at);
                }
                _ => return Err(refuse("the grant it acts under is no longer active".into())),
            }
        }
        if until <= t.expires_at {
            return Err(Error::Conflict(format!(
                "task `{id}` cannot be extended past {} (its limits: workflow TTL, lifetime, instance, parent, grant)",
                t.expires_at.to_rfc3339()
            )));
        }
        // The organisation's policy, when it speaks of renewals.
        if self.pdp.engine().actions().iter().any(|a| a == "renew") {
            let call = crate::pdp::task::TaskCall {
                action: crate::pdp::ActionRef { name: Some("renew".into()), properties: None },
                resource: crate::pdp::Party {
                    etype: Some("Resource".into()),
                    id: Some(t.workflow.to_string()),
                    properties: serde_json::Map::new(),
                },
                context: serde_json::Value::Null,
                approval: None,
                no_approval_request: true,
                issuing: None,
                bind: None,
            };
            let spiffe = SpiffeId::task(&self.trust_domain, &t.workflow, &t.id).to_string();
            let answer = self.pdp.decide_task(caller, call, Some((snap.clone(), spiffe))).await?;
            if !answer.decision.allowed() {
                return Err(refuse(format!("the policy denies `renew` ({})", answer.decision.reasons.join(", "))));
            }
        }
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::TaskRenew)
            .task(&t.id)
            .workflow(&t.workflow)
            .agent(&t.agent)
            .detail([("expires_at_ms", until.0.into()), ("was_ms", t.expires_at.0.into())]);
        self.store.identity().renew_task(id, until, audit).await?;
        let mut task = t.clone();
        task.expires_at = until;
        let spiffe = SpiffeId::task(&self.trust_domain, &task.workflow, &task.id);
        let token = jwt::mint(self.keyring().signer(), &self.task_claims(&task, &spiffe, now));
        Ok(Issued { subject: task, spiffe_id: spiffe.to_string(), token })
    }
}
