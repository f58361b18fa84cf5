//! Remit's policy decision point, pure (no IO): Cedar policies validated against Remit's
//! schema plus the operator's extensions, AuthZEN subjects/resources mapped onto Cedar
//! entities, and decisions that say which policies decided and why.
//!
//! - [`Bundle`]: what `remit policy push DIR` uploads: Cedar policy files, an optional Cedar
//!   schema extending [`BASE_SCHEMA`], and the AuthZEN [`Mapping`]. Stored versioned.
//! - [`Engine::compile`]: parses and validates a bundle in strict mode; on failure returns
//!   Cedar's own diagnostics and nothing is activated.
//! - [`Engine::decide`]: one decision: allow, deny, or approval required (a permit policy
//!   annotated `@approval("…")` turns an allow it produced into "approval required").

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, SchemaFragment, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

/// The request context and entity set a decision is made with (Cedar's own types).
pub use cedar_policy::{Context, Entities};

pub mod admin;
pub mod diagnostics;
pub mod direct;
#[cfg(feature = "testing")]
pub mod synthetic;

/// Remit's own world. Operators extend it with their own entity types and actions in the
/// bundle's schema (same, empty, namespace).
pub const BASE_SCHEMA: &str = r#"
// A person: workflow owners, approvers, and the users of applications that use Remit as PDP.
entity Human { email?: String, roles?: Set<String>, name?: String };
// A registered piece of software and its running copies.
entity Agent;
entity AgentInstance in [Agent];
// A trust boundary for one purpose.
entity Workflow { owner?: String, ceiling?: String, allowed_tools?: Set<String> };
// One unit of work of one workflow.
entity Task in [Workflow] { intent?: String, sensitivity?: String, agent?: Agent };
entity Tool;
// Anything else an agent acts on.
entity Resource { kind?: String, sensitivity?: String };

// The request-time context Remit builds when the principal is a verified task token.
type TaskContext = {
  workflow: String,
  intent: String,
  intent_hash: String,
  data_sensitivity: String,
  data_sensitivity_rank: Long,
  workflow_ceiling: String,
  workflow_ceiling_rank: Long,
  time_left_secs: Long,
  agent: String,
  instance?: String,
  delegation_depth: Long,
  // The agents of the tasks above this one: as a set (for `contains`) and in order, root
  // first, joined by `>` (for `like "supervisor>*"`).
  delegation_chain: Set<String>,
  delegation_path: String,
  // The tool this call uses (the resource when it is a Tool, else the PEP's `tool`) and
  // the tools this task was allowed to use before it.
  tool?: String,
  tools_used: Set<String>,
  target?: String,
  // In a token exchange: the tool's class (`model`, `tool`, `data`) and the trust domain
  // its credential would come from.
  tool_class?: String,
  trust_domain?: String,
};
// Remit's own action; applications declare theirs (read, write, …) in the bundle's schema.
action call_tool appliesTo { principal: [Task], resource: [Tool, Resource], context: TaskContext };
"#;

/// Entity types whose facts only Remit vouches for (from its own state, for a verified task
/// token): callers of the AuthZEN endpoints may not supply their properties.
pub const REMIT_ENTITY_TYPES: &[&str] = &["Task", "Workflow", "Agent", "AgentInstance"];

/// Members of [`BASE_SCHEMA`]'s `TaskContext` that Remit vouches for. Outside
/// `/v1/decisions` (where Remit computes them) callers may not supply them; `tool` and
/// `target` are the PEP's own facts and are not listed.
pub const TASK_CONTEXT_FACTS: &[&str] = &[
    "workflow",
    "intent",
    "intent_hash",
    "data_sensitivity",
    "data_sensitivity_rank",
    "workflow_ceiling",
    "workflow_ceiling_rank",
    "time_left_secs",
    "agent",
    "instance",
    "delegation_depth",
    "delegation_chain",
    "delegation_path",
    "tools_used",
    "tool_class",
    "trust_domain",
];

/// The annotation that turns a permit into "approval required".
pub const APPROVAL_ANNOTATION: &str = "approval";

/// How AuthZEN `type`s name Cedar entity types. Unmapped types are used verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    pub subject_types: BTreeMap<String, String>,
    pub resource_types: BTreeMap<String, String>,
}

/// One policy file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    pub name: String,
    pub source: String,
}

/// What is pushed and stored, as uploaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub policies: Vec<PolicyFile>,
    /// Cedar schema (Cedar syntax) extending [`BASE_SCHEMA`]; may be empty.
    #[serde(default)]
    pub schema: String,
    #[serde(default)]
    pub mapping: Mapping,
}

/// Why a request could not be turned into Cedar's form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`{etype}` is not a valid entity type: {message}")]
    EntityType { etype: String, message: String },
    #[error("context: {0}")]
    Context(String),
    #[error("context must be a JSON object")]
    ContextNotObject,
    #[error("entities: {0}")]
    Entities(String),
    #[error("policy set: {0}")]
    PolicySet(String),
}

/// Why a bundle was refused: Cedar's diagnostics, one per line item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy bundle rejected:\n{}", .0.join("\n"))]
pub struct Rejected(pub Vec<String>);

/// An entity in the form the decision needs.
pub type EntityRef = EntityUid;

/// The three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    ApprovalRequired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
}

/// A decision and its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policy set version that decided.
    pub policy_version: u64,
    /// Policies that determined the outcome (the permits for an allow, the forbids for a
    /// deny; empty for the default deny).
    pub reasons: Vec<String>,
    /// Evaluation errors (a policy that errored is skipped, so these explain a deny).
    pub errors: Vec<String>,
    /// For approval required: the `@approval` texts of the deciding permits.
    pub approval: Vec<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// A compiled, validated bundle.
pub struct Engine {
    version: u64,
    policies: PolicySet,
    schema: Schema,
    mapping: Mapping,
    authorizer: Authorizer,
    /// Permit policies that need an approval, with the annotation's text.
    approvals: HashMap<PolicyId, String>,
    /// The policies that can apply to each action: those naming it (`action == A`,
    /// `action in [A, …]`) plus those with no action constraint. Cedar evaluates every policy
    /// it is given, so deciding over the slice instead of the whole set is where the time
    /// goes down. Exact because Remit never loads `Action` entities (no action groups at
    /// request time), so `in` means membership in the listed actions.
    slices: HashMap<EntityUid, PolicySet>,
    /// Policies with no action constraint (the slice of an action no policy names).
    unscoped: PolicySet,
    /// The actions the schema declares.
    actions: Vec<String>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("version", &self.version).field("policies", &self.len()).finish()
    }
}

fn schema_of(extra: &str) -> Result<Schema, Rejected> {
    let parse = |name: &str, src: &str| {
        SchemaFragment::from_cedarschema_str(src)
            .map(|(f, _warnings)| f)
            .map_err(|e| Rejected(vec![diagnostics::located(name, Some(src), &e, &[])]))
    };
    let mut frags = vec![parse("remit base schema", BASE_SCHEMA)?];
    if !extra.trim().is_empty() {
        frags.push(parse("bundle schema", extra)?);
    }
    Schema::from_schema_fragments(frags).map_err(|e| Rejected(vec![format!("schema: {e}")]))
}

impl Engine {
    /// An engine with no policies: everything is denied.
    pub fn deny_all() -> Result<Engine, Rejected> {
        Self::compile(0, &Bundle::default())
    }

    /// Parses every policy (ids: the `@id` annotation, else `<file>#<n>`), builds the schema
    /// and validates the set in strict mode.
    pub fn compile(version: u64, bundle: &Bundle) -> Result<Engine, Rejected> {
        let schema = schema_of(&bundle.schema)?;
        let actions: Vec<String> = schema.actions().map(|a| a.id().unescaped().to_owned()).collect();
        let mut set = PolicySet::new();
        let mut problems = Vec::new();
        // Which file each policy came from, to place the validator's diagnostics.
        let mut origin: HashMap<PolicyId, usize> = HashMap::new();
        for (i, file) in bundle.policies.iter().enumerate() {
            let parsed = match PolicySet::from_str(&file.source) {
                Ok(p) => p,
                Err(e) => {
                    for d in e.iter() {
                        problems.push(diagnostics::located(&file.name, Some(&file.source), d, &actions));
                    }
                    continue;
                }
            };
            for (n, p) in parsed.policies().enumerate() {
                let id = p.annotation("id").map(str::to_owned).unwrap_or_else(|| format!("{}#{n}", file.name));
                let id = PolicyId::new(&id);
                if let Err(e) = set.add(p.new_id(id.clone())) {
                    problems.push(diagnostics::located(&file.name, Some(&file.source), &e, &actions));
                }
                origin.insert(id, i);
            }
            if parsed.templates().next().is_some() {
                problems.push(format!("{}: templates are not supported; write static policies", file.name));
            }
        }
        if !problems.is_empty() {
            return Err(Rejected(problems));
        }
        let place =
            |id: &PolicyId, d: &dyn miette::Diagnostic| match origin.get(id).and_then(|i| bundle.policies.get(*i)) {
                Some(f) => diagnostics::located(&f.name, Some(&f.source), d, &actions),
                None => diagnostics::located(id.as_ref(), None, d, &actions),
            };
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(Rejected(result.validation_errors().map(|e| place(e.policy_id(), e)).collect()));
        }
        let mut warnings: Vec<String> = result.validation_warnings().map(|w| place(w.policy_id(), w)).collect();
        for p in set.policies().filter(|p| p.effect() == cedar_policy::Effect::Forbid) {
            if p.annotation(APPROVAL_ANNOTATION).is_some() {
                let file = origin.get(p.id()).and_then(|i| bundle.policies.get(*i)).map(|f| f.name.as_str());
                warnings.push(format!(
                    "{}: policy `{}`: `@approval` on a forbid has no effect (only permits ask for approval)",
                    file.unwrap_or("bundle"),
                    p.id()
                ));
            }
        }
        let approvals = set
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Permit)
            .filter_map(|p| p.annotation(APPROVAL_ANNOTATION).map(|a| (p.id().clone(), a.to_owned())))
            .collect();
        let (slices, unscoped) = slice_by_action(&set).map_err(|e| Rejected(vec![e.to_string()]))?;
        Ok(Engine {
            version,
            policies: set,
            schema,
            mapping: bundle.mapping.clone(),
            authorizer: Authorizer::new(),
            approvals,
            slices,
            unscoped,
            actions,
            warnings,
        })
    }

    /// The actions the schema declares (base schema and bundle), by name.
    pub fn actions(&self) -> &[String] {
        &self.actions
    }

    /// What the validator (and Remit) warns about in an accepted bundle, placed like errors.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The Cedar entity type an AuthZEN subject type names.
    pub fn subject_type(&self, authzen_type: &str) -> String {
        self.mapping.subject_types.get(authzen_type).cloned().unwrap_or_else(|| authzen_type.to_owned())
    }

    /// The Cedar entity type an AuthZEN resource type names.
    pub fn resource_type(&self, authzen_type: &str) -> String {
        self.mapping.resource_types.get(authzen_type).cloned().unwrap_or_else(|| authzen_type.to_owned())
    }

    /// The policies that can apply to `action`.
    fn slice(&self, action: &EntityUid) -> &PolicySet {
        self.slices.get(action).unwrap_or(&self.unscoped)
    }

    /// Decides one request over `entities` (which must hold the principal, the resource and
    /// their ancestors). Deny by default; an allow from a permit annotated `@approval`
    /// becomes approval required unless `approved` (the caller presented a valid approval
    /// bound to this exact request).
    pub fn decide(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
        entities: &Entities,
    ) -> Decision {
        self.decide_inner(principal, action, resource, context, entities, false)
    }

    /// [`Engine::decide`] for a call whose approval was just used: permits annotated
    /// `@approval` count as plain allows. Only a proof of a consumed approval (which the
    /// store makes, once, for this very call) opens this door.
    pub fn decide_approved(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
        entities: &Entities,
        _proof: &remit_core::approval::Consumed,
    ) -> Decision {
        self.decide_inner(principal, action, resource, context, entities, true)
    }

    fn decide_inner(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
        entities: &Entities,
        approved: bool,
    ) -> Decision {
        if !self.slices.contains_key(&action) && !self.actions.iter().any(|a| a == action.id().unescaped()) {
            let name = action.id().unescaped().to_owned();
            return self.deny(
                vec![],
                vec![format!("unknown action `{name}`; the schema's actions: {}", self.actions.join(", "))],
            );
        }
        let slice = self.slice(&action);
        let req = match Request::new(principal, action, resource, context, None) {
            Ok(r) => r,
            Err(e) => return self.deny(vec![], vec![e.to_string()]),
        };
        let resp = self.authorizer.is_authorized(&req, slice, entities);
        let reasons: Vec<PolicyId> = resp.diagnostics().reason().cloned().collect();
        let errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        let names = reasons.iter().map(|r| r.to_string()).collect();
        match resp.decision() {
            CedarDecision::Deny => self.deny(names, errors),
            CedarDecision::Allow => {
                // Approval is needed only if *every* permit that allowed it asks for one: a
                // plain permit that also matches needs no human.
                let needs: Vec<String> =
                    reasons.iter().filter_map(|r| self.approvals.get(r).cloned()).collect::<Vec<_>>();
                let outcome = if !approved && !needs.is_empty() && needs.len() == reasons.len() {
                    Outcome::ApprovalRequired
                } else {
                    Outcome::Allow
                };
                let approval = if outcome == Outcome::ApprovalRequired { needs } else { vec![] };
                Decision { outcome, policy_version: self.version, reasons: names, errors, approval }
            }
        }
    }

    /// [`Engine::decide`] over the whole policy set, without slicing (tests and benchmarks
    /// compare the two; feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn decide_unsliced(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
        entities: &Entities,
    ) -> (bool, Vec<String>) {
        match Request::new(principal, action, resource, context, None) {
            Ok(req) => {
                let r = self.authorizer.is_authorized(&req, &self.policies, entities);
                let mut reasons: Vec<String> = r.diagnostics().reason().map(|p| p.to_string()).collect();
                reasons.sort();
                (r.decision() == CedarDecision::Allow, reasons)
            }
            Err(_) => (false, vec![]),
        }
    }

    fn deny(&self, reasons: Vec<String>, errors: Vec<String>) -> Decision {
        Decision { outcome: Outcome::Deny, policy_version: self.version, reasons, errors, approval: vec![] }
    }
}

/// A policy set sliced by action: one set per named action, plus the unscoped policies.
type Sliced = (HashMap<EntityUid, PolicySet>, PolicySet);

fn slice_by_action(set: &PolicySet) -> Result<Sliced, PolicyError> {
    let mut slices: HashMap<EntityUid, PolicySet> = HashMap::new();
    let mut unscoped = PolicySet::new();
    for p in set.policies() {
        let named = match p.action_constraint() {
            cedar_policy::ActionConstraint::Any => {
                unscoped.add(p.clone()).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
                continue;
            }
            cedar_policy::ActionConstraint::Eq(a) => vec![a],
            cedar_policy::ActionConstraint::In(mut list) => {
                // `action in [A, A]` names A once.
                list.sort_by_key(|a| a.to_string());
                list.dedup();
                list
            }
        };
        for a in named {
            slices.entry(a).or_default().add(p.clone()).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
        }
    }
    for slice in slices.values_mut() {
        for p in unscoped.policies() {
            slice.add(p.clone()).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
        }
    }
    Ok((slices, unscoped))
}

/// Builds an entity uid, checking the type name.
pub fn uid(etype: &str, id: &str) -> Result<EntityUid, PolicyError> {
    Ok(EntityUid::from_type_name_and_id(type_name(etype)?, EntityId::new(id)))
}

/// Most parsed entity type names kept per thread.
const TYPE_NAME_CACHE: usize = 1024;

thread_local! {
    static TYPE_NAMES: std::cell::RefCell<HashMap<String, EntityTypeName>> = std::cell::RefCell::new(HashMap::new());
}

/// Parses an entity type name once per thread (Cedar's parser is the costly part of a uid).
fn type_name(etype: &str) -> Result<EntityTypeName, PolicyError> {
    if let Some(t) = TYPE_NAMES.with(|c| c.borrow().get(etype).cloned()) {
        return Ok(t);
    }
    let t = EntityTypeName::from_str(etype)
        .map_err(|e| PolicyError::EntityType { etype: etype.to_owned(), message: e.to_string() })?;
    TYPE_NAMES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= TYPE_NAME_CACHE {
            c.clear();
        }
        c.insert(etype.to_owned(), t.clone());
    });
    Ok(t)
}

/// The uid of action `name`.
pub fn action(name: &str) -> Result<EntityUid, PolicyError> {
    uid("Action", name)
}

/// A Cedar context from a JSON object (AuthZEN `context`); `null` is the empty context.
pub fn context(json: &serde_json::Value) -> Result<Context, PolicyError> {
    match json {
        serde_json::Value::Null => Ok(Context::empty()),
        serde_json::Value::Object(m) => {
            let pairs: Option<Vec<(String, RestrictedExpression)>> =
                m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| Some((k.clone(), direct::expr(v, 0)?))).collect();
            if let Some(ctx) = pairs.and_then(|p| Context::from_pairs(p).ok()) {
                return Ok(ctx);
            }
            Context::from_json_value(strip_nulls(json.clone()), None).map_err(|e| PolicyError::Context(e.to_string()))
        }
        _ => Err(PolicyError::ContextNotObject),
    }
}

/// Cedar has no null: drop null-valued fields (absent and null mean the same to a policy).
pub fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// [`strip_nulls`] for an object's fields.
pub fn strip_nulls_map(m: serde_json::Map<String, serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
    match strip_nulls(serde_json::Value::Object(m)) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Builds the request's entity set from Cedar-JSON entity objects
/// (`{"uid": {"type", "id"}, "attrs": {…}, "parents": […]}`).
///
/// Common shapes are built directly ([`direct`]); anything else, and anything Cedar would
/// refuse, goes through Cedar's own JSON parser, so results and errors are Cedar's.
pub fn entities(list: Vec<serde_json::Value>) -> Result<Entities, PolicyError> {
    if let Some(built) = list.iter().map(direct::entity).collect::<Option<Vec<_>>>()
        && let Ok(ents) = Entities::from_entities(built, None)
    {
        return Ok(ents);
    }
    Entities::from_json_value(serde_json::Value::Array(list), None).map_err(|e| PolicyError::Entities(e.to_string()))
}

/// One entity of a request: already built (e.g. cached), or as Cedar-JSON.
#[derive(Debug, Clone)]
pub enum Part {
    Built(cedar_policy::Entity),
    Json(serde_json::Value),
}

/// Builds a request's entity set from built entities and Cedar-JSON ones, directly where it
/// can; if any JSON entity needs Cedar's own parser, all of them go through it.
pub fn entities_from(parts: Vec<Part>) -> Result<Entities, PolicyError> {
    let mut built = Vec::with_capacity(parts.len());
    let mut rest = Vec::new();
    for p in parts {
        match p {
            Part::Built(e) => built.push(e),
            Part::Json(v) => match direct::entity(&v) {
                Some(e) => built.push(e),
                None => rest.push(v),
            },
        }
    }
    if rest.is_empty() {
        return Entities::from_entities(built, None).map_err(|e| PolicyError::Entities(e.to_string()));
    }
    for e in built {
        rest.push(e.to_json_value().map_err(|e| PolicyError::Entities(e.to_string()))?);
    }
    Entities::from_json_value(serde_json::Value::Array(rest), None).map_err(|e| PolicyError::Entities(e.to_string()))
}

/// Parses a policy's source back for display (`remit policy explain`).
pub fn policy_source(engine: &Engine, id: &str) -> Option<String> {
    engine.policies.policy(&PolicyId::new(id)).map(Policy::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bundle(src: &str) -> Bundle {
        Bundle {
            policies: vec![PolicyFile { name: "p.cedar".into(), source: src.into() }],
            schema: "action read, write, delete appliesTo { principal: [Human], resource: [Tool, Resource] };".into(),
            ..Default::default()
        }
    }

    fn ents() -> Entities {
        entities(vec![
            serde_json::json!({"uid": {"type": "Human", "id": "alice"}, "attrs": {"roles": ["admin"]}, "parents": []}),
        ])
        .unwrap()
    }

    fn ask(e: &Engine, act: &str) -> Decision {
        e.decide(
            uid("Human", "alice").unwrap(),
            action(act).unwrap(),
            uid("Tool", "git").unwrap(),
            Context::empty(),
            &ents(),
        )
    }

    /// A proof as a store would make it after using an approval.
    fn proof() -> remit_core::approval::Consumed {
        use remit_core::approval::{Approval, ApprovalState, Consumed};
        let used = Approval {
            id: remit_core::ids::ApprovalId::from_random([1; 16]),
            state: ApprovalState::Used,
            digest: "d".into(),
            policy_version: 1,
            request: "{}".into(),
            reasons: vec![],
            requested_by: "x".into(),
            requested_at: remit_core::time::UnixMillis(0),
            expires_at: remit_core::time::UnixMillis(1),
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            used_at: None,
            task: None,
            workflow: None,
        };
        Consumed::after_consume(&used).unwrap()
    }

    #[test]
    fn deny_by_default_and_reasons() {
        let e = Engine::deny_all().unwrap();
        assert_eq!(ask(&e, "read").outcome, Outcome::Deny);
        let e = Engine::compile(
            3,
            &bundle(r#"@id("admins-read") permit(principal is Human, action == Action::"read", resource) when { principal has roles && principal.roles.contains("admin") };"#),
        )
        .unwrap();
        let d = ask(&e, "read");
        assert_eq!(
            (d.outcome, d.policy_version, d.reasons.clone()),
            (Outcome::Allow, 3, vec!["admins-read".to_string()])
        );
        assert_eq!(ask(&e, "write").outcome, Outcome::Deny);
    }

    #[test]
    fn approval_annotation_gates_an_allow() {
        let e = Engine::compile(
            1,
            &bundle(r#"@approval("prod change") permit(principal, action == Action::"write", resource);"#),
        )
        .unwrap();
        let d = ask(&e, "write");
        assert_eq!(d.outcome, Outcome::ApprovalRequired);
        assert_eq!(d.approval, vec!["prod change".to_string()]);
        let d = e.decide_approved(
            uid("Human", "alice").unwrap(),
            action("write").unwrap(),
            uid("Tool", "git").unwrap(),
            Context::empty(),
            &ents(),
            &proof(),
        );
        assert_eq!(d.outcome, Outcome::Allow);
    }

    /// A deterministic random source (xorshift, no dependency): `next(n)` is in `0..n`.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// Property: for random policy sets and random requests, deciding over the action slice
    /// gives exactly the full-set decision and the same deciding policies.
    #[test]
    fn sliced_decisions_equal_full_set_decisions() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let actions = ["read", "write", "delete", "call_tool"];
        for round in 0..200 {
            let mut src = String::new();
            for i in 0..(1 + next(12)) {
                let effect = if next(4) == 0 { "forbid" } else { "permit" };
                let act = match next(4) {
                    0 => "action".to_string(),
                    1 => format!(
                        "action in [Action::\"{}\", Action::\"{}\"]",
                        actions[next(4) as usize],
                        actions[next(4) as usize]
                    ),
                    _ => format!("action == Action::\"{}\"", actions[next(4) as usize]),
                };
                let princ = if next(2) == 0 { "principal" } else { "principal is Human" };
                let res = match next(3) {
                    0 => "resource".to_string(),
                    1 => "resource is Tool".to_string(),
                    _ => format!("resource == Tool::\"t{}\"", next(3)),
                };
                let cond = match next(3) {
                    0 => String::new(),
                    1 => format!(" when {{ principal has roles && principal.roles.contains(\"r{}\") }}", next(3)),
                    _ => format!(" unless {{ principal has email && principal.email == \"u{}\" }}", next(3)),
                };
                src.push_str(&format!("@id(\"p{i}\") {effect}({princ}, {act}, {res}){cond};\n"));
            }
            let e = Engine::compile(1, &bundle(&src)).unwrap_or_else(|r| unreachable_compile(&src, r));
            for _ in 0..10 {
                let u = next(3);
                let ents = entities(vec![serde_json::json!({"uid": {"type": "Human", "id": format!("u{u}")},
                    "attrs": {"email": format!("u{u}"), "roles": [format!("r{}", next(3))]}, "parents": []})])
                .unwrap();
                let (p, a, r) = (
                    uid("Human", &format!("u{u}")).unwrap(),
                    action(actions[next(4) as usize]).unwrap(),
                    uid("Tool", &format!("t{}", next(3))).unwrap(),
                );
                let sliced = e.decide_approved(p.clone(), a.clone(), r.clone(), Context::empty(), &ents, &proof());
                let mut reasons = sliced.reasons.clone();
                reasons.sort();
                let full = e.decide_unsliced(p, a, r, Context::empty(), &ents);
                assert_eq!((sliced.allowed(), reasons), full, "round {round}, policies:\n{src}");
            }
        }
    }

    #[allow(clippy::panic)]
    fn unreachable_compile(src: &str, r: Rejected) -> Engine {
        panic!("generated policies must validate: {r}\n{src}")
    }

    #[test]
    fn strict_validation_rejects_with_cedar_diagnostics() {
        let r = Engine::compile(1, &bundle(r#"permit(principal, action == Action::"fly", resource);"#)).unwrap_err();
        assert!(r.0.iter().any(|m| m.contains("fly")), "{r}");
        let r = Engine::compile(
            1,
            &bundle(r#"permit(principal is Human, action == Action::"read", resource) when { principal.age > 3 };"#),
        )
        .unwrap_err();
        assert!(!r.0.is_empty());
        let r = Engine::compile(1, &bundle("permit(principal, action, resource")).unwrap_err();
        assert!(r.to_string().contains("p.cedar"), "{r}");
    }

    /// Property: building entities and contexts directly gives exactly what Cedar's own JSON
    /// parser gives, and whatever Cedar refuses is still refused (with Cedar's message).
    #[test]
    fn direct_building_equals_cedar_json_parsing() {
        use serde_json::{Value, json};
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        fn value(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> Value {
            match next(if depth > 3 { 6 } else { 10 }) {
                0 => json!(format!("s{}", next(5))),
                1 => json!(next(1000) as i64 - 500),
                2 => json!(next(2) == 0),
                3 => {
                    let t = ["Human", "Todo", "Ns::Doc"][next(3) as usize];
                    json!({"__entity": {"type": t, "id": format!("e{}", next(4))}})
                }
                4 => {
                    let a = ["10.0.0.1", "192.168.0.0/16", "not-an-ip"][next(3) as usize];
                    json!({"__extn": {"fn": "ip", "arg": a}})
                }
                5 => {
                    let a = ["1.25", "-0.5", "1.23456"][next(3) as usize];
                    json!({"__extn": {"fn": "decimal", "arg": a}})
                }
                6 | 7 => Value::Array((0..next(4)).map(|_| value(next, depth + 1)).collect()),
                _ => Value::Object((0..next(4)).map(|i| (format!("k{i}"), value(next, depth + 1))).collect()),
            }
        }
        let odd = [
            json!(1.5),
            json!(u64::MAX),
            json!({"type": "Human", "id": "x"}),
            json!({"__extn": {"fn": "nope", "arg": "1"}}),
        ];
        for round in 0..2000 {
            let n = 1 + next(3);
            let list: Vec<Value> = (0..n)
                .map(|i| {
                    let mut attrs = serde_json::Map::new();
                    for k in 0..next(5) {
                        let v = if next(20) == 0 { odd[next(odd.len() as u64) as usize].clone() } else { value(&mut next, 0) };
                        attrs.insert(format!("a{k}"), v);
                    }
                    let parents: Vec<Value> = (0..next(3)).map(|p| json!({"type": "Group", "id": format!("g{p}")})).collect();
                    json!({"uid": {"type": if i == 0 { "Human" } else { "Todo" }, "id": format!("x{i}")}, "attrs": attrs, "parents": parents})
                })
                .collect();
            let cedar = Entities::from_json_value(Value::Array(list.clone()), None)
                .map_err(|e| PolicyError::Entities(e.to_string()));
            let ours = entities(list.clone());
            assert_eq!(ours, cedar, "round {round}: {list:?}");
            let ctx = list[0]["attrs"].clone();
            let cedar_ctx =
                Context::from_json_value(ctx.clone(), None).map_err(|e| PolicyError::Context(e.to_string()));
            match (context(&ctx), cedar_ctx) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "round {round}: {ctx}"),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("round {round}: {ctx}: ours {a:?} vs cedar {b:?}"),
            }
        }
    }
}
