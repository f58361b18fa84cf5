//! Recertification: what is due, vouching for an object, and the once-per-cluster job that
//! suspends what is overdue.
//!
//! Every agent, workflow and standing grant (an active grant that outlives its due date) has a
//! period — its workflow's `recertification` setting, an agent the shortest among its
//! workflows', else `[governance] recert_period_days` — counted from its last recertification
//! (or its creation). An orphan (owner deactivated) is due at once. Owners see what is due
//! (`GET /v1/recertifications`); a signed-in human (the owner, or one with `recertify`)
//! recertifies with a reason, audited. Past due plus the grace period, the `governance.recert`
//! job suspends the object through its kill switch (an agent disabled, a workflow suspended, a
//! grant revoked) as `governance:recertification`, so its tokens go inactive at once; owners are
//! reminded through the notification channel when an object falls due. A human resumes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::grant::GrantState;
use remit_core::ids::{AgentName, GrantId, WorkflowName};
use remit_core::model::{AgentState, KillTarget, WorkflowState};
use remit_core::recert::{Standing, standing};
use remit_core::time::UnixMillis;
use remit_store::{Recertification, Revocation};
use serde::{Deserialize, Serialize};

use super::Held;
use crate::api::wire::rfc3339;
use crate::app::App;
use crate::caller::Caller;
use crate::error::Error;

pub const JOB: &str = "governance.recert";
/// The actor of suspensions for being overdue.
pub const ACTOR: &str = "governance:recertification";

/// One object's recertification standing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Due {
    /// `agent`, `workflow` or `grant`.
    pub kind: String,
    pub id: String,
    /// The owner's email (a grant: its human's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// `current`, `due` or `overdue`.
    #[schema(value_type = String)]
    pub standing: Standing,
    /// The owner was deactivated.
    pub orphaned: bool,
    /// Still live (not already suspended, disabled or revoked).
    pub live: bool,
    pub last_certified_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_certified_by: Option<String>,
    pub due_at: String,
    pub suspend_at: String,
    pub period_days: u32,
    #[serde(skip)]
    suspend_ms: UnixMillis,
}

/// A recertification request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recertify {
    /// `agent`, `workflow` or `grant`.
    pub kind: String,
    pub id: String,
    /// Why it is still needed (audited).
    pub reason: String,
}

impl App {
    /// Every object's standing.
    pub(crate) async fn standings(&self) -> Result<Vec<Due>, Error> {
        let now = self.clock.now();
        let settings = self.all_settings().await?;
        let default = self.default_recert();
        let policy = |w: &str| settings.get(w).and_then(|s| s.recertification).unwrap_or(default);
        let certs: HashMap<(String, String), Recertification> = self
            .store
            .governance()
            .recertifications()
            .await?
            .into_iter()
            .map(|r| ((r.kind.clone(), r.id.clone()), r))
            .collect();
        let mut out = Vec::new();
        let mut push = |kind: &str,
                        id: String,
                        owner: (Option<String>, Option<String>),
                        created: UnixMillis,
                        orphaned: Option<UnixMillis>,
                        live: bool,
                        (period, grace): (u32, u32)| {
            let c = certs.get(&(kind.to_owned(), id.clone()));
            let since = c.map_or(created, |c| c.at.max(created));
            let (due, suspend, st) = standing(since, period, grace, orphaned, now);
            out.push(Due {
                kind: kind.into(),
                id,
                owner: owner.0,
                owner_id: owner.1,
                standing: st,
                orphaned: orphaned.is_some(),
                live,
                last_certified_at: rfc3339(since),
                last_certified_by: c.map(|c| c.by.clone()),
                due_at: rfc3339(due),
                suspend_at: rfc3339(suspend),
                period_days: period,
                suspend_ms: suspend,
            });
        };
        let workflows = self.store.identity().list_workflows().await?;
        for w in &workflows {
            let p = policy(w.name.as_str());
            let owner = (Some(w.owner.clone()), w.owner_id.as_ref().map(ToString::to_string));
            let live = w.state == WorkflowState::Active;
            push(
                "workflow",
                w.name.to_string(),
                owner,
                w.created_at,
                w.orphaned_at,
                live,
                (p.period_days, p.grace_days),
            );
        }
        for a in self.store.identity().list_agents().await? {
            // The shortest period among its workflows'.
            let p = a
                .workflows
                .iter()
                .map(|w| policy(w.as_str()))
                .min_by_key(|p| (p.period_days, p.grace_days))
                .unwrap_or(default);
            let owner = (Some(a.owner.clone()), a.owner_id.as_ref().map(ToString::to_string));
            let live = a.state == AgentState::Enabled;
            push("agent", a.name.to_string(), owner, a.created_at, a.orphaned_at, live, (p.period_days, p.grace_days));
        }
        for g in self.store.grants().list(None, remit_store::MAX_PAGE).await? {
            if g.state != GrantState::Active {
                continue;
            }
            let p = policy(g.workflow.as_str());
            let since = g.confirmed_at.unwrap_or(g.created_at);
            let (due, _, _) = standing(since, p.period_days, p.grace_days, None, now);
            // A grant that ends before it would be due is not standing.
            if g.expires_at <= due && !certs.contains_key(&("grant".to_owned(), g.id.to_string())) {
                continue;
            }
            let owner = (Some(g.human_email.clone()), Some(g.human.to_string()));
            push("grant", g.id.to_string(), owner, since, None, true, (p.period_days, p.grace_days));
        }
        Ok(out)
    }

    /// What is due, for `caller`: everything for those with `governance.read` on the
    /// installation; otherwise what they own.
    pub async fn recertifications(&self, caller: &Caller) -> Result<Vec<Due>, Error> {
        caller.require_human_or_admin()?;
        let all = self.standings().await?;
        let everything = self
            .allow(
                caller,
                remit_policy::admin::AdminAction::GovernanceRead,
                remit_policy::admin::AdminTarget::Installation,
            )
            .await
            .is_ok();
        if everything {
            return Ok(all);
        }
        let Caller::Human { human, .. } = caller else { return Ok(vec![]) };
        let me = human.id.to_string();
        Ok(all.into_iter().filter(|d| d.owner_id.as_deref() == Some(me.as_str())).collect())
    }

    /// A signed-in human vouches for an object, with a reason (audited). The owner may; so may
    /// anyone Remit's policy gives `recertify`.
    pub async fn recertify(&self, caller: &Caller, r: Recertify) -> Result<Due, Error> {
        let Caller::Human { human, .. } = caller else {
            return Err(Error::Denied(
                "recertifying is a signed-in human's action (not the break-glass credential)".into(),
            ));
        };
        crate::service::admin::check_reason(&r.reason)?;
        let action = remit_policy::admin::AdminAction::Recertify;
        let (workflow, agent) = match r.kind.as_str() {
            "workflow" => {
                let w = WorkflowName::parse(&r.id).map_err(|e| Error::Invalid(e.to_string()))?;
                self.allow_on_workflow(caller, action, &w).await?;
                (Some(w.to_string()), None)
            }
            "agent" => {
                let a = AgentName::parse(&r.id).map_err(|e| Error::Invalid(e.to_string()))?;
                self.allow_on_agent(caller, action, &a).await?;
                (None, Some(a.to_string()))
            }
            "grant" => {
                let id = GrantId::parse(&r.id).map_err(|e| Error::Invalid(e.to_string()))?;
                let g =
                    self.store.grants().get(&id).await?.ok_or_else(|| Error::NotFound(format!("no grant `{id}`")))?;
                // The grant's human may vouch for their own grant; others need the workflow.
                if g.human != human.id {
                    self.allow_on_workflow(caller, action, &g.workflow).await?;
                }
                (Some(g.workflow.to_string()), Some(g.agent.to_string()))
            }
            _ => return Err(Error::Invalid("`kind` is `agent`, `workflow` or `grant`".into())),
        };
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::Recertify)
            .workflow_opt(workflow.as_deref())
            .agent_opt(agent.as_deref())
            .reason(&r.reason)
            .detail([("kind", r.kind.clone().into()), ("id", r.id.clone().into())]);
        let rec = Recertification {
            kind: r.kind.clone(),
            id: r.id.clone(),
            at: now,
            by: human.email.clone(),
            reason: r.reason,
        };
        self.store.governance().recertify(rec, audit).await?;
        self.standings()
            .await?
            .into_iter()
            .find(|d| d.kind == r.kind && d.id == r.id)
            .ok_or_else(|| Error::NotFound(format!("no {} `{}`", r.kind, r.id)))
    }

    /// Suspends what is overdue; reminds owners of what fell due. Returns what was suspended.
    pub(crate) async fn enforce_recertification(&self, reminded: &mut HashSet<(String, String)>) -> Result<u32, Error> {
        let mut suspended = 0;
        for d in self.standings().await? {
            if !d.live || d.standing == Standing::Current {
                // Recertified (or stopped): remind again when it next falls due.
                reminded.remove(&(d.kind.clone(), d.id.clone()));
                continue;
            }
            if reminded.insert((d.kind.clone(), d.id.clone())) {
                self.notify(super::notify::Notice::Recertification {
                    kind: d.kind.clone(),
                    id: d.id.clone(),
                    owners: d.owner.clone().into_iter().collect(),
                    due_at: d.due_at.clone(),
                    suspended: d.standing == Standing::Overdue,
                });
                if d.standing == Standing::Due {
                    let audit = AuditEvent::new(self.clock.now(), ACTOR, AuditAction::RecertDue)
                        .reason(format!("due for recertification since {}; suspended at {}", d.due_at, d.suspend_at))
                        .detail([("kind", d.kind.clone().into()), ("id", d.id.clone().into())]);
                    self.store.audit().append(vec![audit]).await?;
                }
            }
            if d.standing != Standing::Overdue || self.clock.now() < d.suspend_ms {
                continue;
            }
            let why = if d.orphaned {
                format!("recertification overdue: its owner was deactivated (due {})", d.due_at)
            } else {
                format!("recertification overdue since {} (last {})", d.due_at, d.last_certified_at)
            };
            let r = match d.kind.as_str() {
                "workflow" => match WorkflowName::parse(&d.id) {
                    Ok(w) => self.system_kill(ACTOR, KillTarget::Workflow(w), &why).await.map(|_| ()),
                    Err(_) => continue,
                },
                "agent" => match AgentName::parse(&d.id) {
                    Ok(a) => self.system_kill(ACTOR, KillTarget::Agent(a), &why).await.map(|_| ()),
                    Err(_) => continue,
                },
                "grant" => match GrantId::parse(&d.id) {
                    Ok(id) => {
                        let g = self.store.grants().get(&id).await?;
                        let Some(g) = g else { continue };
                        let now = self.clock.now();
                        let audit = AuditEvent::new(now, ACTOR, AuditAction::GrantRevoke)
                            .workflow(&g.workflow)
                            .agent(&g.agent)
                            .reason(&why)
                            .detail([("grant", id.as_str().into())]);
                        let rev = Revocation { actor: ACTOR.into(), reason: why.clone(), at: now };
                        self.store.grants().revoke(&id, rev, audit).await.map(|_| ()).map_err(Into::into)
                    }
                    Err(_) => continue,
                },
                _ => continue,
            };
            match r {
                Ok(()) => {
                    suspended += 1;
                    tracing::warn!(kind = %d.kind, id = %d.id, "suspended: recertification overdue");
                }
                Err(Error::Conflict(_)) => {}
                Err(e) => {
                    tracing::error!(error = %e, kind = %d.kind, id = %d.id, "suspending an overdue object failed")
                }
            }
        }
        Ok(suspended)
    }
}

/// The `governance.recert` job: every `[governance] recert_check`, on the job's holder.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut held = Held::new(JOB);
    let mut reminded = HashSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        match held.hold(&app).await {
            Ok(true) => {
                if let Err(e) = app.enforce_recertification(&mut reminded).await {
                    tracing::warn!(error = %e, "recertification check failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "recertification: the job could not be taken"),
        }
        tokio::select! {
            _ = tokio::time::sleep(app.cfg.governance.recert_check) => {}
            _ = stop.changed() => break,
        }
    }
    held.release(&app).await;
}
