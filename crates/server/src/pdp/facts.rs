//! The facts Remit vouches for when an agent's task asks for a decision, built purely from
//! the task snapshot, the tools it used and the clock: no IO, so the offline policy tester
//! can build the very same context from a described task.

use remit_core::model::Sensitivity;
use remit_core::time::UnixMillis;
use remit_store::TaskSnapshot;
use serde_json::{Map, Value, json};

/// A sensitivity as a number policies can compare: its position in the declared order
/// (`public` 0 < `internal` 1 < `confidential` 2 < `restricted` 3).
pub fn rank(s: Sensitivity) -> i64 {
    s as i64
}

/// How the authority a task acts with was delegated to it: its depth and the agents of its
/// ancestors, root first (the offline tester describes them; the server reads them from the
/// task's stored delegation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegation {
    pub depth: u32,
    pub chain: Vec<String>,
}

impl Delegation {
    pub fn of(t: &remit_core::model::Task) -> Self {
        Delegation {
            depth: t.delegation.depth,
            chain: t.delegation.chain.iter().map(|h| h.agent.to_string()).collect(),
        }
    }
}

/// The task context (`TaskContext` in the base schema): the PEP's facts (already stripped
/// of anything Remit vouches for) with Remit's merged over them.
pub fn task_context(
    snap: &TaskSnapshot,
    tools_used: &[String],
    tool: Option<&str>,
    pep: Map<String, Value>,
    delegation: &Delegation,
    now: UnixMillis,
) -> Map<String, Value> {
    let t = &snap.task;
    let mut ctx = pep;
    let remit = json!({
        "workflow": t.workflow.as_str(),
        "intent": t.intent,
        "intent_hash": t.intent_hash,
        "data_sensitivity": t.sensitivity.as_str(),
        "data_sensitivity_rank": rank(t.sensitivity),
        "workflow_ceiling": snap.workflow.ceiling.as_str(),
        "workflow_ceiling_rank": rank(snap.workflow.ceiling),
        "time_left_secs": (t.expires_at.0 - now.0).max(0) / 1000,
        "agent": t.agent.as_str(),
        "delegation_depth": delegation.depth,
        "delegation_chain": delegation.chain,
        "delegation_path": delegation.chain.join(">"),
        "tools_used": tools_used,
    });
    if let Value::Object(m) = remit {
        ctx.extend(m);
    }
    if let Some(i) = &t.instance {
        ctx.insert("instance".into(), i.as_str().into());
    }
    if let Some(tool) = tool {
        ctx.insert("tool".into(), tool.into());
    }
    ctx
}

/// The entities Remit builds for a task principal: the task (in its workflow, naming its
/// agent), the workflow with its owner, ceiling and allowed tools, and the agent.
pub fn task_entities(snap: &TaskSnapshot) -> [Value; 3] {
    let t = &snap.task;
    let w = &snap.workflow;
    [
        json!({"uid": {"type": "Task", "id": t.id.as_str()},
               "attrs": {"intent": t.intent, "sensitivity": t.sensitivity.as_str(),
                         "agent": {"__entity": {"type": "Agent", "id": t.agent.as_str()}}},
               "parents": [{"type": "Workflow", "id": t.workflow.as_str()}]}),
        json!({"uid": {"type": "Workflow", "id": t.workflow.as_str()},
               "attrs": {"owner": w.owner, "ceiling": w.ceiling.as_str(), "allowed_tools": w.allowed_tools},
               "parents": []}),
        json!({"uid": {"type": "Agent", "id": t.agent.as_str()}, "attrs": {}, "parents": []}),
    ]
}

/// Longest tool name recorded for a task.
pub const MAX_TOOL_NAME: usize = 256;

/// The PEP's facts from a call's `context`, without any it may not state: Remit computes
/// those, and an absent one (such as `instance` for a task an admin started) stays absent.
pub fn pep_facts(context: &Value) -> Map<String, Value> {
    match context {
        Value::Object(m) => {
            let mut m = remit_policy::strip_nulls_map(m.clone());
            m.retain(|k, _| !remit_policy::TASK_CONTEXT_FACTS.contains(&k.as_str()));
            m
        }
        _ => Map::new(),
    }
}

/// The tool a call uses: the resource itself when its Cedar type is `Tool`, else the PEP's
/// `tool` fact. Refuses a resource of Remit's own entity types (their facts come from Remit)
/// and a malformed tool name.
pub fn tool_of(
    resource_type: &str,
    resource_id: Option<&str>,
    pep: &Map<String, Value>,
) -> Result<Option<String>, String> {
    if remit_policy::REMIT_ENTITY_TYPES.contains(&resource_type) {
        return Err(format!("a task's call cannot name Remit's own `{resource_type}` entities as its resource"));
    }
    let tool = if resource_type == "Tool" {
        resource_id.map(str::to_owned)
    } else {
        pep.get("tool").and_then(Value::as_str).map(str::to_owned)
    };
    if tool.as_ref().is_some_and(|t| t.is_empty() || t.len() > MAX_TOOL_NAME || t.chars().any(char::is_control)) {
        return Err(format!("a tool name must be 1 to {MAX_TOOL_NAME} printable characters"));
    }
    Ok(tool)
}

/// Why the task can no longer act, if it cannot (ended, killed with its workflow, agent or
/// instance, expired).
pub fn inactive(snap: &TaskSnapshot, now: UnixMillis) -> Option<&'static str> {
    match remit_core::rules::task_liveness(&snap.task, &snap.workflow, &snap.agent, snap.instance.as_ref(), now) {
        remit_core::rules::Liveness::Active => None,
        remit_core::rules::Liveness::Inactive(why) => Some(why),
    }
}

/// Why a call is refused before any policy is asked, if it is: the task is not live, or the
/// tool is outside the workflow's allowed tools (an allow-list no policy can widen).
pub fn refusal(snap: &TaskSnapshot, tool: Option<&str>, now: UnixMillis) -> Option<String> {
    if let Some(why) = inactive(snap, now) {
        return Some(why.to_owned());
    }
    let allowed = &snap.workflow.allowed_tools;
    match tool {
        Some(t) if !allowed.is_empty() && !allowed.iter().any(|a| a == t) => {
            Some(format!("tool `{t}` is not among workflow `{}`'s allowed tools", snap.workflow.name))
        }
        _ => None,
    }
}

/// Why a call is outside what was delegated to the task, if it is: a tool, an action or a
/// resource its delegation does not hold (the resource a prefix applies to is the resource's
/// id, or for a tool call the PEP's `target`).
pub fn undelegated(
    snap: &TaskSnapshot,
    action: &str,
    resource_type: &str,
    resource_id: Option<&str>,
    tool: Option<&str>,
    pep: &Map<String, Value>,
) -> Option<String> {
    let resource = if resource_type == "Tool" { pep.get("target").and_then(Value::as_str) } else { resource_id };
    snap.task.delegation.authority.admits(action, tool, resource).err()
}

/// Why a call is refused because its tool would be one too many for the task: a task holds
/// at most [`remit_store::MAX_TOOLS_PER_TASK`] distinct tools, and a new one past that is
/// refused rather than left out of `tools_used` (which a policy such as "nothing after
/// `db.export`" relies on).
pub fn tool_cap(tools_used: &[String], tool: Option<&str>) -> Option<String> {
    let max = usize::try_from(remit_store::MAX_TOOLS_PER_TASK).unwrap_or(usize::MAX);
    match tool {
        Some(t) if tools_used.len() >= max && !tools_used.iter().any(|u| u == t) => {
            Some(format!("the task has used {max} distinct tools, the most a task may; `{t}` would be one more"))
        }
        _ => None,
    }
}

/// A task's call as Cedar sees it.
pub struct TaskRequest {
    pub principal: remit_policy::EntityRef,
    pub action: remit_policy::EntityRef,
    pub resource: remit_policy::EntityRef,
    pub context: remit_policy::Context,
    pub entities: remit_policy::Entities,
}

/// Builds the Cedar request for a task's call: the task as principal, `context` (from
/// [`task_context`]), the resource's entities (`resource_parts`) and the task's own.
pub fn task_request(
    snap: &TaskSnapshot,
    action: &str,
    resource: remit_policy::EntityRef,
    mut resource_parts: Vec<remit_policy::Part>,
    context: Map<String, Value>,
) -> Result<TaskRequest, remit_policy::PolicyError> {
    resource_parts.extend(task_entities(snap).map(remit_policy::Part::Json));
    Ok(TaskRequest {
        principal: remit_policy::uid("Task", snap.task.id.as_str())?,
        action: remit_policy::action(action)?,
        resource,
        context: remit_policy::context(&Value::Object(context))?,
        entities: remit_policy::entities_from(resource_parts)?,
    })
}
