//! Automatic containment on the server: per-workflow governance settings (containment rules
//! and the recertification period), the signals the tail derives from audit records, and the
//! kill switches a tripped rule pulls.
//!
//! The rules and their counters are `remit_core::containment`'s; the tail feeds them every
//! record it reads (decisions, proxied calls, sharing events, leak-guard hits, external risk
//! signals), so the counters cover every replica's traffic and nothing on a request's path
//! scans history. A trip's kill is made as `governance:containment` with the rule's reason;
//! its `containment.trip` record carries the rule, the evidence and what was done. A human
//! resumes (the ordinary resume and enable).

use std::collections::HashMap;

use remit_core::audit::{AuditAction, AuditEvent, AuditRecord};
use remit_core::containment::{self, Observation, Rule, Subject, Target, Trip};
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::model::KillTarget;
use remit_store::AuditFilter;
use serde::{Deserialize, Serialize};

use super::detail;
use crate::app::App;
use crate::caller::Caller;
use crate::error::Error;

/// The actor of everything containment does.
pub const ACTOR: &str = "governance:containment";
/// Decisions read to learn which tools a workflow has used, when a new-tool rule first needs it.
const TOOL_HISTORY: u32 = 10_000;
/// Most records fed again when the counters are rebuilt (see [`warm`]).
const WARM_RECORDS: u64 = 50_000;

/// When objects must be recertified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecertPolicy {
    /// Days between recertifications (1..=730).
    pub period_days: u32,
    /// Days past due before the object is suspended (0..=90).
    pub grace_days: u32,
}

/// A workflow's governance settings as stored (absent parts take the defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Containment rules (`[{"signal": "deny_rate", "scope": "workflow", "window_secs": 60,
    /// "min_calls": 20, "ratio": 0.5, "action": "suspend_workflow"}, …]`); absent: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub containment: Option<Vec<Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recertification: Option<RecertPolicy>,
}

/// A workflow's settings in effect.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Effective {
    pub workflow: String,
    #[schema(value_type = Vec<Object>)]
    pub containment: Vec<Rule>,
    /// Whether the rules are the workflow's own (or the defaults).
    pub declared: bool,
    pub recertification: RecertPolicy,
}

impl App {
    pub(crate) fn default_recert(&self) -> RecertPolicy {
        RecertPolicy {
            period_days: self.cfg.governance.recert_period_days,
            grace_days: self.cfg.governance.recert_grace_days,
        }
    }

    fn effective(&self, workflow: &str, s: Option<&Settings>) -> Effective {
        Effective {
            workflow: workflow.to_owned(),
            containment: s.and_then(|s| s.containment.clone()).unwrap_or_else(containment::default_rules),
            declared: s.is_some_and(|s| s.containment.is_some()),
            recertification: s.and_then(|s| s.recertification).unwrap_or_else(|| self.default_recert()),
        }
    }

    /// Every workflow's stored settings (unreadable ones are logged and take the defaults).
    pub(crate) async fn all_settings(&self) -> Result<HashMap<String, Settings>, Error> {
        let rows = self.store.governance().settings().await?;
        Ok(rows
            .into_iter()
            .filter_map(|(w, json)| match serde_json::from_str::<Settings>(&json) {
                Ok(s) => Some((w, s)),
                Err(e) => {
                    tracing::error!(workflow = %w, error = %e, "stored governance settings are unreadable; defaults apply");
                    None
                }
            })
            .collect())
    }

    /// A workflow's settings in effect. Needs `governance.read` on it.
    pub async fn governance_settings(&self, caller: &Caller, w: &WorkflowName) -> Result<Effective, Error> {
        caller.require_human_or_admin()?;
        self.allow_on_workflow(caller, remit_policy::admin::AdminAction::GovernanceRead, w).await?;
        self.store.identity().workflow(w).await?.ok_or_else(|| Error::NotFound(format!("no workflow `{w}`")))?;
        let all = self.all_settings().await?;
        Ok(self.effective(w.as_str(), all.get(w.as_str())))
    }

    /// Replaces a workflow's settings (checked; audited). Needs `governance.manage`.
    pub async fn set_governance_settings(
        &self,
        caller: &Caller,
        w: &WorkflowName,
        s: Settings,
        reason: &str,
    ) -> Result<Effective, Error> {
        caller.require_human_or_admin()?;
        self.allow_on_workflow(caller, remit_policy::admin::AdminAction::GovernanceManage, w).await?;
        crate::service::admin::check_reason(reason)?;
        if let Some(rules) = &s.containment {
            containment::check(rules).map_err(Error::Invalid)?;
        }
        if let Some(r) = s.recertification
            && (!(1..=730).contains(&r.period_days) || r.grace_days > 90)
        {
            return Err(Error::Invalid("recertification: period_days 1..=730, grace_days 0..=90".into()));
        }
        let json = serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.clock.now();
        let detail = serde_json::to_value(&s).map_err(|e| Error::Internal(e.to_string()))?;
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::GovernanceUpdate)
            .workflow(w)
            .reason(reason)
            .detail([("settings", detail)]);
        self.store.governance().set_settings(w.as_str(), json, now, audit).await?;
        Ok(self.effective(w.as_str(), Some(&s)))
    }

    /// A kill made by governance itself (containment, recertification): no caller to check.
    pub(crate) async fn system_kill(
        &self,
        actor: &str,
        target: KillTarget,
        reason: &str,
    ) -> Result<remit_core::model::KillReport, Error> {
        self.kill_as(actor.to_owned(), target, reason).await
    }
}

/// What a record says to containment, if anything: the signal and the task it is about (the
/// workflow and agent when the record names them).
/// A task's workflow and agent, when known.
type Named = Option<(WorkflowName, AgentName)>;

fn observation(rec: &AuditRecord) -> Option<(TaskId, Named, Observation)> {
    let e = &rec.event;
    let task = TaskId::parse(e.task.as_deref()?).ok()?;
    let named = match (e.workflow.as_deref(), e.agent.as_deref()) {
        (Some(w), Some(a)) => Some((WorkflowName::parse(w).ok()?, AgentName::parse(a).ok()?)),
        _ => None,
    };
    let d = detail(rec);
    let denied = e.outcome == remit_core::audit::Outcome::Denied;
    let o = match e.action.as_str() {
        "access.evaluate" => Observation::Decision {
            denied,
            action: d["action"].as_str().unwrap_or_default().to_owned(),
            tool: d["tool"].as_str().map(str::to_owned),
        },
        "tool.call" => Observation::Call,
        "task.start" if !denied => Observation::Start {
            expires: remit_core::time::UnixMillis(d["expires_at_ms"].as_i64().unwrap_or(i64::MAX)),
        },
        "task.renew" => Observation::Renew {
            expires: remit_core::time::UnixMillis(d["expires_at_ms"].as_i64().unwrap_or(i64::MAX)),
        },
        "security.token_sharing" if d.get("presented_to").is_some() => Observation::Misdirected { evidence: d },
        "security.token_sharing" => Observation::Sharing { evidence: d },
        "leak.found" if denied => Observation::Leak { evidence: d },
        "security.risk_signal" => Observation::Risk { score: d["score"].as_f64()?, evidence: d },
        _ => return None,
    };
    Some((task, named, o))
}

/// What `recs` say to containment, with the `seq` and time of each record and who it is about
/// (a task's workflow and agent read from the store when the record does not name them).
async fn observations(
    app: &App,
    recs: &[AuditRecord],
) -> Result<Vec<(u64, remit_core::time::UnixMillis, Subject, Observation)>, Error> {
    let mut obs = Vec::new();
    let mut subjects: HashMap<TaskId, Named> = HashMap::new();
    for rec in recs {
        let Some((task, named, o)) = observation(rec) else { continue };
        let who = match named {
            Some(n) => Some(n),
            None => match subjects.get(&task) {
                Some(s) => s.clone(),
                None => {
                    let s = app.store.identity().task_snapshot(&task).await?.map(|s| (s.task.workflow, s.task.agent));
                    subjects.insert(task.clone(), s.clone());
                    s
                }
            },
        };
        let Some((workflow, agent)) = who else { continue };
        obs.push((rec.seq, rec.event.time, Subject { task, workflow, agent }, o));
    }
    Ok(obs)
}

/// Tasks that ended in `recs` (their per-task state can go).
fn ended(recs: &[AuditRecord]) -> Vec<TaskId> {
    recs.iter()
        .filter(|r| matches!(r.event.action.as_str(), "task.revoke" | "task.complete"))
        .filter_map(|r| r.event.task.as_deref().and_then(|t| TaskId::parse(t).ok()))
        .collect()
}

fn rules_in(settings: &HashMap<String, Settings>, w: &WorkflowName) -> Vec<Rule> {
    settings.get(w.as_str()).and_then(|s| s.containment.clone()).unwrap_or_else(containment::default_rules)
}

/// Whether this process's counters were fed every record up to the tail's `cursor`.
pub(crate) fn fed_to(app: &App, cursor: u64) -> bool {
    app.governance.containment.lock().is_ok_and(|e| e.fed_to(cursor))
}

/// Rebuilds the counters when this process takes the tail over (a restart, another replica's
/// lapsed hold): the records of the longest window before `cursor` — at most [`WARM_RECORDS`]
/// — are fed again without acting (their trips were the previous reader's), so a count nearly
/// due when the job changed hands is just as due here. Write-before-read judges only tasks
/// whose start is among what was fed.
pub(crate) async fn warm(app: &App, cursor: u64, held: &mut super::Held) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let window_ms = i64::try_from(containment::MAX_WINDOW_SECS * 1_000).unwrap_or(i64::MAX);
    let since = app.clock.now().0.saturating_sub(window_ms);
    let mut after = cursor.saturating_sub(WARM_RECORDS);
    let mut obs = Vec::new();
    let mut gone = Vec::new();
    while after < cursor {
        let f = AuditFilter {
            since: Some(remit_core::time::UnixMillis(since)),
            after_seq: after,
            limit: super::tail::PAGE,
            ..AuditFilter::default()
        };
        let recs: Vec<AuditRecord> = app.store.audit().list(f).await?.into_iter().filter(|r| r.seq <= cursor).collect();
        let Some(last) = recs.last().map(|r| r.seq) else { break };
        obs.extend(observations(app, &recs).await?);
        gone.extend(ended(&recs));
        after = last;
        // A long rebuild keeps its hold (or stops: another replica has the job).
        if !held.hold(app).await? || held.cursor != cursor {
            return Err(Error::Conflict("the job was taken over".into()));
        }
    }
    let settings = app.all_settings().await?;
    let mut e = app.governance.containment.lock().map_err(|_| Error::Internal("containment state poisoned".into()))?;
    e.restart();
    for (seq, at, who, o) in &obs {
        e.replay_record(*seq, &rules_in(&settings, &who.workflow), *at, who, o);
    }
    e.prune(app.clock.now(), &gone);
    e.set_fed(cursor);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(observations = obs.len(), cursor, elapsed_ms, "containment counters rebuilt from the audit log");
    Ok(())
}

/// Feeds `recs` to the evaluator under each workflow's rules; returns what tripped, with the
/// `seq` of the record that tripped it.
pub(crate) async fn evaluate(app: &App, recs: &[AuditRecord]) -> Result<Vec<(u64, Trip)>, Error> {
    let Some(last) = recs.last().map(|r| r.seq) else { return Ok(vec![]) };
    let obs = observations(app, recs).await?;
    if obs.is_empty() {
        if let Ok(mut e) = app.governance.containment.lock() {
            e.prune(app.clock.now(), &ended(recs));
            e.set_fed(last);
        }
        return Ok(vec![]);
    }
    let settings = app.all_settings().await?;
    let rules_of = |w: &WorkflowName| rules_in(&settings, w);
    // A workflow's tool history, once, for its new-tool rules.
    let mut seed: Vec<WorkflowName> = obs
        .iter()
        .filter(|(_, _, who, _)| rules_of(&who.workflow).iter().any(|r| r.signal == containment::Signal::NewTool))
        .map(|(_, _, who, _)| who.workflow.clone())
        .collect();
    seed.sort();
    seed.dedup();
    let before = recs.first().map_or(0, |r| r.seq);
    for w in seed {
        let known = app.governance.containment.lock().map(|e| e.knows_tools(&w)).unwrap_or(true);
        if known {
            continue;
        }
        let f = AuditFilter {
            workflow: Some(w.clone()),
            action: Some("access.evaluate".into()),
            limit: TOOL_HISTORY,
            newest_first: true,
            ..AuditFilter::default()
        };
        let tools: Vec<String> = app
            .store
            .audit()
            .list(f)
            .await?
            .iter()
            .filter(|r| r.seq < before && r.event.outcome == remit_core::audit::Outcome::Success)
            .filter_map(|r| detail(r)["tool"].as_str().map(str::to_owned))
            .collect();
        if let Ok(mut e) = app.governance.containment.lock() {
            e.seed_tools(&w, tools);
        }
    }
    let mut e = app.governance.containment.lock().map_err(|_| Error::Internal("containment state poisoned".into()))?;
    let mut out = Vec::new();
    for (seq, at, who, o) in &obs {
        for t in e.observe_record(*seq, &rules_of(&who.workflow), *at, who, o) {
            out.push((*seq, t));
        }
    }
    // Tasks that ended in these records need no more per-task state.
    e.prune(app.clock.now(), &ended(recs));
    e.set_fed(last);
    Ok(out)
}

/// Carries out trips: the kill (if the rule says so) and the `containment.trip` record of each.
pub(crate) async fn act(app: &App, trips: Vec<(u64, Trip)>) -> Vec<AuditEvent> {
    let mut records = Vec::new();
    for (seq, t) in trips {
        let target = t.target.clone().map(|x| match x {
            Target::Task(id) => KillTarget::Task(id),
            Target::Workflow(w) => KillTarget::Workflow(w),
            Target::Agent(a) => KillTarget::Agent(a),
        });
        let done = match &target {
            None => "alerted".to_owned(),
            Some(k) => match app.system_kill(ACTOR, k.clone(), &t.reason).await {
                Ok(r) => format!("{} ({} tasks revoked)", t.action.as_str(), r.tasks_revoked.len()),
                // Already stopped (another rule, a human): nothing more to do.
                Err(Error::Conflict(m)) => format!("{} not needed: {m}", t.action.as_str()),
                Err(e) => {
                    tracing::error!(error = %e, rule = t.rule, "containment could not pull its kill switch");
                    format!("{} failed: {e}", t.action.as_str())
                }
            },
        };
        let target_name = match &t.target {
            Some(Target::Task(id)) => format!("task:{id}"),
            Some(Target::Workflow(w)) => format!("workflow:{w}"),
            Some(Target::Agent(a)) => format!("agent:{a}"),
            None => String::new(),
        };
        tracing::warn!(signal = t.signal, action = t.action.as_str(), target = %target_name, "containment tripped");
        let rec = AuditEvent::new(app.clock.now(), ACTOR, AuditAction::ContainmentTrip)
            .task(&t.subject.task)
            .workflow(&t.subject.workflow)
            .agent(&t.subject.agent)
            .reason(&t.reason)
            .detail([
                ("rule", t.rule.into()),
                ("signal", t.signal.into()),
                ("action", t.action.as_str().into()),
                ("target", target_name.into()),
                ("result", done.into()),
                ("evidence", t.evidence.clone()),
                ("record", seq.into()),
            ]);
        records.push(rec);
        app.notify(crate::governance::notify::Notice::Containment {
            workflow: t.subject.workflow.to_string(),
            task: t.subject.task.to_string(),
            signal: t.signal,
            action: t.action.as_str(),
            reason: t.reason.clone(),
        });
    }
    records
}

/// An external risk signal naming a task (e.g. from a prompt-injection detector).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskSignal {
    /// The task (`t-…`).
    pub task: String,
    /// 0 (none) to 1 (certain).
    pub score: f64,
    /// Who says so (a detector's name).
    pub source: String,
    /// Why, for the audit log.
    pub reason: String,
}

/// How far a signed risk signal's timestamp may be from now, either way (seconds).
const RISK_TOLERANCE_SECS: i64 = 300;

impl App {
    /// A detector's signed risk signal (`Remit-Signature` over the body, `[governance]
    /// risk_secret_file`): verified, then recorded once across replicas — a captured request
    /// replayed within the tolerance, or a detector's retry, is answered without a second
    /// action (`false`). A signal that could not be recorded gives its replay entry back, so
    /// the retry acts. Returns the task and whether this call recorded it.
    pub async fn signed_risk_signal(
        &self,
        sig: &str,
        body: &[u8],
        parse: impl Fn(&[u8]) -> Result<RiskSignal, Error>,
    ) -> Result<(String, bool), Error> {
        let secret = super::notify::read_secret("REMIT_RISK_SECRET", self.cfg.governance.risk_secret_file.as_deref())
            .map_err(Error::Internal)?
            .ok_or_else(|| Error::Unauthenticated("no risk secret is configured".into()))?;
        let now = self.clock.now();
        let t = remit_token::webhook::verify(&secret, sig, body, now.secs(), RISK_TOLERANCE_SECS)
            .map_err(|e| Error::Unauthenticated(format!("Remit-Signature: {e}")))?;
        let mut m = format!("risk-signal\0{t}\0").into_bytes();
        m.extend_from_slice(body);
        let key = hex::encode(remit_token::sha256(&m));
        // Remembered past the tolerance on either side, with the replicas' clock skew.
        let skew = i64::try_from(self.cfg.limits.clock_skew.as_secs()).unwrap_or(30);
        let until = remit_core::time::UnixMillis::from_secs(t + RISK_TOLERANCE_SECS + skew + 1);
        if !self.store.tools().use_proof(&key, now, until).await? {
            return Ok((parse(body).map(|s| s.task).unwrap_or_default(), false));
        }
        let recorded = match parse(body) {
            Ok(s) => {
                let task = s.task.clone();
                self.risk_signal("risk-webhook", s).await.map(|()| task)
            }
            Err(e) => Err(e),
        };
        // Not recorded: the message may be sent again (a 4xx stays one, a retry after a 5xx acts).
        if recorded.is_err()
            && let Err(e) = self.store.tools().forget_proof(&key).await
        {
            tracing::error!(error = %e, "giving back a risk signal's replay entry failed");
        }
        Ok((recorded?, true))
    }

    /// Records an external risk signal (`security.risk_signal`, naming the task, its workflow and
    /// agent); the containment rules act on it. `by` is who sent it.
    pub async fn risk_signal(&self, by: &str, s: RiskSignal) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&s.score) {
            return Err(Error::Invalid("`score` must be in [0, 1]".into()));
        }
        for (f, v) in [("source", &s.source), ("reason", &s.reason)] {
            if v.is_empty() || v.len() > 256 {
                return Err(Error::Invalid(format!("`{f}` must be 1..=256 bytes")));
            }
        }
        let id = TaskId::parse(&s.task).map_err(|e| Error::Invalid(format!("`task`: {e}")))?;
        let snap = self
            .store
            .identity()
            .task_snapshot(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no task `{id}`")))?;
        let t = &snap.task;
        let audit = AuditEvent::new(self.clock.now(), by, AuditAction::RiskSignal)
            .task(&t.id)
            .workflow(&t.workflow)
            .agent(&t.agent)
            .reason(&s.reason)
            .detail([("score", s.score.into()), ("source", s.source.clone().into())]);
        self.store.audit().append(vec![audit]).await?;
        Ok(())
    }
}
