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

/// The task context (`TaskContext` in the base schema): the PEP's facts (already stripped
/// of anything Remit vouches for) with Remit's merged over them.
pub fn task_context(
    snap: &TaskSnapshot,
    tools_used: &[String],
    tool: Option<&str>,
    pep: Map<String, Value>,
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
        "delegation_depth": 0,
        "delegation_chain": [],
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
