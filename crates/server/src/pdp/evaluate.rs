//! AuthZEN evaluations: one or a batch (with the short-circuit semantics), explanations
//! that change nothing, and which facts a caller may state.

use std::collections::BTreeMap;
use std::sync::Arc;

use remit_core::approval::Consumed;
use remit_core::audit::{AuditAction, AuditEvent, Outcome as AuditOutcome};
use remit_policy::{Decision, Engine, Outcome};
use serde_json::{Value, json};

use super::approvals::BoundCall;
use super::{APPROVAL_CONTEXT_KEY, ActionRef, Answer, Party, Pdp, bounded, canonical, hex_sha256, required};
use crate::caller::Caller;
use crate::error::Error;

/// One evaluation, with every part present (after defaults were applied).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    pub subject: Party,
    pub action: ActionRef,
    pub resource: Party,
    pub context: Value,
}

impl Evaluation {
    /// Checks the fields AuthZEN requires (the message names the missing one).
    pub fn check(&self) -> Result<(), Error> {
        required(&self.subject.etype, "subject.type")?;
        required(&self.subject.id, "subject.id")?;
        required(&self.resource.etype, "resource.type")?;
        required(&self.resource.id, "resource.id")?;
        required(&self.action.name, "action.name")?;
        if !(self.context.is_null() || self.context.is_object()) {
            return Err(Error::Invalid("`context` must be an object".into()));
        }
        Ok(())
    }

    /// Checks the lengths of whatever names are present (searches leave some out).
    pub fn check_lengths(&self, max_id: usize) -> Result<(), Error> {
        bounded(self.subject.etype.as_deref(), "subject.type", max_id)?;
        bounded(self.subject.id.as_deref(), "subject.id", max_id)?;
        bounded(self.resource.etype.as_deref(), "resource.type", max_id)?;
        bounded(self.resource.id.as_deref(), "resource.id", max_id)?;
        bounded(self.action.name.as_deref(), "action.name", max_id)
    }

    /// Refuses facts only Remit can vouch for, supplied by a caller: properties of Remit's
    /// own entity types and the task-context members Remit computes for `/v1/decisions`.
    pub fn refuse_vouched_facts(&self, engine: &Engine) -> Result<(), Error> {
        let own = |t: &str| remit_policy::REMIT_ENTITY_TYPES.contains(&t);
        for (e, cedar, what) in [
            (&self.subject, engine.subject_type(self.subject.etype.as_deref().unwrap_or_default()), "subject"),
            (&self.resource, engine.resource_type(self.resource.etype.as_deref().unwrap_or_default()), "resource"),
        ] {
            if own(&cedar) && !e.properties.is_empty() {
                return Err(Error::Invalid(format!(
                    "`{what}.properties`: the facts of Remit's own `{cedar}` entities come from Remit, not from \
                     callers (an agent's task asks with its token at /v1/decisions)"
                )));
            }
        }
        if let Value::Object(m) = &self.context
            && let Some(k) = remit_policy::TASK_CONTEXT_FACTS.iter().find(|k| m.contains_key(**k))
        {
            return Err(Error::Invalid(format!(
                "`context.{k}` is a task fact Remit vouches for; it is computed at /v1/decisions, never taken from callers"
            )));
        }
        Ok(())
    }

    /// The context policies see: the request's, without Remit's approval member.
    pub(crate) fn policy_context(&self) -> Value {
        let mut ctx = self.context.clone();
        if let Value::Object(m) = &mut ctx {
            m.remove(APPROVAL_CONTEXT_KEY);
        }
        ctx
    }

    /// The call an approval is bound to, and its digest: subject, action, resource (with
    /// their properties) and the context without the approval id itself.
    pub(crate) fn call(&self) -> (Value, String) {
        // No context and an empty one are the same call.
        let ctx = match self.policy_context() {
            Value::Null => json!({}),
            c => c,
        };
        let call = canonical(&json!({
            "subject": {"type": self.subject.etype, "id": self.subject.id, "properties": self.subject.properties},
            "action": {"name": self.action.name, "properties": self.action.properties},
            "resource": {"type": self.resource.etype, "id": self.resource.id, "properties": self.resource.properties},
            "context": ctx,
        }));
        let digest = hex_sha256(&call);
        (call, digest)
    }
}

impl Pdp {
    /// Decides one evaluation (already checked) without auditing it; with a `proof` of a
    /// used approval for this call, permits annotated `@approval` count as allows.
    pub(crate) async fn decide_one(
        &self,
        engine: &Engine,
        ev: &Evaluation,
        proof: Option<&Consumed>,
    ) -> Result<Decision, Error> {
        let mut ents = BTreeMap::new();
        let principal = self
            .load_entity(&engine.subject_type(ev.subject.etype.as_deref().unwrap_or_default()), &ev.subject, &mut ents)
            .await?;
        let resource = self
            .load_entity(
                &engine.resource_type(ev.resource.etype.as_deref().unwrap_or_default()),
                &ev.resource,
                &mut ents,
            )
            .await?;
        let action = remit_policy::action(ev.action.name.as_deref().unwrap_or_default()).map_err(Error::from)?;
        let context = remit_policy::context(&ev.policy_context()).map_err(Error::from)?;
        let entities = remit_policy::entities_from(ents.into_values().collect()).map_err(Error::from)?;
        Ok(match proof {
            None => engine.decide(principal, action, resource, context, &entities),
            Some(p) => engine.decide_approved(principal, action, resource, context, &entities, p),
        })
    }

    /// Only the admin credential may state facts Remit vouches for (e.g. to test a policy
    /// written against a task's context with `remit policy test`); every other caller gets an
    /// error naming the field. Names are length-checked for everyone.
    pub(crate) fn check_caller_facts(
        &self,
        caller: &Caller,
        engine: &Engine,
        evals: &[Evaluation],
    ) -> Result<(), Error> {
        // AuthZEN is for PEPs (the admin or an agent instance); a task asks at /v1/decisions.
        caller.require_not_task()?;
        for ev in evals {
            ev.check_lengths(self.limits.max_entity_id_bytes)?;
            if !matches!(caller, Caller::Admin { .. }) {
                ev.refuse_vouched_facts(engine)?;
            }
        }
        Ok(())
    }

    /// Resolves an "approval required" AuthZEN decision: uses a presented approval (once,
    /// for this exact call) or opens an approval request.
    async fn settle(&self, caller: &Caller, engine: &Engine, ev: &Evaluation, d: Decision) -> Result<Answer, Error> {
        let (call, digest) = ev.call();
        let presented = ev.context.get(APPROVAL_CONTEXT_KEY).and_then(Value::as_str).map(str::to_owned);
        let bound = BoundCall { call, digest, task: None, workflow: None, agent: None, requested_by: caller.actor() };
        self.settle_approval(caller, bound, presented, d, |proof| async move {
            self.decide_one(engine, ev, Some(&proof)).await
        })
        .await
    }

    /// Decides a list of evaluations in order, stopping after the first decision equal to
    /// `stop_on` (the short-circuit semantics), and audits every decision made. In a batch,
    /// an item that cannot be decided (e.g. corrupt stored data) is a deny carrying the
    /// error, not a failed batch; a single evaluation fails with the error.
    pub async fn evaluate(
        &self,
        caller: &Caller,
        evals: &[Evaluation],
        stop_on: Option<bool>,
    ) -> Result<Vec<Answer>, Error> {
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, evals)?;
        let batch = evals.len() > 1;
        let mut out = Vec::with_capacity(evals.len());
        let mut events = Vec::with_capacity(evals.len());
        let now = self.clock.now();
        for ev in evals {
            let answer = match self.decide_one(&engine, ev, None).await {
                Ok(d) if d.outcome == Outcome::ApprovalRequired => self.settle(caller, &engine, ev, d).await?,
                Ok(d) => Answer::new(d),
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) if batch => {
                    let shown = match &e {
                        Error::Internal(detail) => {
                            tracing::error!(detail = %detail, "a batch item could not be decided");
                            "internal error".to_owned()
                        }
                        other => other.to_string(),
                    };
                    Answer::new(Pdp::deny(&engine, vec![shown]))
                }
                Err(e) => return Err(e),
            };
            let d = &answer.decision;
            let allowed = d.allowed();
            events.push(
                AuditEvent::new(now, caller.actor(), AuditAction::AccessEvaluate)
                    .outcome(if allowed { AuditOutcome::Success } else { AuditOutcome::Denied })
                    .detail([
                        ("policy_version", d.policy_version.into()),
                        ("decision", answer.verdict().as_str().into()),
                        ("reasons", d.reasons.clone().into()),
                        ("subject", json!({"type": ev.subject.etype, "id": ev.subject.id})),
                        ("action", ev.action.name.clone().into()),
                        ("resource", json!({"type": ev.resource.etype, "id": ev.resource.id})),
                        ("approval_id", answer.approval.as_ref().map(|a| a.id.clone()).into()),
                    ]),
            );
            self.count(answer.verdict());
            out.push(answer);
            if stop_on == Some(allowed) {
                break;
            }
        }
        self.store.audit().append(events).await?;
        Ok(out)
    }

    /// Decides one evaluation and explains it, changing nothing: no approval is opened or
    /// used (an `@approval` permit shows as `approval_required`), and the only record written
    /// is this explanation's own `access.explain`. Returns the decision with the engine that
    /// made it, so the policy text shown is from the version that decided.
    pub async fn explain(&self, caller: &Caller, ev: &Evaluation) -> Result<(Decision, Arc<Engine>), Error> {
        caller.require_human_or_admin()?;
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, std::slice::from_ref(ev))?;
        let d = self.decide_one(&engine, ev, None).await?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AccessExplain).detail([
            ("policy_version", d.policy_version.into()),
            ("decision", serde_json::to_value(d.outcome).unwrap_or_default()),
            ("reasons", d.reasons.clone().into()),
            ("subject", json!({"type": ev.subject.etype, "id": ev.subject.id})),
            ("action", ev.action.name.clone().into()),
            ("resource", json!({"type": ev.resource.etype, "id": ev.resource.id})),
        ]);
        self.store.audit().append(vec![audit]).await?;
        Ok((d, engine))
    }
}
