//! Decisions for an agent's task: the principal is the live task behind a verified
//! JWT-SVID (verified by the caller of [`Pdp::decide_task`]), with Remit's request-time
//! context ([`super::facts`]) merged over the PEP's. A workflow's tools are an allow-list no
//! policy can widen. An allowed call that uses a tool is recorded for the task, so later
//! decisions see it in `tools_used`. Everything up to the engine's answer is built by the
//! pure functions in [`super::facts`], which the offline policy tester shares.

use std::collections::BTreeMap;

use remit_core::audit::{AuditAction, AuditEvent, Outcome as AuditOutcome};
use remit_policy::{Outcome, Part};
use remit_store::TaskSnapshot;
use serde_json::{Value, json};

use super::approvals::BoundCall;
use super::{ActionRef, ApprovalRef, Party, Pdp, Verdict, bounded, canonical, facts, hex_sha256, required, verdict};
use crate::caller::Caller;
use crate::error::Error;

/// What a PEP (or the task itself) asks about a task's action.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskCall {
    pub action: ActionRef,
    pub resource: Party,
    /// Facts the PEP adds (e.g. `tool`, `target`, arguments); Remit's own facts win.
    pub context: Value,
    /// On the retry of a call that needed approval: the approved request's id.
    pub approval: Option<String>,
    /// Answer "approval required" without opening a request (a token exchange that asked
    /// for no scope in particular drops such scopes instead of paging a human).
    pub no_approval_request: bool,
    /// In a token exchange, what Remit vouches for about the credential asked for: the tool's
    /// class and the trust domain it would come from (`tool_class`, `trust_domain`).
    pub issuing: Option<(remit_core::tool::ToolClass, String)>,
    /// What else an approval for this call is bound to, beyond the call itself (not a policy
    /// fact): the proxy's request method, query and body digest, so an approval is spent only
    /// on the very request a human saw.
    pub bind: Option<Value>,
}

impl TaskCall {
    /// Checks the request's shape (before any token is looked at).
    pub fn check(&self, max_id: usize) -> Result<(), Error> {
        required(&self.action.name, "action.name")?;
        required(&self.resource.etype, "resource.type")?;
        required(&self.resource.id, "resource.id")?;
        bounded(self.action.name.as_deref(), "action.name", max_id)?;
        bounded(self.resource.etype.as_deref(), "resource.type", max_id)?;
        bounded(self.resource.id.as_deref(), "resource.id", max_id)?;
        if !(self.context.is_null() || self.context.is_object()) {
            return Err(Error::Invalid("`context` must be an object".into()));
        }
        Ok(())
    }
}

/// The answer to a task's decision.
#[derive(Debug, Clone)]
pub struct TaskAnswer {
    pub decision: remit_policy::Decision,
    /// The task the token named (`None` when the token was not a valid task token).
    pub task: Option<String>,
    /// The approval request opened for this call, or the approval presented.
    pub approval: Option<ApprovalRef>,
    /// The tool this call uses, as recorded for the task (when allowed).
    pub tool: Option<String>,
}

impl TaskAnswer {
    /// What the decision says, as callers see it.
    pub fn verdict(&self) -> Verdict {
        verdict(&self.decision, self.approval.as_ref())
    }
}

impl Pdp {
    /// Decides an action of the task in `snap` (the task a verified token names, with its
    /// SPIFFE ID; `None` when the token was not a valid task token, which is a deny). An
    /// inactive task is a deny, never an error, so a PEP fails closed.
    pub async fn decide_task(
        &self,
        caller: &Caller,
        call: TaskCall,
        snap: Option<(TaskSnapshot, String)>,
    ) -> Result<TaskAnswer, Error> {
        call.check(self.limits.max_entity_id_bytes)?;
        let engine = self.engine();
        let now = self.clock.now();
        let resource_type = engine.resource_type(call.resource.etype.as_deref().unwrap_or_default());
        let pep_ctx = facts::pep_facts(&call.context);
        let tool = facts::tool_of(&resource_type, call.resource.id.as_deref(), &pep_ctx).map_err(Error::Invalid)?;
        let mut answer = TaskAnswer { decision: Pdp::deny(&engine, vec![]), task: None, approval: None, tool: None };
        let mut record_tool = false;
        match &snap {
            None => answer.decision.errors.push("the token is not a valid task token".into()),
            Some((snap, spiffe_id)) => {
                answer.task = Some(snap.task.id.to_string());
                let action = call.action.name.as_deref().unwrap_or_default();
                if let Some(why) = facts::refusal(snap, tool.as_deref(), now).or_else(|| {
                    facts::undelegated(
                        snap,
                        action,
                        &resource_type,
                        call.resource.id.as_deref(),
                        tool.as_deref(),
                        &pep_ctx,
                    )
                }) {
                    answer.decision.errors.push(why);
                } else {
                    let t = &snap.task;
                    let tools_used = self.store.identity().tools_used(&t.id).await?;
                    // A task holds at most MAX_TOOLS_PER_TASK distinct tools: a new one past it is
                    // refused, so `tools_used` never silently misses a tool the task used.
                    if let Some(why) = facts::tool_cap(&tools_used, tool.as_deref()) {
                        answer.decision.errors.push(why);
                    } else {
                        let mut ctx = facts::task_context(
                            snap,
                            &tools_used,
                            tool.as_deref(),
                            pep_ctx.clone(),
                            &facts::Delegation::of(t),
                            now,
                        );
                        if let Some((class, td)) = &call.issuing {
                            ctx.insert("tool_class".into(), class.as_str().into());
                            ctx.insert("trust_domain".into(), td.as_str().into());
                        }
                        let mut ents = BTreeMap::new();
                        let resource = self.load_entity(&resource_type, &call.resource, &mut ents).await?;
                        let action = call.action.name.as_deref().unwrap_or_default();
                        let req =
                            facts::task_request(snap, action, resource, ents.into_values().collect::<Vec<Part>>(), ctx)
                                .map_err(Error::from)?;
                        answer.decision = engine.decide(
                            req.principal.clone(),
                            req.action.clone(),
                            req.resource.clone(),
                            req.context.clone(),
                            &req.entities,
                        );
                        if answer.decision.outcome == Outcome::ApprovalRequired
                            && !(call.no_approval_request && call.approval.is_none())
                        {
                            let mut bound = json!({
                                "task": t.id.as_str(),
                                "action": {"name": call.action.name, "properties": call.action.properties},
                                "resource": {"type": call.resource.etype, "id": call.resource.id,
                                             "properties": call.resource.properties},
                                "context": Value::Object(pep_ctx.clone()),
                            });
                            if let (Some(b), Value::Object(m)) = (&call.bind, &mut bound) {
                                m.insert("request".into(), b.clone());
                            }
                            let bound_call = canonical(&bound);
                            let bound = BoundCall {
                                digest: hex_sha256(&bound_call),
                                call: bound_call,
                                task: Some(t.id.clone()),
                                workflow: Some(t.workflow.clone()),
                                agent: Some(t.agent.to_string()),
                                requested_by: spiffe_id.clone(),
                            };
                            let d = answer.decision.clone();
                            let engine = &engine;
                            let settled = self
                                .settle_approval(caller, bound, call.approval.clone(), d, |proof| async move {
                                    let facts::TaskRequest { principal, action, resource, context, entities } = req;
                                    Ok(engine.decide_approved(principal, action, resource, context, &entities, &proof))
                                })
                                .await?;
                            answer.decision = settled.decision;
                            answer.approval = settled.approval;
                        }
                        record_tool = answer.decision.allowed() && tool.is_some();
                    }
                }
            }
        }
        let d = &answer.decision;
        let v = answer.verdict();
        let mut e = AuditEvent::new(now, caller.actor(), AuditAction::AccessEvaluate)
            .outcome(if d.allowed() { AuditOutcome::Success } else { AuditOutcome::Denied })
            .detail([
                ("policy_version", d.policy_version.into()),
                ("decision", v.as_str().into()),
                ("reasons", d.reasons.clone().into()),
                ("errors", d.errors.clone().into()),
                ("action", call.action.name.clone().into()),
                ("resource", json!({"type": call.resource.etype, "id": call.resource.id})),
                ("tool", tool.clone().into()),
                ("approval_id", answer.approval.as_ref().map(|a| a.id.clone()).into()),
            ]);
        // Every record about a task names its workflow and agent (the instance in `detail`),
        // so `audit list --workflow` finds it.
        if let Some((snap, _)) = &snap {
            let t = &snap.task;
            e = e.task(&t.id).workflow(&t.workflow).agent(&t.agent);
            if let Some(i) = &t.instance {
                e = e.with_detail_field("instance", i.as_str().into());
            }
        }
        // A task whose delegation limits its calls: the allowed call is counted with its record,
        // and one past the limit is a deny after all.
        let limit = snap.as_ref().and_then(|(s, _)| s.task.delegation.authority.max_calls).filter(|_| d.allowed());
        if let (Some(max), Some((snap, _))) = (limit, &snap) {
            let t = tool.as_deref().filter(|_| record_tool);
            if self.store.identity().record_call(&snap.task.id, t, now, e.clone()).await? {
                answer.tool = t.map(str::to_owned);
                self.count(v);
                return Ok(answer);
            }
            answer.decision = Pdp::deny(
                &self.engine(),
                vec![format!("a call budget is spent (this task's {max}, an ancestor's or its grant's)")],
            );
            let denied = e
                .outcome(AuditOutcome::Denied)
                .with_detail_field("decision", answer.verdict().as_str().into())
                .with_detail_field("errors", answer.decision.errors.clone().into());
            self.count(answer.verdict());
            self.store.audit().append(vec![denied]).await?;
            return Ok(answer);
        }
        self.count(v);
        match (&snap, &tool) {
            (Some((snap, _)), Some(tool)) if record_tool => {
                self.store.identity().record_tool_use(&snap.task.id, tool, now, e).await?;
                answer.tool = Some(tool.clone());
            }
            _ => self.store.audit().append(vec![e]).await?,
        }
        Ok(answer)
    }
}
