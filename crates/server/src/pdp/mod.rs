//! The policy decision point, a service of its own: it owns the engine handle (the compiled
//! active bundle, swapped whole) and its caches, and uses only the store's policy, approvals,
//! identity (tool uses, workflow owners) and audit areas.
//!
//! - [`admin`]: policy bundles (push, hot reload) and the attribute store.
//! - [`entities`]: building Cedar entities from the attribute store, and their cache.
//! - [`evaluate`]: AuthZEN evaluations, explanations, and which facts callers may state.
//! - [`search`]: AuthZEN subject, resource and action search.
//! - [`task`]: decisions for an agent's task, with Remit's request-time context.
//! - [`facts`]: that context, built purely from the task snapshot and the clock.
//! - [`offline`]: the offline policy tester, deciding described tasks through [`facts`].
//! - [`approvals`]: the approval step of an "approval required" decision, and humans
//!   deciding requests.
//!
//! Every decision is audited with the policy version that made it and the policies that
//! decided. The PDP takes its inputs as service types (not wire types): the API layer
//! parses requests into them.

pub mod admin;
pub mod approvals;
pub mod entities;
pub mod evaluate;
pub mod facts;
pub mod offline;
pub mod search;
pub mod task;

use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use remit_core::random::Random;
use remit_core::time::{Clock, UnixMillis};
use remit_policy::{Decision, Engine, Outcome};
use remit_store::Store;
use serde_json::{Map, Value};

use crate::config::ApprovalsConfig;
use crate::error::Error;
use crate::metrics::ResultLabel;

pub use evaluate::Evaluation;
pub use search::SearchKind;
pub use task::{TaskAnswer, TaskCall};

/// The context member through which a PEP presents an approval id on its retry.
pub const APPROVAL_CONTEXT_KEY: &str = "remit_approval";
/// Most items in one `/evaluations` batch.
pub const MAX_BATCH: usize = 1000;
/// Most entities in one push.
pub const MAX_ENTITIES_PER_PUSH: usize = 10_000;

/// A subject or resource as a caller names it: `type` and `id` (absent only where a search
/// leaves them open) and the properties the caller states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Party {
    pub etype: Option<String>,
    pub id: Option<String>,
    pub properties: Map<String, Value>,
}

/// An action as a caller names it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionRef {
    pub name: Option<String>,
    pub properties: Option<Map<String, Value>>,
}

/// An entity to store: Cedar's JSON entity shape plus aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityPush {
    pub uid: Value,
    pub attrs: Map<String, Value>,
    pub parents: Vec<Value>,
    pub aliases: Vec<String>,
}

/// A decision and, when it needs a human, the approval request behind it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub approval: Option<ApprovalRef>,
}

impl Answer {
    pub fn new(decision: Decision) -> Answer {
        Answer { decision, approval: None }
    }

    /// What the decision says, as callers see it.
    pub fn verdict(&self) -> Verdict {
        verdict(&self.decision, self.approval.as_ref())
    }
}

/// The approval request a decision opened, or the one its call presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRef {
    pub id: String,
    /// When the request expires (known when it was opened or is still pending).
    pub expires_at: Option<UnixMillis>,
    pub step: ApprovalStep,
}

/// How a decision met its approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStep {
    /// This call opened it: a human is asked now.
    Opened,
    /// The call presented it and no human has decided yet: ask again once one has.
    StillPending,
    /// The call presented it and it was used (an allow) or is not usable (a deny).
    Presented,
}

/// A decision's outcome as callers see it: the policy's, with `pending` for a call that
/// presented an approval no human has decided yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// A human must approve this exact call; an approval request was opened.
    ApprovalRequired,
    /// The approval presented is still waiting for a human.
    Pending,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::ApprovalRequired => "approval_required",
            Verdict::Pending => "pending",
        }
    }
}

/// The verdict of `d` with its approval request `a`.
pub fn verdict(d: &Decision, a: Option<&ApprovalRef>) -> Verdict {
    match d.outcome {
        Outcome::Allow => Verdict::Allow,
        Outcome::Deny => Verdict::Deny,
        Outcome::ApprovalRequired if a.is_some_and(|a| a.step == ApprovalStep::StillPending) => Verdict::Pending,
        Outcome::ApprovalRequired => Verdict::ApprovalRequired,
    }
}

/// What the PDP needs from the configuration.
#[derive(Debug, Clone)]
pub struct PdpLimits {
    /// Longest entity type or id accepted.
    pub max_entity_id_bytes: usize,
    /// Bytes the built-entity cache may hold.
    pub built_cache_bytes: usize,
}

/// The decision service.
pub struct Pdp {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    approvals: ApprovalsConfig,
    limits: PdpLimits,
    /// Decisions by outcome (shared with the metrics registry).
    decisions: Family<ResultLabel, Counter>,
    /// The compiled active bundle; swapped whole when a newer version is pushed.
    engine: RwLock<Arc<Engine>>,
    /// Stored entities built as Cedar entities, checked against the stored text on each use.
    built: Mutex<entities::BuiltCache>,
}

impl Pdp {
    /// A PDP that denies everything until [`Pdp::reload_policy`] finds a bundle.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        approvals: ApprovalsConfig,
        limits: PdpLimits,
        decisions: Family<ResultLabel, Counter>,
    ) -> Result<Pdp, String> {
        let engine = Engine::deny_all().map_err(|e| format!("base policy schema: {e}"))?;
        Ok(Pdp {
            store,
            clock,
            random,
            approvals,
            limits,
            decisions,
            engine: RwLock::new(Arc::new(engine)),
            built: Mutex::new(entities::BuiltCache::default()),
        })
    }

    /// The engine deciding right now.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.read().map(|e| e.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn count(&self, v: Verdict) {
        self.decisions.get_or_create(&crate::metrics::Metrics::label(v.as_str())).inc();
    }

    /// A deny carrying `errors`, under the engine's version.
    fn deny(engine: &Engine, errors: Vec<String>) -> Decision {
        Decision { outcome: Outcome::Deny, policy_version: engine.version(), reasons: vec![], errors, approval: vec![] }
    }
}

/// Key-sorted, compact JSON: the same call always hashes the same.
pub(crate) fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: std::collections::BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn hex_sha256(v: &Value) -> String {
    hex::encode(remit_token::sha256(v.to_string().as_bytes()))
}

fn required<'a>(v: &'a Option<String>, what: &str) -> Result<&'a str, Error> {
    v.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| Error::Invalid(format!("`{what}` is required")))
}

/// Refuses an entity type, id or action name longer than `max` bytes (they end up in audit
/// records and caches), naming the field.
pub(crate) fn bounded(v: Option<&str>, what: &str, max: usize) -> Result<(), Error> {
    match v {
        Some(s) if s.len() > max => Err(Error::Invalid(format!("`{what}` is longer than {max} bytes"))),
        _ => Ok(()),
    }
}
