//! The offline policy tester (`remit policy test`): task-decision cases decided with no
//! server, no store and no token, through the same pure steps the server takes
//! ([`super::facts`]): the synthetic task's liveness and allowed tools, the PEP's facts
//! stripped of what Remit vouches for, Remit's context merged over them, the task's
//! entities, and the engine. An approved case goes through the core approval lifecycle
//! (`approved → used`) to get the proof the engine takes, as the server's store does.
//!
//! A case file (`"kind": "task"`):
//!
//! ```json
//! {"kind": "task", "policies": "policies", "now": "2026-01-01T00:00:00Z",
//!  "defaults": {"task": {"workflow": "triage", "agent": "triage-bot", "sensitivity": "internal"}},
//!  "entities": [],
//!  "cases": [{"name": "reads a ticket", "task": {"tools_used": []}, "action": "call_tool",
//!             "resource": {"type": "Tool", "id": "jira.read"}, "context": {"target": "JIRA-1"},
//!             "approved": false, "expect": "allow"}]}
//! ```

use remit_core::approval::{self, Approval, ApprovalState, Consumed, Presented};
use remit_core::ids::{AgentName, ApprovalId, InstanceId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, InstanceState, Sensitivity, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use remit_policy::{Engine, Outcome, Part};
use remit_store::TaskSnapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::facts::{self, Delegation};

/// Most cases in one file.
pub const MAX_CASES: usize = 10_000;

/// A synthetic task: every field optional, a case's fields override the file's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub workflow: Option<String>,
    pub agent: Option<String>,
    /// The workflow's owner (the `Workflow` entity's `owner`).
    pub owner: Option<String>,
    pub intent: Option<String>,
    pub sensitivity: Option<Sensitivity>,
    /// The workflow's sensitivity ceiling.
    pub ceiling: Option<Sensitivity>,
    /// The workflow's allowed tools (empty: no restriction).
    pub allowed_tools: Option<Vec<String>>,
    /// Tools the task was allowed to use before this call.
    pub tools_used: Option<Vec<String>>,
    pub time_left_secs: Option<u64>,
    /// Whether an agent instance (rather than an admin) started the task.
    pub instance: Option<bool>,
    pub delegation_depth: Option<u32>,
    pub delegation_chain: Option<Vec<String>>,
    /// The task's state (`active`, `completed`, `revoked`, `expired`): a kill switch.
    pub state: Option<TaskState>,
    pub workflow_state: Option<WorkflowState>,
    pub agent_state: Option<AgentState>,
}

impl TaskSpec {
    /// `self` with `base`'s fields where `self` has none.
    pub fn over(&self, base: &TaskSpec) -> TaskSpec {
        macro_rules! pick {
            ($($f:ident),*) => { TaskSpec { $($f: self.$f.clone().or_else(|| base.$f.clone())),* } };
        }
        pick!(
            workflow,
            agent,
            owner,
            intent,
            sensitivity,
            ceiling,
            allowed_tools,
            tools_used,
            time_left_secs,
            instance,
            delegation_depth,
            delegation_chain,
            state,
            workflow_state,
            agent_state
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub task: TaskSpec,
}

/// The resource a case names, with the properties the PEP states.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseResource {
    #[serde(rename = "type")]
    pub etype: String,
    pub id: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// One decision case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub task: TaskSpec,
    pub action: String,
    pub resource: CaseResource,
    #[serde(default)]
    pub context: Value,
    /// Whether a human approved this exact call (the retry presents the approval).
    #[serde(default)]
    pub approved: bool,
    /// `allow`, `deny` or `approval_required`.
    pub expect: Outcome,
}

/// A `"kind": "task"` case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub kind: String,
    /// The policy directory, relative to the case file.
    pub policies: Option<String>,
    /// The time the cases are decided at (RFC 3339); default: now.
    pub now: Option<String>,
    #[serde(default)]
    pub defaults: Defaults,
    /// Attribute-store entities (Cedar's JSON entity form) the resources may use.
    #[serde(default)]
    pub entities: Vec<Value>,
    pub cases: Vec<Case>,
}

/// What one case got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub expected: Outcome,
    pub got: Outcome,
    pub passed: bool,
    /// The policies that decided.
    pub reasons: Vec<String>,
    /// Why it was refused before any policy, or evaluation errors.
    pub errors: Vec<String>,
    /// The `@approval` texts, for approval required.
    pub approval: Vec<String>,
}

/// Reads a case file, refusing anything it does not know.
pub fn parse(v: Value) -> Result<CaseFile, String> {
    let f: CaseFile = serde_json::from_value(v).map_err(|e| format!("case file: {e}"))?;
    if f.kind != "task" {
        return Err(format!("case file: kind `{}` is not decided offline (only `task`)", f.kind));
    }
    if f.cases.len() > MAX_CASES {
        return Err(format!("case file: {} cases, more than the {MAX_CASES} allowed", f.cases.len()));
    }
    Ok(f)
}

/// The time a file's cases are decided at.
pub fn now_of(f: &CaseFile, wall: UnixMillis) -> Result<UnixMillis, String> {
    match &f.now {
        Some(s) => {
            UnixMillis::parse_rfc3339(s).ok_or_else(|| format!("case file: `now`: `{s}` is not an RFC 3339 time"))
        }
        None => Ok(wall),
    }
}

/// Decides every case of `f` with `engine` at `now`.
pub fn run(engine: &Engine, f: &CaseFile, now: UnixMillis) -> Vec<CaseResult> {
    f.cases.iter().enumerate().map(|(n, c)| decide(engine, f, c, n, now)).collect()
}

fn decide(engine: &Engine, f: &CaseFile, c: &Case, n: usize, now: UnixMillis) -> CaseResult {
    let spec = c.task.over(&f.defaults.task);
    let d = decide_inner(engine, f, c, &spec, n, now).unwrap_or_else(|why| denied(engine, why));
    CaseResult {
        name: c.name.clone(),
        expected: c.expect,
        got: d.outcome,
        passed: d.outcome == c.expect,
        reasons: d.reasons,
        errors: d.errors,
        approval: d.approval,
    }
}

/// A deny no policy made: `why` says what refused it.
fn denied(engine: &Engine, why: String) -> remit_policy::Decision {
    remit_policy::Decision {
        outcome: Outcome::Deny,
        policy_version: engine.version(),
        reasons: vec![],
        errors: vec![why],
        approval: vec![],
    }
}

/// One case through the server's steps; `Err` is a refusal before any policy (the reason).
fn decide_inner(
    engine: &Engine,
    f: &CaseFile,
    c: &Case,
    spec: &TaskSpec,
    n: usize,
    now: UnixMillis,
) -> Result<remit_policy::Decision, String> {
    let snap = snapshot(spec, n, now)?;
    let resource_type = engine.resource_type(&c.resource.etype);
    let pep = facts::pep_facts(&c.context);
    let tool = facts::tool_of(&resource_type, Some(&c.resource.id), &pep)?;
    if let Some(why) = facts::refusal(&snap, tool.as_deref(), now) {
        return Err(why);
    }
    let delegation = Delegation {
        depth: spec.delegation_depth.unwrap_or(0),
        chain: spec.delegation_chain.clone().unwrap_or_default(),
    };
    let used = spec.tools_used.clone().unwrap_or_default();
    if let Some(why) = facts::tool_cap(&used, tool.as_deref()) {
        return Err(why);
    }
    let ctx = facts::task_context(&snap, &used, tool.as_deref(), pep, &delegation, now);
    let resource = remit_policy::uid(&resource_type, &c.resource.id).map_err(|e| e.to_string())?;
    let mut parts: Vec<Part> = f.entities.iter().cloned().map(Part::Json).collect();
    let stored = f.entities.iter().any(|e| {
        e["uid"]["type"].as_str() == Some(resource_type.as_str()) && e["uid"]["id"].as_str() == Some(&c.resource.id)
    });
    if !stored {
        parts.push(Part::Json(json!({"uid": {"type": resource_type, "id": c.resource.id},
                                     "attrs": remit_policy::strip_nulls_map(c.resource.properties.clone()),
                                     "parents": []})));
    }
    let req = facts::task_request(&snap, &c.action, resource, parts, ctx).map_err(|e| e.to_string())?;
    let d = engine.decide(
        req.principal.clone(),
        req.action.clone(),
        req.resource.clone(),
        req.context.clone(),
        &req.entities,
    );
    if d.outcome != Outcome::ApprovalRequired || !c.approved {
        return Ok(d);
    }
    // The approval, decided by a human and presented by the retry, used once.
    let proof = approved_proof(engine.version(), n, now)?;
    Ok(engine.decide_approved(req.principal, req.action, req.resource, req.context, &req.entities, &proof))
}

fn approved_proof(policy_version: u64, n: usize, now: UnixMillis) -> Result<Consumed, String> {
    let id = ApprovalId::from_random(seed(0xa0, n));
    let digest = "offline".to_owned();
    let a = Approval {
        id,
        state: ApprovalState::Approved,
        digest: digest.clone(),
        policy_version,
        request: String::new(),
        reasons: vec![],
        requested_by: "offline".into(),
        requested_at: now,
        expires_at: UnixMillis(now.0 + 60_000),
        decided_by: Some("offline".into()),
        decided_at: Some(now),
        decision_reason: None,
        used_at: None,
        task: None,
        workflow: None,
    };
    let used =
        approval::consume(&a, Presented { digest: &digest, policy_version, at: now }).map_err(|e| e.to_string())?;
    Consumed::after_consume(&used).ok_or_else(|| "the approval was not used".to_owned())
}

fn seed(tag: u8, n: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = tag;
    b[8..].copy_from_slice(&(n as u64).to_be_bytes());
    b
}

/// The synthetic task, its workflow, agent and instance.
fn snapshot(spec: &TaskSpec, n: usize, now: UnixMillis) -> Result<TaskSnapshot, String> {
    let workflow = WorkflowName::parse(spec.workflow.as_deref().unwrap_or("workflow")).map_err(|e| e.to_string())?;
    let agent = AgentName::parse(spec.agent.as_deref().unwrap_or("agent")).map_err(|e| e.to_string())?;
    let intent = spec.intent.clone().unwrap_or_default();
    let sensitivity = spec.sensitivity.unwrap_or_default();
    let left = i64::try_from(spec.time_left_secs.unwrap_or(600)).unwrap_or(i64::MAX / 2_000).saturating_mul(1000);
    let expires_at = UnixMillis(now.0.saturating_add(left));
    let instance = spec.instance.unwrap_or(false).then(|| Instance {
        id: InstanceId::from_random(seed(0x1, n)),
        agent: agent.clone(),
        state: InstanceState::Active,
        created_at: now,
        expires_at: UnixMillis(expires_at.0.saturating_add(1)),
        revoked_at: None,
        revoke_reason: None,
        workflow: None,
        renew_until: None,
    });
    let task = Task {
        id: TaskId::from_random(seed(0x7, n)),
        workflow: workflow.clone(),
        agent: agent.clone(),
        instance: instance.as_ref().map(|i| i.id.clone()),
        parent: None,
        intent_hash: remit_core::rules::intent_hash(&intent),
        intent,
        sensitivity,
        audience: vec![],
        state: spec.state.unwrap_or(TaskState::Active),
        started_by: "offline".into(),
        created_at: now,
        expires_at,
        ended_at: None,
        end_reason: None,
        delegation: Default::default(),
    };
    let wf = Workflow {
        name: workflow.clone(),
        purpose: String::new(),
        owner: spec.owner.clone().unwrap_or_default(),
        owner_id: None,
        orphaned_at: None,
        ceiling: spec.ceiling.unwrap_or(Sensitivity::Restricted).max(sensitivity),
        allowed_tools: spec.allowed_tools.clone().unwrap_or_default(),
        max_task_ttl_secs: 3600,
        max_delegation_depth: 0,
        trust: Default::default(),
        state: spec.workflow_state.unwrap_or(WorkflowState::Active),
        created_at: now,
        updated_at: now,
    };
    let ag = Agent {
        name: agent,
        owner: String::new(),
        owner_id: None,
        orphaned_at: None,
        workflows: vec![workflow],
        state: spec.agent_state.unwrap_or(AgentState::Enabled),
        kill_generation: 0,
        created_at: now,
        updated_at: now,
    };
    Ok(TaskSnapshot { task, workflow: wf, agent: ag, instance })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
@id("read") permit(principal, action == Action::"call_tool", resource == Tool::"jira.read");
@id("write") @approval("a human checks writes")
permit(principal, action == Action::"call_tool", resource == Tool::"jira.write")
when { context.tools_used.contains("jira.read") };
@id("restricted") forbid(principal, action, resource) when { context.data_sensitivity_rank >= 3 };
"#;

    fn engine() -> Engine {
        let b = remit_policy::Bundle {
            policies: vec![remit_policy::PolicyFile { name: "p.cedar".into(), source: POLICY.into() }],
            ..Default::default()
        };
        Engine::compile(1, &b).unwrap()
    }

    fn file(cases: Value) -> CaseFile {
        parse(json!({"kind": "task", "defaults": {"task": {"workflow": "triage", "agent": "bot",
                     "allowed_tools": ["jira.read", "jira.write"]}}, "cases": cases}))
        .unwrap()
    }

    fn got(cases: Value) -> Vec<Outcome> {
        run(&engine(), &file(cases), UnixMillis(1_700_000_000_000)).into_iter().map(|r| r.got).collect()
    }

    fn case(task: Value, tool: &str, approved: bool, context: Value) -> Value {
        json!({"name": "c", "task": task, "action": "call_tool", "resource": {"type": "Tool", "id": tool},
               "context": context, "approved": approved, "expect": "allow"})
    }

    #[test]
    fn the_servers_steps_decide_each_case() {
        let used = json!({"tools_used": ["jira.read"]});
        let out = got(json!([
            case(json!({}), "jira.read", false, json!({})),
            case(used.clone(), "jira.write", false, json!({})),
            case(used.clone(), "jira.write", true, json!({})),
            case(json!({}), "jira.write", true, json!({})),
            case(json!({"sensitivity": "restricted"}), "jira.read", false, json!({})),
            // A PEP cannot state what Remit vouches for.
            case(json!({"sensitivity": "restricted"}), "jira.read", false, json!({"data_sensitivity_rank": 0})),
            // The workflow's tools are an allow-list; a kill switch denies.
            case(json!({"allowed_tools": ["jira.write"]}), "jira.read", false, json!({})),
            case(json!({"state": "revoked"}), "jira.read", false, json!({})),
            case(json!({"workflow_state": "suspended"}), "jira.read", false, json!({})),
            case(json!({"time_left_secs": 0}), "jira.read", false, json!({})),
        ]));
        use Outcome::*;
        assert_eq!(out, [Allow, ApprovalRequired, Allow, Deny, Deny, Deny, Deny, Deny, Deny, Deny]);
    }

    #[test]
    fn a_new_tool_past_the_per_task_cap_is_refused() {
        let full: Vec<String> = (0..remit_store::MAX_TOOLS_PER_TASK).map(|i| format!("t{i}")).collect();
        let out = got(json!([
            case(json!({"allowed_tools": [], "tools_used": full}), "jira.read", false, json!({})),
            case(
                json!({"allowed_tools": [], "tools_used": full.iter().chain(["jira.read".to_owned()].iter()).collect::<Vec<_>>()}),
                "jira.read",
                false,
                json!({})
            ),
        ]));
        assert_eq!(out, [Outcome::Deny, Outcome::Allow]);
    }

    #[test]
    fn an_unknown_action_names_the_valid_ones() {
        let f = file(json!([{"name": "x", "action": "call_tol", "resource": {"type": "Tool", "id": "jira.read"},
                             "expect": "deny"}]));
        let r = run(&engine(), &f, UnixMillis(0));
        assert!(r[0].errors[0].contains("call_tool"), "{:?}", r[0].errors);
    }

    #[test]
    fn unknown_fields_and_other_kinds_are_refused() {
        assert!(parse(json!({"kind": "authzen", "cases": []})).is_err());
        assert!(parse(json!({"kind": "task", "cases": [], "typo": 1})).is_err());
        assert!(
            parse(json!({"kind": "task", "cases": [{"name": "x", "action": "a",
            "resource": {"type": "Tool", "id": "t"}, "expect": "maybe"}]}))
            .is_err()
        );
    }
}
