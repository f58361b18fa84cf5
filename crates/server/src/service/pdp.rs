//! The policy decision point: policy bundles (push, hot reload), the attribute store, and
//! AuthZEN evaluations decided by Cedar.
//!
//! A decision loads only what it needs: the subject and the resource from the attribute
//! store (by id or alias), their ancestors, and the request's own properties for whatever
//! the store does not hold. Stored attributes win over request properties, so a PEP cannot
//! grant its user a role by claiming it. Every decision is audited with the policy version
//! that made it and the policies that decided.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent, Outcome as AuditOutcome};
use remit_core::rules::human_identity;
use remit_policy::{Bundle, Decision, Engine, Outcome, Part};
use remit_store::StoredEntity;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::service::Caller;

/// The context member through which a PEP presents an approval id on its retry.
pub const APPROVAL_CONTEXT_KEY: &str = "remit_approval";

/// A decision and, when it needs a human, the approval request opened for it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub approval_id: Option<String>,
    pub approval_expires_at: Option<remit_core::time::UnixMillis>,
}

/// A call an approval is bound to: its canonical JSON, that JSON's digest, and whose it is.
struct BoundCall {
    call: Value,
    digest: String,
    task: Option<String>,
    workflow: Option<String>,
    /// The task's agent (named on the approval's audit records).
    agent: Option<String>,
    requested_by: String,
}

/// What [`App::approval_step`] did.
enum ApprovalStep {
    /// The presented approval matched and is now used.
    Used(String),
    /// The presented approval does not apply (why).
    Unusable(String, String),
    /// A new request is pending, until the given time.
    Opened(String, remit_core::time::UnixMillis),
}

/// Built entities by (type, id), with their approximate size: the cache is bounded by bytes
/// (half of `[limits] entity_cache_bytes`; the liveness cache's entity map holds the other).
#[derive(Default)]
pub struct BuiltCache {
    map: std::collections::HashMap<(String, String), Arc<BuiltEntity>>,
    bytes: usize,
}

/// Approximate memory of a built entity: its stored text, and Cedar's form of it (a few
/// times the text).
fn built_cost(key: &(String, String), s: &StoredEntity) -> usize {
    key.0.len() + key.1.len() + 4 * (s.attrs.len() + s.parents.len() + s.id.len()) + 256
}

/// A stored entity as Cedar needs it, with the stored text it was built from.
#[derive(Debug)]
pub struct BuiltEntity {
    stored: StoredEntity,
    part: Part,
    parents: Vec<(String, String)>,
}

/// Key-sorted, compact JSON: the same call always hashes the same.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn hex_sha256(v: &Value) -> String {
    remit_token::sha256(v.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Most ancestors followed from one entity (guards against cycles and runaway hierarchies).
const MAX_ANCESTORS: usize = 64;
/// Most items in one `/evaluations` batch.
pub const MAX_BATCH: usize = 1000;
/// Most entities in one push.
pub const MAX_ENTITIES_PER_PUSH: usize = 10_000;

/// An AuthZEN subject or resource: `type` and `id` required, `properties` optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    #[serde(rename = "type", default)]
    pub etype: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
    /// Other members. Drafts before AuthZEN 1.0 put attributes next to `type` and `id`
    /// (`"ownerID": …`); they are read as properties (`properties` wins on a clash).
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl Entity {
    /// `properties` with the pre-1.0 top-level attributes folded in.
    pub fn all_properties(&self) -> Map<String, Value> {
        let mut m = self.extra.clone();
        m.extend(self.properties.clone().unwrap_or_default());
        m
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Action {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// One evaluation, with every part present (after defaults were applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub subject: Entity,
    pub action: Action,
    pub resource: Entity,
    pub context: Value,
}

/// An entity as pushed: Cedar's JSON entity shape plus aliases.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityIn {
    #[schema(value_type = Object)]
    pub uid: Value,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attrs: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub parents: Vec<Value>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

fn type_and_id(v: &Value, what: &str) -> Result<(String, String), ApiError> {
    let t = v.get("type").and_then(Value::as_str).filter(|s| !s.is_empty());
    let i = v.get("id").and_then(Value::as_str);
    match (t, i) {
        (Some(t), Some(i)) => Ok((t.to_owned(), i.to_owned())),
        _ => Err(ApiError::BadRequest(format!("{what} needs a string `type` and `id`"))),
    }
}

/// Action entities never enter a request's entity set, so there are no action groups at
/// decision time and the engine's slicing by action stays exact.
fn is_action_type(t: &str) -> bool {
    t == "Action" || t.ends_with("::Action")
}

fn required<'a>(v: &'a Option<String>, what: &str) -> Result<&'a str, ApiError> {
    v.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| ApiError::BadRequest(format!("`{what}` is required")))
}

/// Refuses an entity type, id or action name longer than `max` bytes (they end up in audit
/// records and caches), naming the field.
pub(crate) fn bounded(v: Option<&str>, what: &str, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.len() > max => Err(ApiError::BadRequest(format!("`{what}` is longer than {max} bytes"))),
        _ => Ok(()),
    }
}

impl Evaluation {
    /// Checks the fields AuthZEN requires (400 when one is missing); lengths are checked
    /// by the service ([`Evaluation::check_lengths`]).
    pub fn check(&self) -> Result<(), ApiError> {
        required(&self.subject.etype, "subject.type")?;
        required(&self.subject.id, "subject.id")?;
        required(&self.resource.etype, "resource.type")?;
        required(&self.resource.id, "resource.id")?;
        required(&self.action.name, "action.name")?;
        if !(self.context.is_null() || self.context.is_object()) {
            return Err(ApiError::BadRequest("`context` must be an object".into()));
        }
        Ok(())
    }

    /// Checks the lengths of whatever names are present (searches leave some out).
    pub fn check_lengths(&self, max_id: usize) -> Result<(), ApiError> {
        bounded(self.subject.etype.as_deref(), "subject.type", max_id)?;
        bounded(self.subject.id.as_deref(), "subject.id", max_id)?;
        bounded(self.resource.etype.as_deref(), "resource.type", max_id)?;
        bounded(self.resource.id.as_deref(), "resource.id", max_id)?;
        bounded(self.action.name.as_deref(), "action.name", max_id)
    }

    /// Refuses facts only Remit can vouch for, supplied by a caller: properties of Remit's
    /// own entity types and the task-context members Remit computes for `/v1/decisions`.
    pub fn refuse_vouched_facts(&self, engine: &Engine) -> Result<(), ApiError> {
        let own = |t: &str| remit_policy::REMIT_ENTITY_TYPES.contains(&t);
        for (e, cedar, what) in [
            (&self.subject, engine.subject_type(self.subject.etype.as_deref().unwrap_or_default()), "subject"),
            (&self.resource, engine.resource_type(self.resource.etype.as_deref().unwrap_or_default()), "resource"),
        ] {
            if own(&cedar) && !e.all_properties().is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "`{what}.properties`: the facts of Remit's own `{cedar}` entities come from Remit, not from \
                     callers (an agent's task asks with its token at /v1/decisions)"
                )));
            }
        }
        if let Value::Object(m) = &self.context
            && let Some(k) = remit_policy::TASK_CONTEXT_FACTS.iter().find(|k| m.contains_key(**k))
        {
            return Err(ApiError::BadRequest(format!(
                "`context.{k}` is a task fact Remit vouches for; it is computed at /v1/decisions, never taken from callers"
            )));
        }
        Ok(())
    }
}

impl App {
    /// The engine deciding right now.
    pub fn engine(&self) -> Arc<Engine> {
        self.policy.read().map(|e| e.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Compiles the active bundle from the store and swaps it in (if it is newer).
    pub async fn reload_policy(&self) -> Result<u64, ApiError> {
        let Some(active) = self.store.active_policy_set().await? else { return Ok(0) };
        if active.version == self.engine().version() {
            return Ok(active.version);
        }
        let bundle: Bundle = serde_json::from_str(&active.bundle)
            .map_err(|e| ApiError::Internal(format!("stored policy bundle {} is unreadable: {e}", active.version)))?;
        let engine = Engine::compile(active.version, &bundle).map_err(|e| {
            ApiError::Internal(format!("stored policy bundle {} no longer compiles: {e}", active.version))
        })?;
        if let Ok(mut g) = self.policy.write()
            && engine.version() > g.version()
        {
            *g = Arc::new(engine);
        }
        Ok(active.version)
    }

    /// Validates `bundle` (strict) and activates it as the next version, or refuses it with
    /// Cedar's diagnostics and changes nothing.
    pub async fn push_policy(&self, caller: &Caller, bundle: Bundle) -> Result<u64, ApiError> {
        caller.require_admin()?;
        if let Err(rejected) = Engine::compile(0, &bundle) {
            return Err(ApiError::BadRequest(rejected.to_string()));
        }
        let text = serde_json::to_string(&bundle).map_err(|e| ApiError::Internal(e.to_string()))?;
        let digest: String = remit_token::sha256(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::PolicyPush)
            .detail([("bundle_sha256", digest.into()), ("policy_files", bundle.policies.len().into())]);
        let version = self.store.put_policy_set(text, now, &caller.actor(), audit).await?;
        self.reload_policy().await?;
        Ok(version)
    }

    /// Inserts or replaces attribute-store entities.
    pub async fn push_entities(&self, caller: &Caller, list: Vec<EntityIn>) -> Result<usize, ApiError> {
        caller.require_admin()?;
        if list.len() > MAX_ENTITIES_PER_PUSH {
            return Err(ApiError::BadRequest(format!("at most {MAX_ENTITIES_PER_PUSH} entities per push")));
        }
        let mut out = Vec::with_capacity(list.len());
        let max_id = self.cfg.limits.max_entity_id_bytes;
        for e in &list {
            let (etype, id) = type_and_id(&e.uid, "entity uid")?;
            bounded(Some(&etype), "uid.type", max_id)?;
            bounded(Some(&id), "uid.id", max_id)?;
            for a in &e.aliases {
                bounded(Some(a), "aliases", max_id)?;
            }
            if is_action_type(&etype) {
                return Err(ApiError::BadRequest(
                    "actions are declared in the policy schema, not pushed as entities".into(),
                ));
            }
            for p in &e.parents {
                let (pt, pi) = type_and_id(p, "entity parent")?;
                bounded(Some(&pt), "parents.type", max_id)?;
                bounded(Some(&pi), "parents.id", max_id)?;
            }
            // Let Cedar check the shape now rather than at the first decision.
            remit_policy::entities(vec![json!({"uid": e.uid, "attrs": e.attrs, "parents": e.parents})])
                .map_err(|m| ApiError::BadRequest(format!("entity {etype}::{id:?}: {m}")))?;
            out.push(StoredEntity {
                etype,
                id,
                attrs: Value::Object(e.attrs.clone()).to_string(),
                parents: Value::Array(e.parents.clone()).to_string(),
                aliases: e.aliases.clone(),
            });
        }
        let n = out.len();
        let audit =
            AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::EntitiesPush).detail([("count", n.into())]);
        self.store.put_entities(out, audit).await?;
        Ok(n)
    }

    /// Builds the Cedar entity for an AuthZEN subject/resource: the stored entity (found by
    /// id or alias) with the request's properties filling attributes it lacks, plus its
    /// ancestors. Returns the canonical uid.
    async fn load_entity(
        &self,
        cedar_type: &str,
        e: &Entity,
        into: &mut BTreeMap<(String, String), Part>,
    ) -> Result<remit_policy::EntityRef, ApiError> {
        if is_action_type(cedar_type) {
            return Err(ApiError::BadRequest("a subject or resource cannot be an action".into()));
        }
        let id = e.id.clone().unwrap_or_default();
        let stored = self.store.entity(cedar_type, &id).await?;
        let props = remit_policy::strip_nulls_map(e.all_properties());
        let (canonical, parents) = match stored {
            // Nothing to merge: the stored entity as built before, if it has not changed.
            Some(s) if props.is_empty() => {
                let built = self.built_entity(cedar_type, s);
                let canonical = built.stored.id.clone();
                into.insert((cedar_type.to_owned(), canonical.clone()), built.part.clone());
                (canonical, built.parents.clone())
            }
            Some(s) => {
                let mut attrs = props;
                let stored_attrs: Map<String, Value> = serde_json::from_str(&s.attrs).unwrap_or_default();
                attrs.extend(stored_attrs);
                let parents = serde_json::from_str::<Vec<Value>>(&s.parents).unwrap_or_default();
                into.insert(
                    (cedar_type.to_owned(), s.id.clone()),
                    Part::Json(json!({"uid": {"type": cedar_type, "id": s.id}, "attrs": attrs, "parents": parents})),
                );
                (s.id, parents.iter().filter_map(|p| type_and_id(p, "parent").ok()).collect())
            }
            None => {
                into.insert(
                    (cedar_type.to_owned(), id.clone()),
                    Part::Json(json!({"uid": {"type": cedar_type, "id": id}, "attrs": props, "parents": []})),
                );
                (id, vec![])
            }
        };
        let uid = remit_policy::uid(cedar_type, &canonical).map_err(ApiError::BadRequest)?;
        // Ancestors, breadth first, each loaded once.
        let mut queue: Vec<(String, String)> = parents;
        let mut seen: HashSet<(String, String)> = HashSet::new();
        while let Some(key) = queue.pop() {
            if seen.len() >= MAX_ANCESTORS || !seen.insert(key.clone()) || into.contains_key(&key) {
                continue;
            }
            let (t, i) = &key;
            match self.store.entity(t, i).await? {
                Some(s) => {
                    let built = self.built_entity(t, s);
                    queue.extend(built.parents.iter().cloned());
                    into.insert(key.clone(), built.part.clone());
                }
                None => {
                    into.insert(
                        key.clone(),
                        Part::Json(json!({"uid": {"type": t, "id": i}, "attrs": {}, "parents": []})),
                    );
                }
            }
        }
        Ok(uid)
    }

    /// The Cedar entity for a stored entity, built once and reused while the stored text is
    /// unchanged (checked against what the store just returned, so no invalidation is needed).
    fn built_entity(&self, cedar_type: &str, s: StoredEntity) -> Arc<BuiltEntity> {
        let key = (cedar_type.to_owned(), s.id.clone());
        let hit = self.built.lock().ok().and_then(|m| m.map.get(&key).cloned());
        if let Some(b) = hit
            && b.stored.attrs == s.attrs
            && b.stored.parents == s.parents
        {
            return b;
        }
        let attrs = serde_json::from_str::<Value>(&s.attrs).unwrap_or_else(|_| json!({}));
        let parents_json = serde_json::from_str::<Vec<Value>>(&s.parents).unwrap_or_default();
        let parents = parents_json.iter().filter_map(|p| type_and_id(p, "parent").ok()).collect();
        let v = json!({"uid": {"type": cedar_type, "id": s.id}, "attrs": attrs, "parents": parents_json});
        let part = remit_policy::direct::entity(&v).map_or(Part::Json(v), Part::Built);
        let b = Arc::new(BuiltEntity { stored: s, part, parents });
        let budget = self.cfg.limits.entity_cache_bytes / 2;
        let cost = built_cost(&key, &b.stored);
        if cost <= budget
            && let Ok(mut m) = self.built.lock()
        {
            if m.bytes + cost > budget || m.map.len() >= crate::app::BUILT_ENTITIES_MAX {
                m.map.clear();
                m.bytes = 0;
            }
            if let Some(old) = m.map.insert(key.clone(), b.clone()) {
                m.bytes = m.bytes.saturating_sub(built_cost(&key, &old.stored));
            }
            m.bytes += cost;
        }
        b
    }

    /// Decides one evaluation (already checked) without auditing it. `approved`: a valid
    /// approval for this exact call was presented (turns "approval required" into allow).
    async fn decide_one(&self, engine: &Engine, ev: &Evaluation) -> Result<Decision, ApiError> {
        self.decide_with(engine, ev, false).await
    }

    async fn decide_with(&self, engine: &Engine, ev: &Evaluation, approved: bool) -> Result<Decision, ApiError> {
        let mut ents = BTreeMap::new();
        let principal = self
            .load_entity(&engine.subject_type(ev.subject.etype.as_deref().unwrap_or_default()), &ev.subject, &mut ents)
            .await?;
        let resource = self
            .load_entity(
                &engine.resource_type(ev.resource.etype.as_deref().unwrap_or_default()),
                &ev.resource,
                &mut ents,
            )
            .await?;
        let action =
            remit_policy::action(ev.action.name.as_deref().unwrap_or_default()).map_err(ApiError::BadRequest)?;
        let context = remit_policy::context(&Self::policy_context(&ev.context)).map_err(ApiError::BadRequest)?;
        let entities = remit_policy::entities_from(ents.into_values().collect()).map_err(ApiError::BadRequest)?;
        Ok(engine.decide(principal, action, resource, context, &entities, approved))
    }

    /// The call an approval is bound to, and its digest: subject, action, resource (with
    /// their properties) and the context without the approval id itself.
    fn call_of(ev: &Evaluation) -> (Value, String) {
        // No context and an empty one are the same call.
        let ctx = match Self::policy_context(&ev.context) {
            Value::Null => json!({}),
            c => c,
        };
        let call = canonical(&json!({
            "subject": {"type": ev.subject.etype, "id": ev.subject.id, "properties": ev.subject.all_properties()},
            "action": {"name": ev.action.name, "properties": ev.action.properties},
            "resource": {"type": ev.resource.etype, "id": ev.resource.id, "properties": ev.resource.all_properties()},
            "context": ctx,
        }));
        let digest = hex_sha256(&call);
        (call, digest)
    }

    /// Resolves an "approval required" AuthZEN decision: uses a presented approval (once,
    /// for this exact call) or opens an approval request.
    async fn settle_approval(
        &self,
        caller: &Caller,
        engine: &Engine,
        ev: &Evaluation,
        mut d: Decision,
    ) -> Result<Answer, ApiError> {
        let (call, digest) = Self::call_of(ev);
        let presented = ev.context.get(APPROVAL_CONTEXT_KEY).and_then(Value::as_str).map(str::to_owned);
        let bound = BoundCall { call, digest, task: None, workflow: None, agent: None, requested_by: caller.actor() };
        match self.approval_step(caller, bound, presented, &d).await? {
            ApprovalStep::Used(id) => {
                let mut ok = self.decide_with(engine, ev, true).await?;
                ok.approval = d.approval;
                Ok(Answer { decision: ok, approval_id: Some(id), approval_expires_at: None })
            }
            ApprovalStep::Unusable(id, why) => {
                d.outcome = Outcome::Deny;
                d.errors.push(why);
                Ok(Answer { decision: d, approval_id: Some(id), approval_expires_at: None })
            }
            ApprovalStep::Opened(id, expires_at) => {
                Ok(Answer { decision: d, approval_id: Some(id), approval_expires_at: Some(expires_at) })
            }
        }
    }

    /// The approval half of an "approval required" decision `d` for the call `bound`: with
    /// an approval id presented, uses it (once, only for this digest and policy version);
    /// without one, opens a pending request. Both steps are audited.
    async fn approval_step(
        &self,
        caller: &Caller,
        bound: BoundCall,
        presented: Option<String>,
        d: &Decision,
    ) -> Result<ApprovalStep, ApiError> {
        let now = self.clock.now();
        if let Some(id) = presented {
            let audit = AuditEvent::new(now, caller.actor(), AuditAction::ApprovalUse)
                .detail([("approval_id", id.clone().into()), ("policy_version", d.policy_version.into())])
                .task_opt(bound.task.as_deref())
                .workflow_opt(bound.workflow.as_deref())
                .agent_opt(bound.agent.as_deref());
            return match self.store.consume_approval(&id, &bound.digest, d.policy_version, now, audit).await {
                Ok(()) => Ok(ApprovalStep::Used(id)),
                Err(remit_store::StoreError::Conflict(m))
                | Err(remit_store::StoreError::NotFound { kind: _, id: m }) => {
                    Ok(ApprovalStep::Unusable(id, format!("approval not usable: {m}")))
                }
                Err(e) => Err(e.into()),
            };
        }
        let id = format!("a-{}", remit_token::random::<16>().iter().map(|b| format!("{b:02x}")).collect::<String>());
        let expires_at = now.plus_secs(self.cfg.approvals.ttl.as_secs());
        let approval = remit_store::Approval {
            id: id.clone(),
            state: "pending".into(),
            digest: bound.digest,
            policy_version: d.policy_version,
            request: bound.call.to_string(),
            reasons: d.approval.clone(),
            requested_by: bound.requested_by,
            requested_at: now,
            expires_at,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            used_at: None,
            task: bound.task.clone(),
            workflow: bound.workflow.clone(),
        };
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::ApprovalRequest)
            .detail([
                ("approval_id", id.clone().into()),
                ("policy_version", d.policy_version.into()),
                ("reasons", d.approval.clone().into()),
            ])
            .task_opt(bound.task.as_deref())
            .workflow_opt(bound.workflow.as_deref())
            .agent_opt(bound.agent.as_deref());
        self.store.create_approval(approval, audit).await?;
        Ok(ApprovalStep::Opened(id, expires_at))
    }

    /// The context policies see: the request's, without Remit's approval member.
    fn policy_context(ctx: &Value) -> Value {
        let mut ctx = ctx.clone();
        if let Value::Object(m) = &mut ctx {
            m.remove(APPROVAL_CONTEXT_KEY);
        }
        ctx
    }

    /// An approver decides an open approval request. Approvers are named humans (the admin
    /// credential with an operator name): for a task's request, its workflow's owner, the
    /// workflow's configured approvers or a global approver; for an AuthZEN request, a
    /// global approver (anyone named, when none are configured). Nobody decides a request
    /// they made themselves.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<(), ApiError> {
        let Caller::Admin { operator: Some(human) } = caller else {
            return Err(ApiError::Denied(
                "approvals are decided by a named human: the admin credential with x-remit-operator (--operator)"
                    .into(),
            ));
        };
        if reason.trim().is_empty() {
            return Err(ApiError::BadRequest("a reason is required".into()));
        }
        let a =
            self.store.approval(id).await?.ok_or_else(|| ApiError::NotFound(format!("approval `{id}` not found")))?;
        // One normalised form on both sides: letter case does not make another person.
        if human_identity(&a.requested_by) == human_identity(&caller.actor()) {
            return Err(ApiError::Denied("a request cannot be decided by the one who made it".into()));
        }
        self.may_approve(human, &a).await?;
        let now = self.clock.now();
        let action = if approve { AuditAction::ApprovalApprove } else { AuditAction::ApprovalDeny };
        let agent = match a.task.as_deref().map(remit_core::ids::TaskId::parse) {
            Some(Ok(t)) => self.store.task(&t).await?.map(|t| t.agent.to_string()),
            _ => None,
        };
        let audit = AuditEvent::new(now, caller.actor(), action)
            .reason(reason)
            .detail([("approval_id", id.into())])
            .task_opt(a.task.as_deref())
            .workflow_opt(a.workflow.as_deref())
            .agent_opt(agent.as_deref());
        self.store.decide_approval(id, approve, human, reason, now, audit).await?;
        Ok(())
    }

    /// Whether `human` has rights over the approval request `a` (see [`Self::decide_approval`]).
    async fn may_approve(&self, human: &str, a: &remit_store::Approval) -> Result<(), ApiError> {
        let human = human_identity(human);
        let human = human.as_str();
        let named = |list: &[String]| list.iter().any(|x| human_identity(x) == human);
        let global = &self.cfg.approvals.approvers;
        if named(global) {
            return Ok(());
        }
        let Some(wf) = &a.workflow else {
            return if global.is_empty() {
                Ok(())
            } else {
                Err(ApiError::Denied(format!("`{human}` is not a configured approver")))
            };
        };
        if self.cfg.approvals.workflow_approvers.get(wf).is_some_and(|l| named(l)) {
            return Ok(());
        }
        let name = remit_core::ids::WorkflowName::parse(wf).map_err(|e| ApiError::Internal(e.to_string()))?;
        match self.store.workflow(&name).await? {
            Some(w) if human_identity(&w.owner) == human => Ok(()),
            _ => Err(ApiError::Denied(format!(
                "`{human}` may not decide requests of workflow `{wf}`: only its owner or its configured approvers"
            ))),
        }
    }

    /// Decides one evaluation and explains it, changing nothing: no approval is opened or
    /// used (an `@approval` permit shows as `approval_required`), and the only record written
    /// is this explanation's own `access.explain`. Returns the decision with the engine that
    /// made it, so the policy text shown is from the version that decided.
    pub async fn explain(&self, caller: &Caller, ev: &Evaluation) -> Result<(Decision, Arc<Engine>), ApiError> {
        caller.require_admin()?;
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, std::slice::from_ref(ev))?;
        let d = self.decide_one(&engine, ev).await?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AccessExplain).detail([
            ("policy_version", d.policy_version.into()),
            ("decision", serde_json::to_value(d.outcome).unwrap_or_default()),
            ("reasons", d.reasons.clone().into()),
            ("subject", json!({"type": ev.subject.etype, "id": ev.subject.id})),
            ("action", ev.action.name.clone().into()),
            ("resource", json!({"type": ev.resource.etype, "id": ev.resource.id})),
        ]);
        self.store.append_audit(vec![audit]).await?;
        Ok((d, engine))
    }

    /// Only the admin credential may state facts Remit vouches for (e.g. to test a policy
    /// written against a task's context with `remit policy test`); every other caller gets a
    /// 400 naming the field. Names are length-checked for everyone.
    fn check_caller_facts(&self, caller: &Caller, engine: &Engine, evals: &[Evaluation]) -> Result<(), ApiError> {
        let max_id = self.cfg.limits.max_entity_id_bytes;
        for ev in evals {
            ev.check_lengths(max_id)?;
            if !matches!(caller, Caller::Admin { .. }) {
                ev.refuse_vouched_facts(engine)?;
            }
        }
        Ok(())
    }

    /// Decides a list of evaluations in order, stopping after the first decision equal to
    /// `stop_on` (the short-circuit semantics), and audits every decision made.
    pub async fn evaluate(
        &self,
        caller: &Caller,
        evals: &[Evaluation],
        stop_on: Option<bool>,
    ) -> Result<Vec<Answer>, ApiError> {
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, evals)?;
        let mut out = Vec::with_capacity(evals.len());
        let mut events = Vec::with_capacity(evals.len());
        let now = self.clock.now();
        for ev in evals {
            let d = self.decide_one(&engine, ev).await?;
            let answer = if d.outcome == Outcome::ApprovalRequired {
                self.settle_approval(caller, &engine, ev, d).await?
            } else {
                Answer { decision: d, approval_id: None, approval_expires_at: None }
            };
            let d = &answer.decision;
            let allowed = d.allowed();
            events.push(
                AuditEvent::new(now, caller.actor(), AuditAction::AccessEvaluate)
                    .outcome(if allowed { AuditOutcome::Success } else { AuditOutcome::Denied })
                    .detail([
                        ("policy_version", d.policy_version.into()),
                        ("decision", serde_json::to_value(d.outcome).unwrap_or_default()),
                        ("reasons", d.reasons.clone().into()),
                        ("subject", json!({"type": ev.subject.etype, "id": ev.subject.id})),
                        ("action", ev.action.name.clone().into()),
                        ("resource", json!({"type": ev.resource.etype, "id": ev.resource.id})),
                        ("approval_id", answer.approval_id.clone().into()),
                    ]),
            );
            self.count_decision(d.outcome);
            out.push(answer);
            if stop_on == Some(allowed) {
                break;
            }
        }
        self.store.append_audit(events).await?;
        Ok(out)
    }
}

/// What an AuthZEN search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Subject,
    Resource,
    Action,
}

impl SearchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

/// Most candidates one search request evaluates (the rest is reached by paging).
const MAX_SCANNED: usize = 100_000;
/// Candidates read from the store at a time.
const SCAN_PAGE: u32 = 500;

impl App {
    /// AuthZEN search: the subjects, resources or actions for which the rest of the request
    /// is allowed. Subjects and resources are the attribute store's entities of the mapped
    /// type, scanned in id order from `token`; actions are the schema's. Returns the results
    /// (at most `limit`) and the next page token (`""` on the last page). One audit record
    /// per search.
    pub async fn search(
        &self,
        caller: &Caller,
        kind: SearchKind,
        template: Evaluation,
        token: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, String), ApiError> {
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, std::slice::from_ref(&template))?;
        let mut results = Vec::new();
        let mut next = String::new();
        let mut scanned = 0usize;
        match kind {
            SearchKind::Action => {
                let names: Vec<String> = engine
                    .schema()
                    .actions()
                    .map(|a| a.id().unescaped().to_owned())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for name in names {
                    let mut ev = template.clone();
                    ev.action = Action { name: Some(name.clone()), properties: None };
                    scanned += 1;
                    if self.decide_one(&engine, &ev).await?.allowed() {
                        results.push(json!({"name": name}));
                    }
                }
            }
            SearchKind::Subject | SearchKind::Resource => {
                let searched = if kind == SearchKind::Subject { &template.subject } else { &template.resource };
                let authzen_type = searched.etype.clone().unwrap_or_default();
                let cedar_type = if kind == SearchKind::Subject {
                    engine.subject_type(&authzen_type)
                } else {
                    engine.resource_type(&authzen_type)
                };
                let mut cursor = token.filter(|t| !t.is_empty());
                'scan: loop {
                    let page = self.store.list_entities(&cedar_type, cursor.clone(), SCAN_PAGE).await?;
                    let Some(last) = page.last().map(|e| e.id.clone()) else { break };
                    for cand in &page {
                        scanned += 1;
                        let mut ev = template.clone();
                        let e = Entity {
                            etype: Some(authzen_type.clone()),
                            id: Some(cand.id.clone()),
                            ..Default::default()
                        };
                        if kind == SearchKind::Subject {
                            ev.subject = Entity { properties: ev.subject.properties.clone(), ..e };
                        } else {
                            ev.resource = Entity { properties: ev.resource.properties.clone(), ..e };
                        }
                        if self.decide_one(&engine, &ev).await?.allowed() {
                            results.push(json!({"type": authzen_type, "id": cand.id}));
                            if results.len() >= limit {
                                next = cand.id.clone();
                                break 'scan;
                            }
                        }
                        if scanned >= MAX_SCANNED {
                            next = cand.id.clone();
                            break 'scan;
                        }
                    }
                    cursor = Some(last);
                }
                // A full last page that ended exactly at the limit may have nothing after it;
                // the caller's next request then simply returns an empty last page.
            }
        }
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AccessSearch).detail([
            ("kind", kind.as_str().into()),
            ("policy_version", engine.version().into()),
            ("scanned", scanned.into()),
            ("results", results.len().into()),
            ("subject", json!({"type": template.subject.etype, "id": template.subject.id})),
            ("action", template.action.name.clone().into()),
            ("resource", json!({"type": template.resource.etype, "id": template.resource.id})),
        ]);
        self.store.append_audit(vec![audit]).await?;
        Ok((results, next))
    }
}

/// A decision for an agent's task: the principal is the task behind a verified JWT-SVID.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDecisionRequest {
    /// The task's JWT-SVID, as presented to the PEP. Never stored or logged.
    pub token: String,
    pub action: Action,
    pub resource: Entity,
    /// Facts the PEP adds (e.g. `tool`, `target`, arguments); Remit's own facts win.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Value,
    /// On the retry of a call that needed approval: the approved request's id. It is used
    /// once, and only for the same task, action, resource, context and policy version.
    #[serde(default)]
    pub approval: Option<String>,
}

/// The answer to a task's decision.
#[derive(Debug, Clone)]
pub struct TaskAnswer {
    pub decision: Decision,
    /// The task the token named (`None` when the token was not a valid task token).
    pub task: Option<String>,
    /// The approval request opened for this call, or the approval presented.
    pub approval_id: Option<String>,
    pub approval_expires_at: Option<remit_core::time::UnixMillis>,
    /// The tool this call uses, as recorded for the task (when allowed).
    pub tool: Option<String>,
}

/// A sensitivity as a number policies can compare: its position in the declared order
/// (`public` 0 < `internal` 1 < `confidential` 2 < `restricted` 3).
fn rank(s: remit_core::model::Sensitivity) -> i64 {
    s as i64
}

/// Longest tool name recorded for a task.
const MAX_TOOL_NAME: usize = 256;

impl App {
    /// Decides an action of a live task: verifies the token (signature, expiry, trust
    /// domain), checks every kill switch that covers it, then decides with the task as
    /// principal (its workflow and agent as entities) and the request-time context. An
    /// inactive or invalid token is a deny, never an error, so a PEP fails closed.
    ///
    /// The call's tool is the resource's id when the resource is a `Tool`, else the PEP's
    /// `context.tool`; an allowed call records it as used by the task, and later decisions
    /// see it in `context.tools_used`. A call that needs approval opens an approval request
    /// bound to this task and call; the retry presenting the approved id is allowed once.
    pub async fn decide_task(&self, caller: &Caller, req: TaskDecisionRequest) -> Result<TaskAnswer, ApiError> {
        required(&req.action.name, "action.name")?;
        required(&req.resource.etype, "resource.type")?;
        required(&req.resource.id, "resource.id")?;
        let max_id = self.cfg.limits.max_entity_id_bytes;
        bounded(req.action.name.as_deref(), "action.name", max_id)?;
        bounded(req.resource.etype.as_deref(), "resource.type", max_id)?;
        bounded(req.resource.id.as_deref(), "resource.id", max_id)?;
        if !(req.context.is_null() || req.context.is_object()) {
            return Err(ApiError::BadRequest("`context` must be an object".into()));
        }
        let engine = self.engine();
        let now = self.clock.now();
        let resource_type = engine.resource_type(req.resource.etype.as_deref().unwrap_or_default());
        // The PEP's facts, without any it may not state (Remit computes those below, and an
        // absent one, such as `instance` for a task an admin started, must stay absent).
        let pep_ctx: Map<String, Value> = match &req.context {
            Value::Object(m) => {
                let mut m = remit_policy::strip_nulls_map(m.clone());
                m.retain(|k, _| !remit_policy::TASK_CONTEXT_FACTS.contains(&k.as_str()));
                m
            }
            _ => Map::new(),
        };
        let tool = if resource_type == "Tool" {
            req.resource.id.clone()
        } else {
            pep_ctx.get("tool").and_then(Value::as_str).map(str::to_owned)
        };
        if tool.as_ref().is_some_and(|t| t.is_empty() || t.len() > MAX_TOOL_NAME || t.chars().any(char::is_control)) {
            return Err(ApiError::BadRequest(format!("a tool name must be 1 to {MAX_TOOL_NAME} printable characters")));
        }
        let mut answer = TaskAnswer {
            decision: Decision {
                outcome: Outcome::Deny,
                policy_version: engine.version(),
                reasons: vec![],
                errors: vec![],
                approval: vec![],
            },
            task: None,
            approval_id: None,
            approval_expires_at: None,
            tool: None,
        };
        let verified = self.verify_jwt(&req.token, None).await.ok().and_then(|c| self.subject_of(&c).map(|s| (c, s)));
        let snap = match verified {
            Some((claims, remit_core::ids::Subject::Task { task, .. }))
                if claims.remit.task.as_deref() == Some(task.as_str()) =>
            {
                self.store.task_snapshot(&task).await?.map(|s| (s, claims.sub))
            }
            _ => None,
        };
        let mut record_tool = false;
        // Whose decision this is, for the audit record (every record about a task names its
        // workflow and agent, so `audit list --workflow` finds it).
        let mut about: Option<(String, String, Option<String>)> = None;
        match snap {
            None => answer.decision.errors.push("the token is not a valid task token".into()),
            Some((snap, spiffe_id)) => {
                answer.task = Some(snap.task.id.to_string());
                about = Some((
                    snap.task.workflow.to_string(),
                    snap.task.agent.to_string(),
                    snap.task.instance.as_ref().map(ToString::to_string),
                ));
                let live = remit_core::rules::task_liveness(
                    &snap.task,
                    &snap.workflow,
                    &snap.agent,
                    snap.instance.as_ref(),
                    now,
                );
                let allowed_tools = &snap.workflow.allowed_tools;
                if let remit_core::rules::Liveness::Inactive(why) = live {
                    answer.decision.errors.push(why.to_owned());
                } else if let Some(t) =
                    tool.as_ref().filter(|t| !allowed_tools.is_empty() && !allowed_tools.contains(t))
                {
                    // The workflow's tool list is an allow-list no policy can widen.
                    answer
                        .decision
                        .errors
                        .push(format!("tool `{t}` is not among workflow `{}`'s allowed tools", snap.workflow.name));
                } else {
                    let t = &snap.task;
                    let tools_used = self.store.tools_used(&t.id).await?;
                    let mut ctx = pep_ctx.clone();
                    let remit_facts = json!({
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
                    if let Value::Object(m) = remit_facts {
                        ctx.extend(m);
                    }
                    if let Some(i) = &t.instance {
                        ctx.insert("instance".into(), i.as_str().into());
                    }
                    if let Some(tool) = &tool {
                        ctx.insert("tool".into(), tool.as_str().into());
                    }
                    let wf = json!({"uid": {"type": "Workflow", "id": t.workflow.as_str()},
                        "attrs": {"owner": snap.workflow.owner, "ceiling": snap.workflow.ceiling.as_str(),
                                  "allowed_tools": snap.workflow.allowed_tools},
                        "parents": []});
                    let principal_json = json!({"uid": {"type": "Task", "id": t.id.as_str()},
                        "attrs": {"intent": t.intent, "sensitivity": t.sensitivity.as_str(), "agent": {"__entity": {"type": "Agent", "id": t.agent.as_str()}}},
                        "parents": [{"type": "Workflow", "id": t.workflow.as_str()}]});
                    let agent = json!({"uid": {"type": "Agent", "id": t.agent.as_str()}, "attrs": {}, "parents": []});
                    let mut ents = BTreeMap::new();
                    let resource = self.load_entity(&resource_type, &req.resource, &mut ents).await?;
                    let mut list: Vec<Part> = ents.into_values().collect();
                    list.extend([principal_json, wf, agent].map(Part::Json));
                    let principal = remit_policy::uid("Task", t.id.as_str()).map_err(ApiError::BadRequest)?;
                    let action = remit_policy::action(req.action.name.as_deref().unwrap_or_default())
                        .map_err(ApiError::BadRequest)?;
                    let context = remit_policy::context(&Value::Object(ctx)).map_err(ApiError::BadRequest)?;
                    let entities = remit_policy::entities_from(list).map_err(ApiError::BadRequest)?;
                    let d = engine.decide(
                        principal.clone(),
                        action.clone(),
                        resource.clone(),
                        context.clone(),
                        &entities,
                        false,
                    );
                    answer.decision = d;
                    if answer.decision.outcome == Outcome::ApprovalRequired {
                        let call = canonical(&json!({
                            "task": t.id.as_str(),
                            "action": {"name": req.action.name, "properties": req.action.properties},
                            "resource": {"type": req.resource.etype, "id": req.resource.id,
                                         "properties": req.resource.all_properties()},
                            "context": Value::Object(pep_ctx.clone()),
                        }));
                        let bound = BoundCall {
                            digest: hex_sha256(&call),
                            call,
                            task: Some(t.id.to_string()),
                            workflow: Some(t.workflow.to_string()),
                            agent: Some(t.agent.to_string()),
                            requested_by: spiffe_id,
                        };
                        match self.approval_step(caller, bound, req.approval.clone(), &answer.decision).await? {
                            ApprovalStep::Used(id) => {
                                let asked = std::mem::take(&mut answer.decision.approval);
                                answer.decision = engine.decide(principal, action, resource, context, &entities, true);
                                answer.decision.approval = asked;
                                answer.approval_id = Some(id);
                            }
                            ApprovalStep::Unusable(id, why) => {
                                answer.decision.outcome = Outcome::Deny;
                                answer.decision.errors.push(why);
                                answer.approval_id = Some(id);
                            }
                            ApprovalStep::Opened(id, expires_at) => {
                                answer.approval_id = Some(id);
                                answer.approval_expires_at = Some(expires_at);
                            }
                        }
                    }
                    record_tool = answer.decision.allowed() && tool.is_some();
                }
            }
        }
        let d = &answer.decision;
        let mut e = AuditEvent::new(now, caller.actor(), AuditAction::AccessEvaluate)
            .outcome(if d.allowed() { AuditOutcome::Success } else { AuditOutcome::Denied })
            .detail([
                ("policy_version", d.policy_version.into()),
                ("decision", serde_json::to_value(d.outcome).unwrap_or_default()),
                ("reasons", d.reasons.clone().into()),
                ("errors", d.errors.clone().into()),
                ("action", req.action.name.clone().into()),
                ("resource", json!({"type": req.resource.etype, "id": req.resource.id})),
                ("tool", tool.clone().into()),
                ("approval_id", answer.approval_id.clone().into()),
            ]);
        if let Some(t) = &answer.task {
            e = e.task(t);
        }
        if let Some((wf, agent, instance)) = &about {
            e = e.workflow(wf).agent(agent);
            if let Some(i) = instance {
                e = e.with_detail_field("instance", i.clone().into());
            }
        }
        self.count_decision(d.outcome);
        match (&answer.task, &tool) {
            (Some(task), Some(tool)) if record_tool => {
                let id = remit_core::ids::TaskId::parse(task).map_err(|e| ApiError::Internal(e.to_string()))?;
                self.store.record_tool_use(&id, tool, now, e).await?;
                answer.tool = Some(tool.clone());
            }
            _ => self.store.append_audit(vec![e]).await?,
        }
        Ok(answer)
    }

    fn count_decision(&self, o: Outcome) {
        let label = match o {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        };
        self.metrics.decisions.get_or_create(&crate::metrics::Metrics::label(label)).inc();
    }
}
