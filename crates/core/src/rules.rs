//! The lifecycle rules, in one place.
//!
//! Starting a task, ending it, consuming a join token and deciding whether a token is still
//! live all go through these functions. The store applies what they return with a
//! compare-and-set on the previous state, so a concurrent change is detected, not lost.

use sha2::{Digest, Sha256};

use crate::error::DomainError;
use crate::ids::{TaskId, WorkflowName};
use crate::model::{
    Agent, AgentState, Instance, InstanceState, JoinToken, Sensitivity, Task, TaskState, Workflow, WorkflowState,
};
use crate::time::UnixMillis;

/// Explicit limits on what a request may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// No workflow may allow tasks longer than this, whatever its own setting.
    pub hard_max_task_ttl_secs: u64,
    /// TTL given to a task whose request names none (capped by the workflow's maximum).
    pub default_task_ttl_secs: u64,
    pub max_intent_len: usize,
    pub max_audiences: usize,
    pub max_audience_len: usize,
    pub max_text_len: usize,
    pub max_tools: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hard_max_task_ttl_secs: 24 * 3600,
            default_task_ttl_secs: 5 * 60,
            max_intent_len: 4096,
            max_audiences: 16,
            max_audience_len: 512,
            max_text_len: 1024,
            max_tools: 256,
        }
    }
}

/// Default maximum task TTL of a new workflow: 15 minutes.
pub const DEFAULT_WORKFLOW_MAX_TTL_SECS: u64 = 15 * 60;
/// Default maximum delegation depth of a new workflow.
pub const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 3;

/// What an operator asks for when creating a workflow.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub name: WorkflowName,
    pub purpose: String,
    pub owner: String,
    pub ceiling: Sensitivity,
    pub allowed_tools: Vec<String>,
    pub max_task_ttl_secs: Option<u64>,
    pub max_delegation_depth: Option<u32>,
    /// Which agent may delegate to which (none: no agent-to-agent delegation).
    pub trust: crate::delegation::TrustRules,
}

pub(crate) fn check_text(what: &'static str, s: &str, max: usize, required: bool) -> Result<(), DomainError> {
    if required && s.trim().is_empty() {
        return Err(DomainError::invalid(what, "must not be empty"));
    }
    if s.len() > max {
        return Err(DomainError::invalid(what, format!("is longer than {max} bytes")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(DomainError::invalid(what, "must not contain control characters"));
    }
    Ok(())
}

/// Validates a workflow's allowed tools (the list is an allow-list; empty: no restriction).
pub fn check_tools(tools: &[String], limits: &Limits) -> Result<(), DomainError> {
    if tools.len() > limits.max_tools {
        return Err(DomainError::invalid("allowed tools", format!("more than {} tools", limits.max_tools)));
    }
    for t in tools {
        check_text("tool name", t, 128, true)?;
    }
    Ok(())
}

/// Validates a workflow request and builds the stored workflow.
pub fn new_workflow(req: NewWorkflow, limits: &Limits, now: UnixMillis) -> Result<Workflow, DomainError> {
    check_text("purpose", &req.purpose, limits.max_text_len, true)?;
    check_owner(&req.owner, limits)?;
    check_tools(&req.allowed_tools, limits)?;
    req.trust.check()?;
    let max_ttl = req.max_task_ttl_secs.unwrap_or(DEFAULT_WORKFLOW_MAX_TTL_SECS.min(limits.hard_max_task_ttl_secs));
    if max_ttl == 0 {
        return Err(DomainError::invalid("max task ttl", "must be at least one second"));
    }
    if max_ttl > limits.hard_max_task_ttl_secs {
        return Err(DomainError::TtlTooLong { requested: max_ttl, max: limits.hard_max_task_ttl_secs });
    }
    let depth = req.max_delegation_depth.unwrap_or(DEFAULT_MAX_DELEGATION_DEPTH);
    if depth > 16 {
        return Err(DomainError::invalid("max delegation depth", "must be at most 16"));
    }
    Ok(Workflow {
        name: req.name,
        purpose: req.purpose,
        owner: human_identity(&req.owner),
        owner_id: None,
        orphaned_at: None,
        ceiling: req.ceiling,
        allowed_tools: req.allowed_tools,
        max_task_ttl_secs: max_ttl,
        max_delegation_depth: depth,
        trust: req.trust,
        state: WorkflowState::Active,
        created_at: now,
        updated_at: now,
    })
}

/// The one form a human's name takes everywhere (owners, operators, approvers, requesters):
/// trimmed and lowercased, so `MALLORY@example.com` and `mallory@example.com` are one person
/// in every comparison, including "nobody decides a request they made".
pub fn human_identity(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Owners are people: a plain `user@host` address.
pub fn check_owner(owner: &str, limits: &Limits) -> Result<(), DomainError> {
    check_text("owner", owner, limits.max_text_len, true)?;
    let ok = owner.split_once('@').is_some_and(|(u, h)| !u.is_empty() && !h.is_empty() && !h.contains('@'))
        && !owner.chars().any(char::is_whitespace);
    if ok { Ok(()) } else { Err(DomainError::invalid("owner", "must be an email address such as `alice@example.com`")) }
}

/// What a caller asks for when starting a task.
#[derive(Debug, Clone)]
pub struct StartTask {
    pub workflow: WorkflowName,
    pub intent: String,
    pub sensitivity: Sensitivity,
    pub ttl_secs: Option<u64>,
    pub audience: Vec<String>,
    pub parent: Option<TaskId>,
    /// The task's place in its delegation tree (a root task: the default); for a child, what
    /// [`crate::delegation::child`] decided.
    pub delegation: crate::delegation::Delegation,
}

/// SHA-256 of the intent text, lowercase hex.
pub fn intent_hash(intent: &str) -> String {
    hex::encode(Sha256::digest(intent.as_bytes()))
}

/// Decides whether `agent` (through `instance`, if any) may start the requested task in `wf`,
/// and builds it. `started_by` names the actor for attribution.
#[allow(clippy::too_many_arguments)]
pub fn start_task(
    req: StartTask,
    wf: &Workflow,
    agent: &Agent,
    instance: Option<&Instance>,
    limits: &Limits,
    id: TaskId,
    started_by: String,
    now: UnixMillis,
) -> Result<Task, DomainError> {
    if wf.state != WorkflowState::Active {
        return Err(DomainError::WorkflowSuspended(wf.name.to_string()));
    }
    if agent.state != AgentState::Enabled {
        return Err(DomainError::AgentDisabled(agent.name.to_string()));
    }
    if !agent.workflows.contains(&wf.name) {
        return Err(DomainError::AgentNotInWorkflow { agent: agent.name.to_string(), workflow: wf.name.to_string() });
    }
    if let Some(inst) = instance
        && (instance_liveness(inst, agent, now) != Liveness::Active || inst.agent != agent.name)
    {
        return Err(DomainError::InstanceInactive(inst.id.to_string()));
    }
    // An instance attested through an entry held to one workflow starts tasks there only.
    if let Some(held) = instance.and_then(|i| i.workflow.as_ref())
        && *held != wf.name
    {
        return Err(DomainError::AgentNotInWorkflow { agent: agent.name.to_string(), workflow: wf.name.to_string() });
    }
    check_text("intent", &req.intent, limits.max_intent_len, true)?;
    if req.audience.is_empty() {
        return Err(DomainError::invalid("audience", "at least one audience is required"));
    }
    if req.audience.len() > limits.max_audiences {
        return Err(DomainError::invalid("audience", format!("at most {} audiences", limits.max_audiences)));
    }
    for a in &req.audience {
        check_text("audience", a, limits.max_audience_len, true)?;
    }
    if req.sensitivity > wf.ceiling {
        return Err(DomainError::SensitivityAboveCeiling { requested: req.sensitivity, ceiling: wf.ceiling });
    }
    let max = wf.max_task_ttl_secs.min(limits.hard_max_task_ttl_secs);
    let ttl = req.ttl_secs.unwrap_or(limits.default_task_ttl_secs.min(max));
    if ttl == 0 {
        return Err(DomainError::invalid("ttl", "must be at least one second"));
    }
    if ttl > max {
        return Err(DomainError::TtlTooLong { requested: ttl, max });
    }
    // A task never outlives the instance that started it: its deadline is capped there.
    let mut expires_at = now.plus_secs(ttl);
    if let Some(inst) = instance {
        expires_at = expires_at.min(inst.expires_at);
    }
    Ok(Task {
        id,
        workflow: wf.name.clone(),
        agent: agent.name.clone(),
        instance: instance.map(|i| i.id.clone()),
        parent: req.parent,
        intent_hash: intent_hash(&req.intent),
        intent: req.intent,
        sensitivity: req.sensitivity,
        audience: req.audience,
        state: TaskState::Active,
        started_by,
        created_at: now,
        expires_at,
        ended_at: None,
        end_reason: None,
        delegation: req.delegation,
    })
}

/// The state of a task at `now`: a stored `active` task past its deadline is `expired`.
pub fn effective_state(task: &Task, now: UnixMillis) -> TaskState {
    if task.state == TaskState::Active && now >= task.expires_at { TaskState::Expired } else { task.state }
}

/// The one place that decides which task transitions are legal: only an `active` task can
/// end, and it ends exactly once.
pub fn end_task(task: &Task, to: TaskState, now: UnixMillis) -> Result<TaskState, DomainError> {
    let from = effective_state(task, now);
    match (from, to) {
        (TaskState::Active, TaskState::Completed | TaskState::Revoked | TaskState::Expired) => Ok(to),
        _ => Err(DomainError::IllegalTransition { from, to }),
    }
}

/// Whether a presented credential is still honoured, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Active,
    Inactive(&'static str),
}

/// Liveness of an instance identity.
pub fn instance_liveness(inst: &Instance, agent: &Agent, now: UnixMillis) -> Liveness {
    if agent.state != AgentState::Enabled {
        Liveness::Inactive("agent disabled")
    } else if inst.state != InstanceState::Active {
        Liveness::Inactive("instance revoked")
    } else if now >= inst.expires_at {
        Liveness::Inactive("instance expired")
    } else {
        Liveness::Active
    }
}

/// Liveness of a task identity: the task, its workflow, its agent and (if any) the instance
/// that started it must all still be live.
pub fn task_liveness(task: &Task, wf: &Workflow, agent: &Agent, inst: Option<&Instance>, now: UnixMillis) -> Liveness {
    match effective_state(task, now) {
        TaskState::Active => {}
        TaskState::Completed => return Liveness::Inactive("task completed"),
        TaskState::Revoked => return Liveness::Inactive("task revoked"),
        TaskState::Expired => return Liveness::Inactive("task expired"),
    }
    if wf.state != WorkflowState::Active {
        return Liveness::Inactive("workflow suspended");
    }
    if agent.state != AgentState::Enabled {
        return Liveness::Inactive("agent disabled");
    }
    if let Some(i) = inst {
        if i.state != InstanceState::Active {
            return Liveness::Inactive("instance revoked");
        }
        // A task never outlives the instance that started it.
        if now >= i.expires_at {
            return Liveness::Inactive("instance expired");
        }
    }
    Liveness::Active
}

/// Checks that a join token can be used now. Only one use ever succeeds; the store enforces
/// that atomically by consuming with a compare-and-set on `used_at IS NULL`.
pub fn check_join_token(jt: &JoinToken, agent: &Agent, now: UnixMillis) -> Result<(), DomainError> {
    if jt.used_at.is_some() {
        return Err(DomainError::JoinTokenUsed);
    }
    // Made before a kill of its agent: a re-enabled agent does not bring it back.
    if jt.revoked_at.is_some() || jt.agent_generation != agent.kill_generation {
        return Err(DomainError::JoinTokenRevoked);
    }
    if now >= jt.expires_at {
        return Err(DomainError::JoinTokenExpired);
    }
    if agent.state != AgentState::Enabled {
        return Err(DomainError::AgentDisabled(agent.name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentName, InstanceId};
    use crate::model::InstanceState;

    fn wf() -> Workflow {
        new_workflow(
            NewWorkflow {
                name: WorkflowName::parse("deploy").unwrap(),
                purpose: "ship".into(),
                owner: "alice@example.com".into(),
                ceiling: Sensitivity::Confidential,
                allowed_tools: vec![],
                max_task_ttl_secs: Some(600),
                max_delegation_depth: None,
                trust: Default::default(),
            },
            &Limits::default(),
            UnixMillis(0),
        )
        .unwrap()
    }

    fn agent() -> Agent {
        Agent {
            name: AgentName::parse("bot").unwrap(),
            owner: "bob@example.com".into(),
            owner_id: None,
            orphaned_at: None,
            workflows: vec![WorkflowName::parse("deploy").unwrap()],
            state: AgentState::Enabled,
            kill_generation: 0,
            created_at: UnixMillis(0),
            updated_at: UnixMillis(0),
        }
    }

    fn req(ttl: Option<u64>) -> StartTask {
        StartTask {
            workflow: WorkflowName::parse("deploy").unwrap(),
            intent: "deploy v1".into(),
            sensitivity: Sensitivity::Internal,
            ttl_secs: ttl,
            audience: vec!["tools".into()],
            parent: None,
            delegation: Default::default(),
        }
    }

    fn start(r: StartTask, w: &Workflow, a: &Agent) -> Result<Task, DomainError> {
        start_task(r, w, a, None, &Limits::default(), TaskId::from_random([7; 16]), "admin".into(), UnixMillis(1000))
    }

    #[test]
    fn one_form_per_human() {
        assert_eq!(human_identity("  MALLORY@Example.com "), "mallory@example.com");
        let mut req = NewWorkflow {
            name: WorkflowName::parse("w").unwrap(),
            purpose: "p".into(),
            owner: "Alice@Example.COM".into(),
            ceiling: Sensitivity::Internal,
            allowed_tools: vec![],
            max_task_ttl_secs: None,
            max_delegation_depth: None,
            trust: Default::default(),
        };
        assert_eq!(new_workflow(req.clone(), &Limits::default(), UnixMillis(0)).unwrap().owner, "alice@example.com");
        req.owner = "not an email".into();
        assert!(new_workflow(req, &Limits::default(), UnixMillis(0)).is_err());
    }

    #[test]
    fn task_ttl_is_capped_by_workflow() {
        let t = start(req(None), &wf(), &agent()).unwrap();
        assert_eq!(t.expires_at, UnixMillis(1000 + 300_000));
        assert!(matches!(start(req(Some(601)), &wf(), &agent()), Err(DomainError::TtlTooLong { max: 600, .. })));
        assert!(start(req(Some(600)), &wf(), &agent()).is_ok());
    }

    #[test]
    fn refuses_suspended_disabled_and_foreign() {
        let mut w = wf();
        w.state = WorkflowState::Suspended;
        assert!(matches!(start(req(None), &w, &agent()), Err(DomainError::WorkflowSuspended(_))));
        let mut a = agent();
        a.state = AgentState::Disabled;
        assert!(matches!(start(req(None), &wf(), &a), Err(DomainError::AgentDisabled(_))));
        let mut a = agent();
        a.workflows.clear();
        assert!(matches!(start(req(None), &wf(), &a), Err(DomainError::AgentNotInWorkflow { .. })));
        let mut r = req(None);
        r.sensitivity = Sensitivity::Restricted;
        assert!(matches!(start(r, &wf(), &agent()), Err(DomainError::SensitivityAboveCeiling { .. })));
        let mut r = req(None);
        r.audience.clear();
        assert!(start(r, &wf(), &agent()).is_err());
    }

    #[test]
    fn transitions_only_from_active_and_once() {
        let t = start(req(None), &wf(), &agent()).unwrap();
        assert_eq!(end_task(&t, TaskState::Completed, UnixMillis(2000)).unwrap(), TaskState::Completed);
        let mut done = t.clone();
        done.state = TaskState::Completed;
        for to in [TaskState::Completed, TaskState::Revoked, TaskState::Active, TaskState::Expired] {
            assert!(end_task(&done, to, UnixMillis(2000)).is_err());
        }
        assert!(end_task(&t, TaskState::Active, UnixMillis(2000)).is_err());
        // Past its deadline an active task is expired and can no longer be completed.
        assert_eq!(effective_state(&t, t.expires_at), TaskState::Expired);
        assert!(end_task(&t, TaskState::Completed, t.expires_at).is_err());
    }

    #[test]
    fn liveness_follows_every_kill_switch() {
        let t = start(req(None), &wf(), &agent()).unwrap();
        let inst = Instance {
            id: InstanceId::from_random([1; 16]),
            agent: agent().name,
            state: InstanceState::Active,
            created_at: UnixMillis(0),
            expires_at: UnixMillis(10_000_000),
            revoked_at: None,
            revoke_reason: None,
            workflow: None,
            renew_until: None,
        };
        let now = UnixMillis(2000);
        assert_eq!(task_liveness(&t, &wf(), &agent(), Some(&inst), now), Liveness::Active);
        let mut w = wf();
        w.state = WorkflowState::Suspended;
        assert_ne!(task_liveness(&t, &w, &agent(), Some(&inst), now), Liveness::Active);
        let mut a = agent();
        a.state = AgentState::Disabled;
        assert_ne!(task_liveness(&t, &wf(), &a, Some(&inst), now), Liveness::Active);
        let mut i = inst.clone();
        i.state = InstanceState::Revoked;
        assert_ne!(task_liveness(&t, &wf(), &agent(), Some(&i), now), Liveness::Active);
        assert_ne!(task_liveness(&t, &wf(), &agent(), None, t.expires_at), Liveness::Active);
        // The instance that started it expiring ends the task too.
        let mut short = inst.clone();
        short.expires_at = UnixMillis(2500);
        assert_eq!(
            task_liveness(&t, &wf(), &agent(), Some(&short), UnixMillis(3000)),
            Liveness::Inactive("instance expired")
        );
    }

    #[test]
    fn a_task_never_outlives_its_instance() {
        let inst = Instance {
            id: InstanceId::from_random([1; 16]),
            agent: agent().name,
            state: InstanceState::Active,
            created_at: UnixMillis(0),
            expires_at: UnixMillis(61_000),
            revoked_at: None,
            revoke_reason: None,
            workflow: None,
            renew_until: None,
        };
        let t = start_task(
            req(Some(600)),
            &wf(),
            &agent(),
            Some(&inst),
            &Limits::default(),
            TaskId::from_random([7; 16]),
            "i".into(),
            UnixMillis(1000),
        )
        .unwrap();
        assert_eq!(t.expires_at, inst.expires_at, "capped at the instance's expiry");
    }
}
