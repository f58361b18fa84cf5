//! The change feed: what a committed write changed, announced so caches never outlive it.
//!
//! A write operation states the [`Change`]s it makes next to its SQL (pushing them into the
//! writer's context); the backend announces them only after the commit, first to the
//! **commit hooks** (synchronously, before the writer's caller hears "ok" — how a cache
//! stays read-your-writes) and then to subscribers of [`Feed::subscribe`]. On PostgreSQL the
//! same changes also travel to every other replica by `NOTIFY`.

use std::sync::{Arc, RwLock};

use remit_core::ids::{AgentName, ApprovalId, HumanId, InstanceId, SessionId, TaskId, WorkflowName};
use remit_core::model::{KillReport, KillTarget};
use tokio::sync::broadcast;

/// A committed change that invalidates cached reads. Published to every subscriber of the
/// store (on PostgreSQL: to every replica sharing the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A task ended or was revoked.
    Task(TaskId),
    /// An instance was revoked or renewed.
    Instance(InstanceId),
    /// An agent was disabled or enabled.
    Agent(AgentName),
    /// A workflow was suspended or resumed.
    Workflow(WorkflowName),
    /// The key set changed (rotation).
    Keys,
    /// A new policy bundle version is active.
    Policy,
    /// Attribute-store entities changed.
    Entities,
    /// An approval request was decided or used (nothing caches approvals; whoever waits for
    /// one wakes up).
    Approval(ApprovalId),
    /// A human was created, changed or deactivated.
    Human(HumanId),
    /// A session began, was refreshed or was revoked.
    Session(SessionId),
    /// Security Event Tokens were queued for a stream, or a stream changed (whoever pushes or
    /// long-polls wakes up; nothing caches them).
    Outbox,
    /// The change feed was interrupted: cached state may be stale until [`Change::Resync`].
    FeedLost,
    /// The feed is back (or too much changed to list): drop every cached entry.
    Resync,
}

/// Changes a slow subscriber may fall behind by before it must resync.
pub const CHANGE_FEED_CAPACITY: usize = 4096;

/// Most changes one notification lists before collapsing into [`Change::Resync`].
const MAX_LISTED_CHANGES: usize = 64;

impl Change {
    /// The changes a kill (or an ended task) makes.
    pub fn of_kill(target: &KillTarget, report: &KillReport) -> Vec<Change> {
        let mut out = match target {
            KillTarget::Workflow(w) => vec![Change::Workflow(w.clone())],
            KillTarget::Agent(a) => vec![Change::Agent(a.clone())],
            KillTarget::Instance(i) => vec![Change::Instance(i.clone())],
            KillTarget::Task(t) => vec![Change::Task(t.clone())],
        };
        // A workflow or agent change already drops every cached task; list tasks only
        // for narrower kills.
        if matches!(target, KillTarget::Task(_) | KillTarget::Instance(_)) {
            out.extend(report.tasks_revoked.iter().cloned().map(Change::Task));
        }
        if out.len() > MAX_LISTED_CHANGES { vec![Change::Resync] } else { out }
    }

    /// The compact text form carried in a notification payload: one change per line.
    pub fn encode_all(changes: &[Change]) -> String {
        if changes.len() > MAX_LISTED_CHANGES {
            return "r".into();
        }
        let line = |c: &Change| match c {
            Change::Task(t) => format!("t:{t}"),
            Change::Instance(i) => format!("i:{i}"),
            Change::Agent(a) => format!("a:{a}"),
            Change::Workflow(w) => format!("w:{w}"),
            Change::Approval(a) => format!("ap:{a}"),
            Change::Human(h) => format!("h:{h}"),
            Change::Session(s) => format!("s:{s}"),
            Change::Keys => "k".into(),
            Change::Policy => "p".into(),
            Change::Entities => "e".into(),
            Change::Outbox => "o".into(),
            Change::FeedLost | Change::Resync => "r".into(),
        };
        changes.iter().map(line).collect::<Vec<_>>().join("\n")
    }

    /// Parses [`Change::encode_all`]'s output; anything unreadable becomes a resync, which
    /// is always safe.
    pub fn decode_all(payload: &str) -> Vec<Change> {
        let one = |l: &str| -> Option<Change> {
            Some(match l.split_once(':') {
                Some(("t", v)) => Change::Task(TaskId::parse(v).ok()?),
                Some(("i", v)) => Change::Instance(InstanceId::parse(v).ok()?),
                Some(("a", v)) => Change::Agent(AgentName::parse(v).ok()?),
                Some(("w", v)) => Change::Workflow(WorkflowName::parse(v).ok()?),
                Some(("ap", v)) => Change::Approval(ApprovalId::parse(v).ok()?),
                Some(("h", v)) => Change::Human(HumanId::parse(v).ok()?),
                Some(("s", v)) => Change::Session(SessionId::parse(v).ok()?),
                None if l == "k" => Change::Keys,
                None if l == "p" => Change::Policy,
                None if l == "e" => Change::Entities,
                None if l == "o" => Change::Outbox,
                _ => return None,
            })
        };
        let mut out = Vec::new();
        for l in payload.lines() {
            match one(l) {
                Some(c) => out.push(c),
                None => return vec![Change::Resync],
            }
        }
        out
    }
}

/// Called with every committed batch of changes, before the writer's caller is answered.
pub type CommitHook = Arc<dyn Fn(&[Change]) + Send + Sync>;

/// Where a backend announces its committed changes.
pub struct Feed {
    tx: broadcast::Sender<Change>,
    hooks: RwLock<Vec<CommitHook>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { tx: broadcast::channel(CHANGE_FEED_CAPACITY).0, hooks: RwLock::new(Vec::new()) }
    }
}

impl Feed {
    /// Announces committed changes: hooks first (synchronously), then subscribers.
    pub fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        if let Ok(hooks) = self.hooks.read() {
            for h in hooks.iter() {
                h(changes);
            }
        }
        for c in changes {
            let _ = self.tx.send(c.clone());
        }
    }

    /// Announces changes made elsewhere (another replica, the feed itself): subscribers only
    /// (hooks see local commits; followers of the feed see everything).
    pub fn forward(&self, c: Change) {
        let _ = self.tx.send(c);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    pub fn on_commit(&self, hook: CommitHook) {
        if let Ok(mut h) = self.hooks.write() {
            h.push(hook);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_survives_a_notification() {
        let all = vec![
            Change::Task(TaskId::from_random([1; 16])),
            Change::Instance(InstanceId::from_random([2; 16])),
            Change::Agent(AgentName::parse("bot").unwrap()),
            Change::Workflow(WorkflowName::parse("triage").unwrap()),
            Change::Approval(ApprovalId::from_random([3; 16])),
            Change::Keys,
            Change::Policy,
            Change::Entities,
            Change::Outbox,
        ];
        assert_eq!(Change::decode_all(&Change::encode_all(&all)), all);
        // Anything unreadable is a resync, which is always safe.
        assert_eq!(Change::decode_all("ap:not-an-id"), vec![Change::Resync]);
        assert_eq!(Change::decode_all("zz"), vec![Change::Resync]);
    }
}
