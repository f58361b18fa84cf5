//! The approval half of an "approval required" decision, and humans deciding requests.
//!
//! A call that needs approval is bound to its canonical form (subject or task, action,
//! resource with their properties, context) and the policy version. Without a presented
//! approval, a pending request is opened. With one, the store moves it `approved → used` once
//! (the core decides the transition) and hands back a proof, which the decision takes to
//! count `@approval` permits as allows.

use std::future::Future;

use remit_core::approval::{Approval, ApprovalState, Consumed, Decision as Verdict};
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{ApprovalId, TaskId, WorkflowName};
use remit_core::rules::human_identity;
use remit_policy::{Decision, Outcome};
use remit_store::{Presentation, StoreError};
use serde_json::Value;

use super::{Answer, ApprovalRef, ApprovalStep, Pdp};
use crate::caller::Caller;
use crate::error::Error;

/// A call an approval is bound to: its canonical JSON, that JSON's digest, and whose it is.
pub(crate) struct BoundCall {
    pub call: Value,
    pub digest: String,
    pub task: Option<TaskId>,
    pub workflow: Option<WorkflowName>,
    /// The task's agent (named on the approval's audit records).
    pub agent: Option<String>,
    pub requested_by: String,
}

impl BoundCall {
    fn audit(&self, e: AuditEvent) -> AuditEvent {
        e.task_opt(self.task.as_ref().map(TaskId::as_str))
            .workflow_opt(self.workflow.as_ref().map(WorkflowName::as_str))
            .agent_opt(self.agent.as_deref())
    }
}

impl Pdp {
    /// Settles an "approval required" decision `d` for the call `bound`: with an approval id
    /// presented, uses it (once, only for this digest and policy version) and decides again
    /// with the proof (`redecide`); without one, opens a pending request. Both audited.
    pub(crate) async fn settle_approval<F, Fut>(
        &self,
        caller: &Caller,
        bound: BoundCall,
        presented: Option<String>,
        mut d: Decision,
        redecide: F,
    ) -> Result<Answer, Error>
    where
        F: FnOnce(Consumed) -> Fut,
        Fut: Future<Output = Result<Decision, Error>>,
    {
        let now = self.clock.now();
        if let Some(shown) = presented {
            let presented = |step, expires_at| Some(ApprovalRef { id: shown.clone(), expires_at, step });
            let unusable = |mut d: Decision, why: String| {
                d.outcome = Outcome::Deny;
                d.errors.push(format!("approval not usable: {why}"));
                Answer { decision: d, approval: presented(ApprovalStep::Presented, None) }
            };
            let Ok(id) = ApprovalId::parse(&shown) else {
                return Ok(unusable(
                    d,
                    format!("`{}` is not an approval id", remit_core::ids::truncate_for_error(&shown)),
                ));
            };
            let audit = bound.audit(
                AuditEvent::new(now, caller.actor(), AuditAction::ApprovalUse)
                    .detail([("approval_id", id.as_str().into()), ("policy_version", d.policy_version.into())]),
            );
            let p = Presentation { digest: bound.digest.clone(), policy_version: d.policy_version, at: now };
            return match self.store.approvals().consume(&id, p, audit).await {
                Ok(proof) => {
                    let asked = std::mem::take(&mut d.approval);
                    let mut ok = redecide(proof).await?;
                    ok.approval = asked;
                    Ok(Answer { decision: ok, approval: presented(ApprovalStep::Presented, None) })
                }
                Err(StoreError::Conflict(m)) => {
                    // Not usable now; if only because no human has decided yet (and it is
                    // this very call's request), the answer is "pending", not a deny.
                    match self.store.approvals().get(&id).await? {
                        Some(a)
                            if a.state == ApprovalState::Pending
                                && now < a.expires_at
                                && a.digest == bound.digest
                                && a.policy_version == d.policy_version =>
                        {
                            Ok(Answer {
                                decision: d,
                                approval: presented(ApprovalStep::StillPending, Some(a.expires_at)),
                            })
                        }
                        _ => Ok(unusable(d, m)),
                    }
                }
                Err(StoreError::NotFound { .. }) => Ok(unusable(d, format!("approval `{id}` not found"))),
                Err(e) => Err(e.into()),
            };
        }
        let id = ApprovalId::from_random(self.random.bytes16());
        let expires_at = now.plus_secs(self.approvals.ttl.as_secs());
        let audit = bound.audit(AuditEvent::new(now, caller.actor(), AuditAction::ApprovalRequest).detail([
            ("approval_id", id.as_str().into()),
            ("policy_version", d.policy_version.into()),
            ("reasons", d.approval.clone().into()),
        ]));
        let approval = Approval {
            id: id.clone(),
            state: ApprovalState::Pending,
            digest: bound.digest,
            policy_version: d.policy_version,
            request: bound.call.to_string(),
            reasons: d.approval.clone(),
            requested_by: bound.requested_by,
            requested_at: now,
            expires_at,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            used_at: None,
            task: bound.task,
            workflow: bound.workflow,
        };
        self.store.approvals().create(approval, audit).await?;
        Ok(Answer {
            decision: d,
            approval: Some(ApprovalRef {
                id: id.to_string(),
                expires_at: Some(expires_at),
                step: ApprovalStep::Opened,
            }),
        })
    }

    /// Approval requests, newest first (admin).
    pub async fn list_approvals(
        &self,
        caller: &Caller,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<Approval>, Error> {
        caller.require_human_or_admin()?;
        Ok(self.store.approvals().list(state, limit).await?)
    }

    /// One approval request, for whoever may see it: the admin; the task whose call it is;
    /// the instance that started that task, or that made the request (an AuthZEN PEP). Anyone
    /// else is told it does not exist.
    pub async fn approval(&self, caller: &Caller, id: &ApprovalId) -> Result<Approval, Error> {
        let not_found = || Error::NotFound(format!("approval `{id}` not found"));
        let a = self.store.approvals().get(id).await?.ok_or_else(not_found)?;
        let visible = match caller {
            Caller::Admin { .. } => true,
            // Allowed by Remit's own policy before this is reached.
            Caller::Human { .. } => true,
            Caller::Task { id: me, .. } => a.task.as_ref() == Some(me),
            Caller::Instance { id: me, spiffe_id, .. } => {
                a.requested_by == *spiffe_id
                    || match &a.task {
                        Some(t) => {
                            self.store.identity().task(t).await?.is_some_and(|t| t.instance.as_ref() == Some(me))
                        }
                        None => false,
                    }
            }
        };
        if visible { Ok(a) } else { Err(not_found()) }
    }

    /// An approver decides an open approval request. Approvers are named humans (the admin
    /// credential with an operator name): for a task's request, its workflow's owner, the
    /// workflow's configured approvers or a global approver; for an AuthZEN request, a
    /// global approver (anyone named, when none are configured). Nobody decides a request
    /// they made themselves.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &ApprovalId,
        approve: bool,
        reason: &str,
    ) -> Result<Approval, Error> {
        // A signed-in human (whose right to decide Remit's own policy checked before this), or
        // the break-glass credential naming its operator.
        let human = match caller {
            Caller::Human { human, .. } => human.email.clone(),
            Caller::Admin { operator: Some(o) } => o.clone(),
            _ => {
                return Err(Error::Denied(
                    "approvals are decided by a signed-in human (or the break-glass credential naming its operator)"
                        .into(),
                ));
            }
        };
        let human = &human;
        if reason.trim().is_empty() {
            return Err(Error::Invalid("a reason is required".into()));
        }
        let a = self
            .store
            .approvals()
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("approval `{id}` not found")))?;
        // One normalised form on both sides: letter case does not make another person.
        let own = match caller {
            Caller::Human { human: h, .. } => a.requested_by.starts_with(&format!("human:{}/", h.id)),
            _ => human_identity(&a.requested_by) == human_identity(&caller.actor()),
        };
        if own {
            return Err(Error::Denied("a request cannot be decided by the one who made it".into()));
        }
        if let Caller::Admin { .. } = caller {
            self.may_approve(human, &a).await?;
        }
        let now = self.clock.now();
        // Approving a call of a task that can no longer make it would be a grant nobody can
        // use (or, worse, one that outlives a kill): refuse; denying it is always fine.
        if approve
            && let Some(t) = &a.task
            && let Some(why) = self.task_gone(t, now).await?
        {
            return Err(Error::Conflict(format!("task `{t}` is no longer live ({why}): there is nothing to approve")));
        }
        let action = if approve { AuditAction::ApprovalApprove } else { AuditAction::ApprovalDeny };
        let agent = match &a.task {
            Some(t) => self.store.identity().task(t).await?.map(|t| t.agent.to_string()),
            None => None,
        };
        let audit = AuditEvent::new(now, caller.actor(), action)
            .reason(reason)
            .detail([("approval_id", id.as_str().into())])
            .task_opt(a.task.as_ref().map(TaskId::as_str))
            .workflow_opt(a.workflow.as_ref().map(WorkflowName::as_str))
            .agent_opt(agent.as_deref());
        // A signed-in human is named by their verified email; a name given with the break-glass
        // credential is only what its holder said, and the decision says so.
        let by = match caller {
            Caller::Human { .. } => human.clone(),
            _ => format!("break-glass:{}", remit_core::rules::human_identity(human)),
        };
        let verdict = Verdict { approve, by, reason: reason.to_owned(), at: now };
        Ok(self.store.approvals().decide(id, verdict, audit).await?)
    }

    /// Why the task `t` can no longer act, if it cannot (ended, killed, expired, gone).
    pub async fn task_gone(&self, t: &TaskId, now: remit_core::time::UnixMillis) -> Result<Option<String>, Error> {
        Ok(match self.store.identity().task_snapshot(t).await? {
            None => Some("task not found".into()),
            Some(s) => super::facts::inactive(&s, now).map(str::to_owned),
        })
    }

    /// Whether `human` has rights over the approval request `a` (see [`Pdp::decide_approval`]).
    async fn may_approve(&self, human: &str, a: &Approval) -> Result<(), Error> {
        let human = human_identity(human);
        let human = human.as_str();
        let named = |list: &[String]| list.iter().any(|x| human_identity(x) == human);
        let global = &self.approvals.approvers;
        if named(global) {
            return Ok(());
        }
        let Some(wf) = &a.workflow else {
            return if global.is_empty() {
                Ok(())
            } else {
                Err(Error::Denied(format!("`{human}` is not a configured approver")))
            };
        };
        if self.approvals.workflow_approvers.get(wf.as_str()).is_some_and(|l| named(l)) {
            return Ok(());
        }
        match self.store.identity().workflow(wf).await? {
            Some(w) if human_identity(&w.owner) == human => Ok(()),
            _ => Err(Error::Denied(format!(
                "`{human}` may not decide requests of workflow `{wf}`: only its owner or its configured approvers"
            ))),
        }
    }
}
