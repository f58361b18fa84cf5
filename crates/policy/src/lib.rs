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
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, Request, Schema, SchemaFragment, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

/// Remit's own world. Operators extend it with their own entity types and actions in the
/// bundle's schema (same, empty, namespace).
pub const BASE_SCHEMA: &str = r#"
// A person: workflow owners, approvers, and the users of applications that use Remit as PDP.
entity Human { email?: String, roles?: Set<String>, name?: String };
// A registered piece of software and its running copies.
entity Agent;
entity AgentInstance in [Agent];
// A trust boundary for one purpose.
entity Workflow { owner?: String, ceiling?: String };
// One unit of work of one workflow.
entity Task in [Workflow] { intent?: String, sensitivity?: String, agent?: Agent };
entity Tool;
// Anything else an agent acts on.
entity Resource { kind?: String, sensitivity?: String };

action call_tool appliesTo { principal: [Task, AgentInstance, Human], resource: [Tool, Resource] };
action read, write, delete appliesTo { principal: [Task, AgentInstance, Human], resource: [Resource, Tool] };
"#;

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

impl Bundle {
    /// Reads a policy directory: every `*.cedar` file (sorted by name), every
    /// `*.cedarschema` file (concatenated), and `mapping.json` if present.
    pub fn from_dir(dir: &std::path::Path) -> Result<Bundle, String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        let read =
            |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut b = Bundle::default();
        for p in &names {
            let file = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match p.extension().and_then(|e| e.to_str()) {
                Some("cedar") => b.policies.push(PolicyFile { name: file, source: read(p)? }),
                Some("cedarschema") => {
                    b.schema.push_str(&read(p)?);
                    b.schema.push('\n');
                }
                _ if file == "mapping.json" => {
                    b.mapping = serde_json::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?;
                }
                _ => {}
            }
        }
        if b.policies.is_empty() {
            return Err(format!("no .cedar files in {}", dir.display()));
        }
        Ok(b)
    }
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
            .map_err(|e| Rejected(vec![format!("schema ({name}): {e}")]))
    };
    let mut frags = vec![parse("remit base", BASE_SCHEMA)?];
    if !extra.trim().is_empty() {
        frags.push(parse("bundle", extra)?);
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
        let mut set = PolicySet::new();
        let mut problems = Vec::new();
        for file in &bundle.policies {
            let parsed = match PolicySet::from_str(&file.source) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{}: {e}", file.name));
                    for d in e.iter() {
                        problems.push(format!("{}: {d}", file.name));
                    }
                    continue;
                }
            };
            for (n, p) in parsed.policies().enumerate() {
                let id = p.annotation("id").map(str::to_owned).unwrap_or_else(|| format!("{}#{n}", file.name));
                if let Err(e) = set.add(p.new_id(PolicyId::new(&id))) {
                    problems.push(format!("{}: {e}", file.name));
                }
            }
            if parsed.templates().next().is_some() {
                problems.push(format!("{}: templates are not supported; write static policies", file.name));
            }
        }
        if !problems.is_empty() {
            return Err(Rejected(problems));
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(Rejected(result.validation_errors().map(|e| e.to_string()).collect()));
        }
        let approvals = set
            .policies()
            .filter(|p| p.effect() == cedar_policy::Effect::Permit)
            .filter_map(|p| p.annotation(APPROVAL_ANNOTATION).map(|a| (p.id().clone(), a.to_owned())))
            .collect();
        Ok(Engine {
            version,
            policies: set,
            schema,
            mapping: bundle.mapping.clone(),
            authorizer: Authorizer::new(),
            approvals,
        })
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
        approved: bool,
    ) -> Decision {
        let req = match Request::new(principal, action, resource, context, None) {
            Ok(r) => r,
            Err(e) => return self.deny(vec![], vec![e.to_string()]),
        };
        let resp = self.authorizer.is_authorized(&req, &self.policies, entities);
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

    fn deny(&self, reasons: Vec<String>, errors: Vec<String>) -> Decision {
        Decision { outcome: Outcome::Deny, policy_version: self.version, reasons, errors, approval: vec![] }
    }
}

/// Builds an entity uid, checking the type name.
pub fn uid(etype: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(etype).map_err(|e| format!("`{etype}` is not a valid entity type: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// The uid of action `name`.
pub fn action(name: &str) -> Result<EntityUid, String> {
    uid("Action", name)
}

/// A Cedar context from a JSON object (AuthZEN `context`); `null` is the empty context.
pub fn context(json: &serde_json::Value) -> Result<Context, String> {
    match json {
        serde_json::Value::Null => Ok(Context::empty()),
        v @ serde_json::Value::Object(_) => {
            Context::from_json_value(strip_nulls(v.clone()), None).map_err(|e| format!("context: {e}"))
        }
        _ => Err("context must be a JSON object".into()),
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
pub fn entities(list: Vec<serde_json::Value>) -> Result<Entities, String> {
    Entities::from_json_value(serde_json::Value::Array(list), None).map_err(|e| format!("entities: {e}"))
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
        Bundle { policies: vec![PolicyFile { name: "p.cedar".into(), source: src.into() }], ..Default::default() }
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
            false,
        )
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
        let d = e.decide(
            uid("Human", "alice").unwrap(),
            action("write").unwrap(),
            uid("Tool", "git").unwrap(),
            Context::empty(),
            &ents(),
            true,
        );
        assert_eq!(d.outcome, Outcome::Allow);
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
}
