//! Automatic containment: rules, declared per workflow (with defaults), that pull a kill
//! switch by themselves when a signal crosses a threshold, and the evaluator that watches the
//! signals incrementally.
//!
//! Signals are [`Observation`]s (the server derives them from audit records as they are
//! written, never by scanning history when deciding): a task's decisions (allowed or denied,
//! which action, which tool), its proxied calls, a credential-sharing event, a leak-guard hit,
//! an external risk signal. The [`Evaluator`] keeps per-task and per-workflow counters in
//! one-second buckets over each rule's window and answers, per observation, the [`Trip`]s it
//! caused: which rule, what to do (suspend the task, the workflow, disable the agent, or only
//! alert), against what, and the evidence. A tripped counter starts again from zero, so one
//! spike trips a rule once.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{AgentName, TaskId, WorkflowName};
use crate::time::UnixMillis;

/// Longest window a rule may count over.
pub const MAX_WINDOW_SECS: u64 = 3_600;
/// Most rules per workflow.
pub const MAX_RULES: usize = 32;
/// Counters kept before the oldest idle ones are dropped.
const MAX_KEYS: usize = 100_000;

/// What a rule does when it trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SuspendTask,
    SuspendWorkflow,
    DisableAgent,
    /// Record and notify only.
    Alert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SuspendTask => "suspend_task",
            Action::SuspendWorkflow => "suspend_workflow",
            Action::DisableAgent => "disable_agent",
            Action::Alert => "alert",
        }
    }
}

/// Whose calls a counting rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Task,
    Workflow,
}

/// The signal a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// Denied decisions over all decisions in the window, once at least `min_calls` were made.
    DenyRate {
        #[serde(default)]
        scope: Scope,
        window_secs: u64,
        min_calls: u64,
        /// 0 < ratio ≤ 1.
        ratio: f64,
    },
    /// More than `max_calls` decisions and proxied calls in the window.
    CallSpike {
        #[serde(default)]
        scope: Scope,
        window_secs: u64,
        max_calls: u64,
    },
    /// A decision naming a tool the workflow never used before.
    NewTool,
    /// A task's first use of one of `writes` before any of `reads`.
    WriteBeforeRead { reads: Vec<String>, writes: Vec<String> },
    /// A task or per-tool token presented by a second presenter.
    Sharing,
    /// A task's token presented to a party it was not issued for (a tool introspecting another
    /// audience's credential, another tool's at the proxy). Whoever presented it may be a tool
    /// that received it legitimately, so the default only alerts.
    Misdirected,
    /// The leak guard found a stored secret in a task's output.
    Leak,
    /// An authenticated external risk signal naming a task, at or above `min_score`.
    Risk { min_score: f64 },
}

impl Signal {
    pub fn name(&self) -> &'static str {
        match self {
            Signal::DenyRate { .. } => "deny_rate",
            Signal::CallSpike { .. } => "call_spike",
            Signal::NewTool => "new_tool",
            Signal::WriteBeforeRead { .. } => "write_before_read",
            Signal::Sharing => "sharing",
            Signal::Misdirected => "misdirected",
            Signal::Leak => "leak",
            Signal::Risk { .. } => "risk",
        }
    }
}

/// One rule: a signal and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(flatten)]
    pub signal: Signal,
    pub action: Action,
}

/// The rules every workflow has unless it declares its own: a shared token, a leaked secret
/// or a high external risk ends the task; a token presented to a party it was not for, and a
/// workflow whose decisions are mostly denied, are reported.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule { signal: Signal::Sharing, action: Action::SuspendTask },
        Rule { signal: Signal::Misdirected, action: Action::Alert },
        Rule { signal: Signal::Leak, action: Action::SuspendTask },
        Rule { signal: Signal::Risk { min_score: 0.8 }, action: Action::SuspendTask },
        Rule {
            signal: Signal::DenyRate { scope: Scope::Workflow, window_secs: 300, min_calls: 50, ratio: 0.5 },
            action: Action::Alert,
        },
    ]
}

/// Checks a rule set; the message names the rule.
pub fn check(rules: &[Rule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} containment rules"));
    }
    for (i, r) in rules.iter().enumerate() {
        let bad = |m: &str| Err(format!("rule {i} ({}): {m}", r.signal.name()));
        match &r.signal {
            Signal::DenyRate { window_secs, min_calls, ratio, .. } => {
                if *window_secs == 0 || *window_secs > MAX_WINDOW_SECS {
                    return bad(&format!("window_secs must be 1..={MAX_WINDOW_SECS}"));
                }
                if *min_calls == 0 {
                    return bad("min_calls must be at least 1");
                }
                if !(*ratio > 0.0 && *ratio <= 1.0) {
                    return bad("ratio must be in (0, 1]");
                }
            }
            Signal::CallSpike { window_secs, max_calls, .. } => {
                if *window_secs == 0 || *window_secs > MAX_WINDOW_SECS {
                    return bad(&format!("window_secs must be 1..={MAX_WINDOW_SECS}"));
                }
                if *max_calls == 0 {
                    return bad("max_calls must be at least 1");
                }
            }
            Signal::WriteBeforeRead { reads, writes }
                if reads.is_empty() || writes.is_empty() || reads.len() + writes.len() > 256 =>
            {
                return bad("reads and writes each name 1..256 actions");
            }
            Signal::Risk { min_score } if !(*min_score >= 0.0 && *min_score <= 1.0) => {
                return bad("min_score must be in [0, 1]");
            }
            _ => {}
        }
        let counts_workflow = matches!(
            &r.signal,
            Signal::DenyRate { scope: Scope::Workflow, .. } | Signal::CallSpike { scope: Scope::Workflow, .. }
        );
        if counts_workflow && r.action == Action::SuspendTask {
            return bad("a workflow-wide count cannot name one task to suspend");
        }
    }
    Ok(())
}

/// Who an observation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub task: TaskId,
    pub workflow: WorkflowName,
    pub agent: AgentName,
}

/// A signal as it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The task started, to expire then (write-before-read judges only tasks whose start it
    /// saw; their state is dropped when they end or expire).
    Start {
        expires: UnixMillis,
    },
    /// The task was renewed until `expires`.
    Renew {
        expires: UnixMillis,
    },
    Decision {
        denied: bool,
        action: String,
        tool: Option<String>,
    },
    Call,
    Sharing {
        evidence: serde_json::Value,
    },
    Misdirected {
        evidence: serde_json::Value,
    },
    Leak {
        evidence: serde_json::Value,
    },
    Risk {
        score: f64,
        evidence: serde_json::Value,
    },
}

/// What to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Task(TaskId),
    Workflow(WorkflowName),
    Agent(AgentName),
}

/// A rule that tripped.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    pub rule: usize,
    pub signal: &'static str,
    pub action: Action,
    pub target: Option<Target>,
    pub subject: Subject,
    /// Why, in one sentence (the kill's reason).
    pub reason: String,
    pub evidence: serde_json::Value,
}

/// Per-second buckets of (calls, denied).
#[derive(Debug, Default, Clone)]
struct Window {
    buckets: VecDeque<(i64, u64, u64)>,
    calls: u64,
    denied: u64,
    last: i64,
}

impl Window {
    fn add(&mut self, sec: i64, window: u64, denied: bool) {
        self.prune(sec, window);
        match self.buckets.back_mut() {
            Some(b) if b.0 == sec => {
                b.1 += 1;
                b.2 += u64::from(denied);
            }
            _ => self.buckets.push_back((sec, 1, u64::from(denied))),
        }
        self.calls += 1;
        self.denied += u64::from(denied);
        self.last = sec;
    }

    fn prune(&mut self, sec: i64, window: u64) {
        let from = sec - i64::try_from(window).unwrap_or(i64::MAX) + 1;
        while let Some(&(s, c, d)) = self.buckets.front() {
            if s >= from {
                break;
            }
            self.buckets.pop_front();
            self.calls -= c;
            self.denied -= d;
        }
    }

    fn reset(&mut self) {
        *self = Window { last: self.last, ..Window::default() };
    }
}

/// The incremental state behind every workflow's rules.
#[derive(Debug, Default)]
pub struct Evaluator {
    /// (rule index, workflow, task or "" for workflow scope) → its window.
    windows: HashMap<(usize, String, String), Window>,
    /// Tools each workflow has used (seeded by the caller from history).
    tools: HashMap<WorkflowName, BTreeSet<String>>,
    /// Tasks whose start was observed, those that have made a read (for write-before-read),
    /// and those already reported.
    started: HashMap<TaskId, UnixMillis>,
    read: BTreeSet<TaskId>,
    reported: BTreeSet<(usize, TaskId)>,
    /// The highest record `seq` observed: a record read again (after a failed step) is not
    /// counted twice.
    seen: u64,
    /// The record `seq` everything up to which has been fed (see [`Evaluator::fed_to`]).
    fed: u64,
}

impl Evaluator {
    /// Whether the workflow's tool history is known (the caller seeds it once).
    pub fn knows_tools(&self, w: &WorkflowName) -> bool {
        self.tools.contains_key(w)
    }

    pub fn seed_tools(&mut self, w: &WorkflowName, tools: impl IntoIterator<Item = String>) {
        self.tools.entry(w.clone()).or_default().extend(tools);
    }

    /// Whether every record up to `seq` (a reader's cursor) and none after has been fed: if
    /// not (a process taking the reading over from another), the state must be rebuilt with
    /// [`Evaluator::restart`] and [`Evaluator::replay_record`].
    pub fn fed_to(&self, seq: u64) -> bool {
        self.fed == seq
    }

    /// Says every record up to `seq` has been fed.
    pub fn set_fed(&mut self, seq: u64) {
        self.fed = seq;
    }

    /// Forgets everything (before a rebuild).
    pub fn restart(&mut self) {
        *self = Evaluator::default();
    }

    /// Feeds a record already acted on (by whoever read it first) to rebuild the counters:
    /// what it trips is not returned, and new-tool rules skip it (their baseline is seeded
    /// from history separately).
    pub fn replay_record(&mut self, seq: u64, rules: &[Rule], at: UnixMillis, who: &Subject, o: &Observation) {
        if seq <= self.seen {
            return;
        }
        self.seen = seq;
        // The same rule list (counters are keyed by a rule's place in it), new-tool skipped.
        let _ = self.feed(rules, at, who, o, true);
    }

    /// Feeds the observation of record `seq` (records come in `seq` order; one already seen is
    /// skipped); returns what tripped.
    pub fn observe_record(
        &mut self,
        seq: u64,
        rules: &[Rule],
        at: UnixMillis,
        who: &Subject,
        o: &Observation,
    ) -> Vec<Trip> {
        if seq <= self.seen {
            return vec![];
        }
        self.seen = seq;
        self.observe(rules, at, who, o)
    }

    /// Feeds one observation under `rules` (the workflow's); returns what tripped.
    pub fn observe(&mut self, rules: &[Rule], at: UnixMillis, who: &Subject, o: &Observation) -> Vec<Trip> {
        self.feed(rules, at, who, o, false)
    }

    fn feed(&mut self, rules: &[Rule], at: UnixMillis, who: &Subject, o: &Observation, replay: bool) -> Vec<Trip> {
        let sec = at.secs();
        let mut out = Vec::new();
        match o {
            Observation::Start { expires } => {
                self.started.insert(who.task.clone(), *expires);
                return out;
            }
            Observation::Renew { expires } => {
                if let Some(e) = self.started.get_mut(&who.task) {
                    *e = *expires;
                }
                return out;
            }
            _ => {}
        }
        let on = |a: Action, who: &Subject| match a {
            Action::SuspendTask => Some(Target::Task(who.task.clone())),
            Action::SuspendWorkflow => Some(Target::Workflow(who.workflow.clone())),
            Action::DisableAgent => Some(Target::Agent(who.agent.clone())),
            Action::Alert => None,
        };
        let trip = |i: usize, r: &Rule, reason: String, evidence: serde_json::Value| Trip {
            rule: i,
            signal: r.signal.name(),
            action: r.action,
            target: on(r.action, who),
            subject: who.clone(),
            reason,
            evidence,
        };
        for (i, r) in rules.iter().enumerate() {
            match (&r.signal, o) {
                (Signal::DenyRate { scope, window_secs, min_calls, ratio }, Observation::Decision { denied, .. }) => {
                    let key = (i, who.workflow.to_string(), scope_key(*scope, who));
                    let w = self.windows.entry(key).or_default();
                    w.add(sec, *window_secs, *denied);
                    #[allow(clippy::cast_precision_loss)]
                    let rate = w.denied as f64 / w.calls as f64;
                    if w.calls >= *min_calls && rate >= *ratio {
                        let ev = serde_json::json!({"denied": w.denied, "calls": w.calls, "window_secs": window_secs,
                            "ratio": ratio, "scope": scope_name(*scope)});
                        let reason = format!(
                            "containment: {} of {} decisions denied in {window_secs} s ({:.0}% ≥ {:.0}%)",
                            w.denied,
                            w.calls,
                            rate * 100.0,
                            ratio * 100.0
                        );
                        w.reset();
                        out.push(trip(i, r, reason, ev));
                    }
                }
                (
                    Signal::CallSpike { scope, window_secs, max_calls },
                    Observation::Decision { .. } | Observation::Call,
                ) => {
                    let key = (i, who.workflow.to_string(), scope_key(*scope, who));
                    let w = self.windows.entry(key).or_default();
                    w.add(sec, *window_secs, false);
                    if w.calls > *max_calls {
                        let ev = serde_json::json!({"calls": w.calls, "window_secs": window_secs,
                            "max_calls": max_calls, "scope": scope_name(*scope)});
                        let reason =
                            format!("containment: {} calls in {window_secs} s (more than {max_calls})", w.calls);
                        w.reset();
                        out.push(trip(i, r, reason, ev));
                    }
                }
                (Signal::NewTool, Observation::Decision { tool: Some(t), .. }) if !replay => {
                    let known = self.tools.entry(who.workflow.clone()).or_default();
                    if known.insert(t.clone()) {
                        let reason = format!("containment: tool `{t}` was never used by this workflow before");
                        out.push(trip(i, r, reason, serde_json::json!({"tool": t})));
                    }
                }
                (Signal::WriteBeforeRead { reads, writes }, Observation::Decision { action, .. }) => {
                    if reads.contains(action) {
                        self.read.insert(who.task.clone());
                    } else if writes.contains(action)
                        && self.started.contains_key(&who.task)
                        && !self.read.contains(&who.task)
                        && self.reported.insert((i, who.task.clone()))
                    {
                        let reason = format!("containment: `{action}` before any read by this task");
                        out.push(trip(i, r, reason, serde_json::json!({"action": action, "reads": reads})));
                    }
                }
                (Signal::Sharing, Observation::Sharing { evidence }) => {
                    out.push(trip(
                        i,
                        r,
                        "containment: the task's token was presented by another presenter".into(),
                        evidence.clone(),
                    ));
                }
                (Signal::Misdirected, Observation::Misdirected { evidence }) => {
                    out.push(trip(
                        i,
                        r,
                        "containment: the task's token was presented to a party it was not issued for".into(),
                        evidence.clone(),
                    ));
                }
                (Signal::Leak, Observation::Leak { evidence }) => {
                    out.push(trip(
                        i,
                        r,
                        "containment: a stored secret was found in the task's output".into(),
                        evidence.clone(),
                    ));
                }
                (Signal::Risk { min_score }, Observation::Risk { score, evidence }) if *score >= *min_score => {
                    let reason = format!("containment: external risk signal {score:.2} ≥ {min_score:.2}");
                    out.push(trip(i, r, reason, evidence.clone()));
                }
                _ => {}
            }
        }
        // The new tool is known from now on even without a rule watching for it.
        if let Observation::Decision { tool: Some(t), .. } = o
            && let Some(known) = self.tools.get_mut(&who.workflow)
        {
            known.insert(t.clone());
        }
        out
    }

    /// Drops counters idle for longer than any window, and task state of ended tasks.
    pub fn prune(&mut self, now: UnixMillis, ended: &[TaskId]) {
        let cut = now.secs() - i64::try_from(MAX_WINDOW_SECS).unwrap_or(i64::MAX);
        self.windows.retain(|_, w| w.last >= cut);
        if self.windows.len() > MAX_KEYS {
            self.windows.clear();
        }
        let expired: Vec<TaskId> = self.started.iter().filter(|(_, e)| **e <= now).map(|(t, _)| t.clone()).collect();
        for t in ended.iter().chain(&expired) {
            self.started.remove(t);
            self.read.remove(t);
            self.reported.retain(|(_, x)| x != t);
        }
        // Past the bound, task state is dropped: write-before-read then judges only tasks
        // started from here on (never a task whose reads were forgotten).
        if self.read.len() > MAX_KEYS || self.started.len() > MAX_KEYS {
            self.started.clear();
            self.read.clear();
            self.reported.clear();
        }
    }
}

fn scope_key(s: Scope, who: &Subject) -> String {
    match s {
        Scope::Task => who.task.to_string(),
        Scope::Workflow => String::new(),
    }
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Task => "task",
        Scope::Workflow => "workflow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: u8) -> Subject {
        Subject {
            task: TaskId::from_random([n; 16]),
            workflow: WorkflowName::parse("w").unwrap(),
            agent: AgentName::parse("bot").unwrap(),
        }
    }

    fn start() -> Observation {
        Observation::Start { expires: UnixMillis(i64::MAX) }
    }

    fn decision(denied: bool) -> Observation {
        Observation::Decision { denied, action: "read".into(), tool: None }
    }

    #[test]
    fn a_deny_rate_over_its_window_trips_once_and_old_calls_age_out() {
        let rules = vec![Rule {
            signal: Signal::DenyRate { scope: Scope::Workflow, window_secs: 10, min_calls: 4, ratio: 0.5 },
            action: Action::SuspendWorkflow,
        }];
        check(&rules).unwrap();
        let mut e = Evaluator::default();
        // Denials 20 s ago have aged out by the time the allowed calls come.
        for _ in 0..3 {
            assert!(e.observe(&rules, UnixMillis(0), &who(1), &decision(true)).is_empty());
        }
        for _ in 0..3 {
            assert!(e.observe(&rules, UnixMillis(20_000), &who(2), &decision(false)).is_empty());
        }
        // Across tasks of the workflow: 3 allowed + 3 denied = 50%.
        assert!(e.observe(&rules, UnixMillis(21_000), &who(3), &decision(true)).is_empty());
        assert!(e.observe(&rules, UnixMillis(21_000), &who(3), &decision(true)).is_empty());
        let t = e.observe(&rules, UnixMillis(22_000), &who(4), &decision(true));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].target, Some(Target::Workflow(WorkflowName::parse("w").unwrap())));
        assert_eq!(t[0].evidence["denied"], 3);
        assert_eq!(t[0].evidence["calls"], 6);
        // Counting starts again after a trip.
        assert!(e.observe(&rules, UnixMillis(22_000), &who(4), &decision(true)).is_empty());
    }

    #[test]
    fn spikes_new_tools_write_before_read_and_events() {
        let rules = vec![
            Rule {
                signal: Signal::CallSpike { scope: Scope::Task, window_secs: 60, max_calls: 2 },
                action: Action::SuspendTask,
            },
            Rule { signal: Signal::NewTool, action: Action::Alert },
            Rule {
                signal: Signal::WriteBeforeRead { reads: vec!["read".into()], writes: vec!["write".into()] },
                action: Action::Alert,
            },
            Rule { signal: Signal::Risk { min_score: 0.5 }, action: Action::DisableAgent },
        ];
        check(&rules).unwrap();
        let mut e = Evaluator::default();
        let w = WorkflowName::parse("w").unwrap();
        e.seed_tools(&w, ["jira".to_owned()]);
        let known = Observation::Decision { denied: false, action: "read".into(), tool: Some("jira".into()) };
        assert!(e.observe(&rules, UnixMillis(0), &who(1), &known).is_empty());
        let fresh = Observation::Decision { denied: false, action: "read".into(), tool: Some("github".into()) };
        let t = e.observe(&rules, UnixMillis(0), &who(1), &fresh);
        assert_eq!((t.len(), t[0].signal, t[0].target.clone()), (1, "new_tool", None));
        let t = e.observe(&rules, UnixMillis(0), &who(1), &Observation::Call);
        assert_eq!((t[0].signal, t[0].target.clone()), ("call_spike", Some(Target::Task(who(1).task))));
        // Task 2 writes before reading: reported once; task 1 had read first; task 5's start
        // was never seen (its reads may predate what was observed): not judged.
        let write = Observation::Decision { denied: false, action: "write".into(), tool: None };
        assert!(e.observe(&rules, UnixMillis(0), &who(5), &write).is_empty());
        assert!(e.observe(&rules, UnixMillis(0), &who(2), &start()).is_empty());
        assert_eq!(e.observe(&rules, UnixMillis(0), &who(2), &write)[0].signal, "write_before_read");
        assert!(e.observe(&rules, UnixMillis(0), &who(2), &write).is_empty());
        let t = e.observe(&rules, UnixMillis(0), &who(1), &write);
        assert!(t.iter().all(|t| t.signal != "write_before_read"), "{t:?}");
        let low = Observation::Risk { score: 0.2, evidence: serde_json::json!({}) };
        assert!(e.observe(&rules, UnixMillis(0), &who(3), &low).is_empty());
        let high = Observation::Risk { score: 0.9, evidence: serde_json::json!({"source": "detector"}) };
        let t = e.observe(&rules, UnixMillis(0), &who(3), &high);
        assert_eq!(t[0].target, Some(Target::Agent(AgentName::parse("bot").unwrap())));
    }

    #[test]
    fn a_record_read_again_is_not_counted_twice() {
        let rules = vec![Rule {
            signal: Signal::CallSpike { scope: Scope::Task, window_secs: 60, max_calls: 1 },
            action: Action::SuspendTask,
        }];
        let mut e = Evaluator::default();
        assert!(e.observe_record(7, &rules, UnixMillis(0), &who(1), &Observation::Call).is_empty());
        assert!(e.observe_record(7, &rules, UnixMillis(0), &who(1), &Observation::Call).is_empty(), "seen");
        assert_eq!(e.observe_record(8, &rules, UnixMillis(0), &who(1), &Observation::Call).len(), 1);
    }

    /// A process taking the reading over rebuilds the counts from records already acted on:
    /// nothing trips during the replay, and the next record trips where the previous reader's
    /// would have.
    #[test]
    fn a_replay_rebuilds_counts_without_tripping() {
        // New-tool first: the counting rules' places in the list must not shift in a replay.
        let rules = vec![
            Rule { signal: Signal::NewTool, action: Action::Alert },
            Rule {
                signal: Signal::DenyRate { scope: Scope::Workflow, window_secs: 60, min_calls: 4, ratio: 0.5 },
                action: Action::SuspendWorkflow,
            },
            Rule {
                signal: Signal::WriteBeforeRead { reads: vec!["read".into()], writes: vec!["write".into()] },
                action: Action::SuspendTask,
            },
        ];
        let mut e = Evaluator::default();
        e.observe_record(1, &rules, UnixMillis(0), &who(1), &start());
        e.observe_record(2, &rules, UnixMillis(0), &who(1), &decision(false));
        e.observe_record(3, &rules, UnixMillis(0), &who(1), &decision(true));
        e.observe_record(4, &rules, UnixMillis(0), &who(1), &decision(true));
        e.set_fed(4);
        assert!(e.fed_to(4));
        // Another process, from scratch.
        let mut b = Evaluator::default();
        assert!(!b.fed_to(4));
        b.restart();
        let tool = Observation::Decision { denied: false, action: "read".into(), tool: Some("jira".into()) };
        b.replay_record(1, &rules, UnixMillis(0), &who(1), &start());
        b.replay_record(2, &rules, UnixMillis(0), &who(1), &tool);
        b.replay_record(3, &rules, UnixMillis(0), &who(1), &decision(true));
        b.replay_record(4, &rules, UnixMillis(0), &who(1), &decision(true));
        b.set_fed(4);
        assert!(!b.knows_tools(&WorkflowName::parse("w").unwrap()), "the baseline is seeded, not replayed");
        // The fourth call: 3 of 4 denied trips the workflow on both.
        let t = b.observe_record(5, &rules, UnixMillis(1_000), &who(1), &decision(true));
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!((t[0].rule, t[0].evidence["calls"].as_u64()), (1, Some(4)));
        let t = e.observe_record(5, &rules, UnixMillis(1_000), &who(1), &decision(true));
        assert_eq!(t.len(), 1);
        // The replayed read counts: no write-before-read for task 1.
        let write = Observation::Decision { denied: false, action: "write".into(), tool: None };
        assert!(b.observe_record(6, &rules, UnixMillis(1_000), &who(1), &write).is_empty());
    }

    /// Per-task state goes when a task expires (no record says so), unless it was renewed.
    #[test]
    fn task_state_goes_when_tasks_expire_unless_renewed() {
        let rules = vec![Rule {
            signal: Signal::WriteBeforeRead { reads: vec!["read".into()], writes: vec!["write".into()] },
            action: Action::SuspendTask,
        }];
        let mut e = Evaluator::default();
        e.observe(&rules, UnixMillis(0), &who(1), &Observation::Start { expires: UnixMillis(1_000) });
        e.observe(&rules, UnixMillis(0), &who(2), &Observation::Start { expires: UnixMillis(1_000) });
        e.observe(&rules, UnixMillis(500), &who(2), &Observation::Renew { expires: UnixMillis(9_000) });
        e.prune(UnixMillis(2_000), &[]);
        assert_eq!(e.started.len(), 1);
        let write = Observation::Decision { denied: false, action: "write".into(), tool: None };
        assert!(e.observe(&rules, UnixMillis(2_000), &who(1), &write).is_empty(), "expired: no longer judged");
        assert_eq!(e.observe(&rules, UnixMillis(2_000), &who(2), &write).len(), 1, "renewed: still judged");
    }

    #[test]
    fn rules_are_checked() {
        let bad = |s: Signal, a: Action| check(&[Rule { signal: s, action: a }]).unwrap_err();
        assert!(
            bad(Signal::DenyRate { scope: Scope::Task, window_secs: 0, min_calls: 1, ratio: 0.5 }, Action::Alert)
                .contains("window_secs")
        );
        assert!(
            bad(Signal::DenyRate { scope: Scope::Task, window_secs: 5, min_calls: 1, ratio: 1.5 }, Action::Alert)
                .contains("ratio")
        );
        assert!(
            bad(Signal::CallSpike { scope: Scope::Workflow, window_secs: 5, max_calls: 1 }, Action::SuspendTask)
                .contains("workflow-wide")
        );
        // The wire form.
        let r: Vec<Rule> = serde_json::from_str(
            r#"[{"signal": "deny_rate", "scope": "workflow", "window_secs": 60, "min_calls": 20, "ratio": 0.5, "action": "suspend_workflow"},
                {"signal": "sharing", "action": "suspend_task"}]"#,
        )
        .unwrap();
        assert_eq!(r[1], Rule { signal: Signal::Sharing, action: Action::SuspendTask });
        assert!(serde_json::from_str::<Vec<Rule>>(r#"[{"signal": "sharing", "action": "explode"}]"#).is_err());
        check(&default_rules()).unwrap();
    }
}
