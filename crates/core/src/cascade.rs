//! Kill cascades, decided here: given what a kill switch reaches (found by the store inside
//! its transaction), which tasks, instances and join tokens die, and the audit records that
//! say so, in one deterministic order.
//!
//! A store's part is only to *find* (the target, then every descendant task level by level,
//! with no depth limit) and to *apply* the [`Plan`] with compare-and-set updates, in the same
//! transaction. So every backend reaches the same victims and writes the same records, and a
//! new kind of credential (leases, exchanged tokens) joins a kill by adding its victims to
//! [`Found`] and its records here — not by editing each backend's kill code.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::{AuditAction, AuditEvent};
use crate::ids::{InstanceId, JoinTokenId, TaskId, WorkflowName};
use crate::model::{Kill, KillReport, KillTarget, TaskState};
use crate::time::UnixMillis;

/// A task as a cascade needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNode {
    pub id: TaskId,
    pub parent: Option<TaskId>,
    pub workflow: WorkflowName,
    pub agent: crate::ids::AgentName,
    pub state: TaskState,
    pub expires_at: UnixMillis,
}

impl TaskNode {
    /// Still live at `at` (active and before its deadline): a kill revokes it.
    fn live(&self, at: UnixMillis) -> bool {
        self.state == TaskState::Active && at < self.expires_at
    }
}

/// What a kill reaches, as the store found it inside its transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The cascade's root tasks and all their descendants, in any order (duplicates are
    /// ignored). Roots: the task itself (task kill); the tasks an instance started; the
    /// agent's or workflow's tasks.
    pub tasks: Vec<TaskNode>,
    /// The tasks the cascade starts from (the rest of `tasks` are their descendants).
    pub roots: Vec<TaskId>,
    /// Active instances the kill revokes (instance and agent kills).
    pub instances: Vec<InstanceId>,
    /// Unused join tokens the kill revokes (agent kills).
    pub join_tokens: Vec<JoinTokenId>,
}

/// Why a kill cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("task `{0}` is {1}")]
    TaskNotLive(TaskId, TaskState),
    #[error("task `{0}` is expired")]
    TaskExpired(TaskId),
}

/// What to apply: the report the caller gets and the audit records, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub report: KillReport,
    pub audit: Vec<AuditEvent>,
}

/// Every task in `found` that is a root or reachable from one by parent links, whatever its
/// state (a live child under an ended parent is still reached), with no depth limit.
fn reachable(found: &Found) -> Vec<&TaskNode> {
    let by_id: BTreeMap<&TaskId, &TaskNode> = found.tasks.iter().map(|t| (&t.id, t)).collect();
    let mut children: BTreeMap<&TaskId, Vec<&TaskNode>> = BTreeMap::new();
    for t in by_id.values() {
        if let Some(p) = &t.parent {
            children.entry(p).or_default().push(t);
        }
    }
    let mut seen: BTreeSet<&TaskId> = BTreeSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<&TaskNode> = found.roots.iter().filter_map(|r| by_id.get(r).copied()).collect();
    while let Some(t) = stack.pop() {
        if !seen.insert(&t.id) {
            continue;
        }
        out.push(t);
        if let Some(cs) = children.get(&t.id) {
            stack.extend(cs.iter().copied());
        }
    }
    out
}

/// Decides a kill: the victims (tasks live at `kill.at`, instances, join tokens, each sorted
/// by id) and the records, in this order: join tokens, instances (with the instance kill's
/// own record first), tasks, then the agent's or workflow's summary record.
pub fn plan(kill: &Kill, found: &Found) -> Result<Plan, KillError> {
    if let KillTarget::Task(id) = &kill.target {
        match found.tasks.iter().find(|t| t.id == *id) {
            Some(t) if t.state != TaskState::Active => return Err(KillError::TaskNotLive(id.clone(), t.state)),
            Some(t) if t.expires_at <= kill.at => return Err(KillError::TaskExpired(id.clone())),
            _ => {}
        }
    }
    let from = match &kill.target {
        KillTarget::Task(t) => format!("task:{t}"),
        KillTarget::Instance(i) => format!("instance:{i}"),
        KillTarget::Agent(a) => format!("agent:{a}"),
        KillTarget::Workflow(w) => format!("workflow:{w}"),
    };
    let mut tasks: Vec<&TaskNode> = reachable(found).into_iter().filter(|t| t.live(kill.at)).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut instances = found.instances.clone();
    instances.sort();
    instances.dedup();
    let mut tokens = found.join_tokens.clone();
    tokens.sort();
    tokens.dedup();

    let base = |action| AuditEvent::new(kill.at, &kill.actor, action).reason(&kill.reason);
    let mut audit = Vec::new();
    if let KillTarget::Agent(name) = &kill.target {
        for j in &tokens {
            audit.push(
                base(AuditAction::JoinTokenRevoke)
                    .agent(name)
                    .detail([("cascade_from", from.clone().into()), ("join_token", j.as_str().into())]),
            );
        }
        for i in &instances {
            audit.push(
                base(AuditAction::InstanceRevoke)
                    .agent(name)
                    .detail([("cascade_from", from.clone().into()), ("instance", i.as_str().into())]),
            );
        }
    }
    for t in &tasks {
        audit.push(
            base(AuditAction::TaskRevoke)
                .task(&t.id)
                .workflow(&t.workflow)
                .agent(&t.agent)
                .detail([("cascade_from", from.clone().into())]),
        );
    }
    let report = KillReport {
        tasks_revoked: tasks.iter().map(|t| t.id.clone()).collect(),
        instances_revoked: instances,
        join_tokens_revoked: tokens,
        leases_pending: 0,
    };
    match &kill.target {
        KillTarget::Agent(name) => audit.push(base(AuditAction::AgentDisable).agent(name).detail([
            ("instances_revoked", report.instances_revoked.len().into()),
            ("tasks_revoked", report.tasks_revoked.len().into()),
            ("join_tokens_revoked", report.join_tokens_revoked.len().into()),
        ])),
        KillTarget::Workflow(name) => audit.push(
            base(AuditAction::WorkflowSuspend)
                .workflow(name)
                .detail([("tasks_revoked", report.tasks_revoked.len().into())]),
        ),
        KillTarget::Task(_) | KillTarget::Instance(_) => {}
    }
    Ok(Plan { report, audit })
}

/// The instance kill's own record (written before its cascade's records, whether or not the
/// instance was still active).
pub fn instance_record(kill: &Kill, instance: &InstanceId, agent: &crate::ids::AgentName) -> AuditEvent {
    AuditEvent::new(kill.at, &kill.actor, AuditAction::InstanceRevoke)
        .agent(agent)
        .reason(&kill.reason)
        .detail([("instance", instance.as_str().into())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AgentName;

    fn node(n: u8, parent: Option<u8>, state: TaskState) -> TaskNode {
        TaskNode {
            id: TaskId::from_random([n; 16]),
            parent: parent.map(|p| TaskId::from_random([p; 16])),
            workflow: WorkflowName::parse("w").unwrap(),
            agent: AgentName::parse("a").unwrap(),
            state,
            expires_at: UnixMillis(1000),
        }
    }

    fn kill(target: KillTarget) -> Kill {
        Kill { target, actor: "admin".into(), reason: "r".into(), at: UnixMillis(10) }
    }

    #[test]
    fn reaches_live_descendants_through_ended_ones_at_any_depth() {
        // 1 → 2 (completed) → 3 → … → 600 (a chain far deeper than any fixed limit).
        let mut tasks = vec![node(1, None, TaskState::Active), node(2, Some(1), TaskState::Completed)];
        let mut ids = Vec::new();
        let mut parent = TaskId::from_random([2; 16]);
        for i in 0..600u32 {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&(i + 1000).to_be_bytes());
            let t = TaskNode {
                id: TaskId::from_random(b),
                parent: Some(parent.clone()),
                ..node(9, None, TaskState::Active)
            };
            parent = t.id.clone();
            ids.push(t.id.clone());
            tasks.push(t);
        }
        let root = TaskId::from_random([1; 16]);
        let found = Found { tasks, roots: vec![root.clone()], ..Default::default() };
        let p = plan(&kill(KillTarget::Task(root.clone())), &found).unwrap();
        assert_eq!(p.report.tasks_revoked.len(), 601, "the root and the whole chain below the ended task");
        let mut want = ids;
        want.push(root);
        want.sort();
        assert_eq!(p.report.tasks_revoked, want, "sorted by id");
        assert_eq!(p.audit.len(), 601);
    }

    #[test]
    fn a_task_kill_needs_a_live_task() {
        let found = Found {
            tasks: vec![node(1, None, TaskState::Completed)],
            roots: vec![TaskId::from_random([1; 16])],
            ..Default::default()
        };
        assert!(matches!(
            plan(&kill(KillTarget::Task(TaskId::from_random([1; 16]))), &found),
            Err(KillError::TaskNotLive(..))
        ));
        let mut expired = node(1, None, TaskState::Active);
        expired.expires_at = UnixMillis(10);
        let found = Found { tasks: vec![expired], roots: vec![TaskId::from_random([1; 16])], ..Default::default() };
        assert!(matches!(
            plan(&kill(KillTarget::Task(TaskId::from_random([1; 16]))), &found),
            Err(KillError::TaskExpired(_))
        ));
    }

    #[test]
    fn agent_kills_record_tokens_instances_tasks_then_the_summary() {
        let found = Found {
            tasks: vec![node(1, None, TaskState::Active)],
            roots: vec![TaskId::from_random([1; 16])],
            instances: vec![InstanceId::from_random([5; 16]), InstanceId::from_random([4; 16])],
            join_tokens: vec![JoinTokenId::from_random([7; 16])],
        };
        let p = plan(&kill(KillTarget::Agent(AgentName::parse("a").unwrap())), &found).unwrap();
        let actions: Vec<&str> = p.audit.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["join_token.revoke", "instance.revoke", "instance.revoke", "task.revoke", "agent.disable"]
        );
        assert!(p.report.instances_revoked.windows(2).all(|w| w[0] < w[1]));
    }
}
