//! Wire types: what the HTTP API accepts and returns. Kept apart from the stored domain
//! types so the API can stay stable while storage changes.

use remit_core::model::{Agent, KillReport, Task, Workflow};
use remit_core::time::UnixMillis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: UnixMillis) -> String {
    t.to_rfc3339()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// 1-63 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
    pub name: String,
    /// What the workflow is for, in a sentence.
    pub purpose: String,
    /// Email of the human who answers for it.
    pub owner: String,
    /// public | internal | confidential | restricted (default internal)
    #[serde(default)]
    pub ceiling: Option<String>,
    /// Tools its tasks may use (an allow-list no policy can widen); empty: any.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Default 900 (15 minutes).
    #[serde(default)]
    pub max_task_ttl_seconds: Option<u64>,
    /// How deep tasks may delegate to sub-tasks.
    #[serde(default)]
    pub max_delegation_depth: Option<u32>,
    /// Which agent may delegate to which (default: none may).
    #[serde(default)]
    pub trust: Option<TrustRulesBody>,
}

/// A workflow's transitive-trust rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRulesBody {
    /// Who may start child tasks for whom: `{"from": "sup", "to": ["worker"]}` (`*` for any
    /// agent). No rule: no agent-to-agent delegation.
    #[serde(default)]
    pub delegations: Vec<DelegationRuleBody>,
    /// Whether a delegate (a child task) may delegate further (default false).
    #[serde(default)]
    pub workers_may_delegate: bool,
    /// Every task token must be DPoP-bound (started with a `DPoP` proof header).
    #[serde(default)]
    pub require_dpop: bool,
    /// Tools whose per-task database logins `remit exec` may put into a child's environment
    /// (none by default; each such login is audited).
    #[serde(default)]
    pub env_credentials: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegationRuleBody {
    /// An agent name, or `*`.
    pub from: String,
    /// Agent names, or `*`.
    pub to: Vec<String>,
}

impl From<TrustRulesBody> for remit_core::delegation::TrustRules {
    fn from(b: TrustRulesBody) -> Self {
        remit_core::delegation::TrustRules {
            delegations: b
                .delegations
                .into_iter()
                .map(|r| remit_core::delegation::DelegationRule { from: r.from, to: r.to })
                .collect(),
            workers_may_delegate: b.workers_may_delegate,
            require_dpop: b.require_dpop,
            env_credentials: b.env_credentials.into_iter().collect(),
        }
    }
}

impl From<remit_core::delegation::TrustRules> for TrustRulesBody {
    fn from(t: remit_core::delegation::TrustRules) -> Self {
        TrustRulesBody {
            delegations: t.delegations.into_iter().map(|r| DelegationRuleBody { from: r.from, to: r.to }).collect(),
            workers_may_delegate: t.workers_may_delegate,
            require_dpop: t.require_dpop,
            env_credentials: t.env_credentials.into_iter().collect(),
        }
    }
}

/// A workflow's new trust rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTrust {
    pub trust: TrustRulesBody,
    /// Why (recorded in the audit log).
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub name: String,
    pub purpose: String,
    /// Email of the human who answers for it.
    pub owner: String,
    /// That human's id (`h-…`).
    pub owner_id: Option<String>,
    /// RFC 3339: when its owner was deactivated, if nobody has taken it over since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphaned_at: Option<String>,
    /// The highest data sensitivity its tasks may handle: `public`, `internal`,
    /// `confidential` or `restricted`.
    pub ceiling: String,
    pub allowed_tools: Vec<String>,
    pub max_task_ttl_seconds: u64,
    pub max_delegation_depth: u32,
    /// Which agent may delegate to which.
    pub trust: TrustRulesBody,
    /// `active` or `suspended`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Workflow> for WorkflowView {
    fn from(w: Workflow) -> Self {
        WorkflowView {
            name: w.name.to_string(),
            purpose: w.purpose,
            owner: w.owner,
            owner_id: w.owner_id.map(|h| h.to_string()),
            orphaned_at: w.orphaned_at.map(rfc3339),
            ceiling: w.ceiling.to_string(),
            allowed_tools: w.allowed_tools,
            max_task_ttl_seconds: w.max_task_ttl_secs,
            max_delegation_depth: w.max_delegation_depth,
            trust: w.trust.into(),
            state: w.state.to_string(),
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1-63 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
    pub name: String,
    /// Email of the human who answers for it.
    pub owner: String,
    /// Workflows this agent may start tasks in.
    pub workflows: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    /// Email of the human who answers for it.
    pub owner: String,
    /// That human's id (`h-…`).
    pub owner_id: Option<String>,
    /// RFC 3339: when its owner was deactivated, if nobody has taken it over since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphaned_at: Option<String>,
    /// Workflows this agent may start tasks in.
    pub workflows: Vec<String>,
    /// `enabled` or `disabled`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        AgentView {
            name: a.name.to_string(),
            owner: a.owner,
            owner_id: a.owner_id.map(|h| h.to_string()),
            orphaned_at: a.orphaned_at.map(rfc3339),
            workflows: a.workflows.iter().map(ToString::to_string).collect(),
            state: a.state.to_string(),
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// A workflow's new allowed tools.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTools {
    /// The complete new list of tools its tasks may use (an allow-list; empty: no restriction
    /// beyond policy).
    pub tools: Vec<String>,
    /// Why (recorded in the audit log). At most 1024 bytes of printable text.
    pub reason: String,
}

/// A reason for a kill switch or a state change; required and recorded in the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// At most 1024 bytes of printable text.
    pub reason: String,
}

/// What a kill switch (or a completion) ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KillReportView {
    /// Ids of the tasks that ended now.
    pub tasks_revoked: Vec<String>,
    /// Ids of the agent instances revoked now.
    pub instances_revoked: Vec<String>,
    /// Database logins (leases) of the ended tasks now being removed in the background
    /// (`remit lease list --state revoking`).
    #[serde(default)]
    pub leases_pending: u64,
}

impl From<KillReport> for KillReportView {
    fn from(r: KillReport) -> Self {
        KillReportView {
            tasks_revoked: r.tasks_revoked.iter().map(ToString::to_string).collect(),
            instances_revoked: r.instances_revoked.iter().map(ToString::to_string).collect(),
            leases_pending: r.leases_pending,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Default 600.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenView {
    pub id: String,
    pub agent: String,
    /// The one-time secret; shown only in this response.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The one-time secret of a join token.
    pub join_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub agent: String,
    /// `spiffe://<trust domain>/agent/<agent>/instance/<id>`.
    pub spiffe_id: String,
    /// The instance JWT-SVID (audience: Remit's API).
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTaskBody {
    /// Required for a root task; a child belongs to its parent's workflow.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Required when the admin credential starts the task, and for a child (the worker
    /// agent); an instance starts root tasks as its own agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Start a child of this task (a supervisor's task token starts children of itself; its
    /// instance or the admin name the parent). The child's authority is the parent's,
    /// narrowed by the fields below; asking for more is a 403 naming the attribute.
    #[serde(default)]
    pub parent: Option<String>,
    /// The tools the child may use (⊆ the parent's).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// The scopes / actions the child may use (⊆ the parent's).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Resources the child's calls must name a resource under (within the parent's prefix).
    #[serde(default)]
    pub resource_prefix: Option<String>,
    /// The most allowed calls the child may make (≤ the parent's).
    #[serde(default)]
    pub max_calls: Option<u64>,
    /// Whether the child may delegate further (never when the parent may not).
    #[serde(default)]
    pub may_delegate: Option<bool>,
    /// Start a root task under this confirmed human grant (`g-…`): the grant's authority, on
    /// the human's behalf, never past the grant's end.
    #[serde(default)]
    pub grant: Option<String>,
    /// What the task is for; stored, and its SHA-256 goes into the token.
    pub intent: String,
    /// public | internal | confidential | restricted (default internal)
    #[serde(default)]
    pub sensitivity: Option<String>,
    /// At most the workflow's maximum; default 300 or the maximum if lower.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Audiences the task token is for (at least one).
    pub audience: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    /// The task's SPIFFE ID (the `sub` of its token).
    pub spiffe_id: String,
    pub workflow: String,
    pub agent: String,
    /// The instance that started it (null when the admin did).
    pub instance: Option<String>,
    /// The task it was delegated from.
    pub parent: Option<String>,
    pub intent: String,
    /// SHA-256 (hex) of `intent`.
    pub intent_hash: String,
    /// `public`, `internal`, `confidential` or `restricted`.
    pub sensitivity: String,
    pub audience: Vec<String>,
    /// The state now (`active`, `completed`, `revoked`, `expired`): a task past its
    /// deadline reads `expired`.
    pub state: String,
    /// Who started it: the actor (an instance's SPIFFE ID, or `admin`).
    pub started_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339, once it ended.
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// How many delegation hops from its root (0 for a root task).
    pub delegation_depth: u32,
    /// Its ancestors' task ids, root first.
    pub delegation_chain: Vec<String>,
    /// What it may use beyond its workflow's rules: `tools`, `scopes`, `resource_prefix`,
    /// `max_calls` (absent: not narrowed), `may_delegate`.
    #[schema(value_type = Object)]
    pub authority: serde_json::Value,
}

impl TaskView {
    pub fn new(t: Task, td: &remit_core::ids::TrustDomain, now: UnixMillis) -> Self {
        TaskView {
            spiffe_id: remit_core::ids::SpiffeId::task(td, &t.workflow, &t.id).to_string(),
            state: remit_core::rules::effective_state(&t, now).to_string(),
            id: t.id.to_string(),
            workflow: t.workflow.to_string(),
            agent: t.agent.to_string(),
            instance: t.instance.map(|i| i.to_string()),
            parent: t.parent.map(|p| p.to_string()),
            intent: t.intent,
            intent_hash: t.intent_hash,
            sensitivity: t.sensitivity.to_string(),
            audience: t.audience,
            started_by: t.started_by,
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
            ended_at: t.ended_at.map(rfc3339),
            end_reason: t.end_reason,
            delegation_depth: t.delegation.depth,
            delegation_chain: t.delegation.chain.iter().map(|h| h.task.to_string()).collect(),
            authority: serde_json::to_value(&t.delegation.authority).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartedTask {
    pub task: TaskView,
    pub spiffe_id: String,
    /// The task's JWT-SVID.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedKeys {
    /// The new signing key's id.
    pub kid: String,
    /// The SPIFFE bundle's new sequence number.
    pub bundle_sequence: u64,
}

// ---------------------------------------------------------------- AuthZEN and decisions

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

impl From<Entity> for crate::pdp::Party {
    fn from(e: Entity) -> Self {
        let properties = e.all_properties();
        crate::pdp::Party { etype: e.etype, id: e.id, properties }
    }
}

impl From<Action> for crate::pdp::ActionRef {
    fn from(a: Action) -> Self {
        crate::pdp::ActionRef { name: a.name, properties: a.properties }
    }
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

impl From<EntityIn> for crate::pdp::EntityPush {
    fn from(e: EntityIn) -> Self {
        crate::pdp::EntityPush { uid: e.uid, attrs: e.attrs, parents: e.parents, aliases: e.aliases }
    }
}

/// A decision for an agent's task: the principal is the task behind a verified JWT-SVID.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDecisionRequest {
    /// The task's JWT-SVID, as presented to the PEP asking on the task's behalf. Omitted
    /// when the task asks about its own action with its token as the bearer. Never stored or
    /// logged.
    #[serde(default)]
    pub token: Option<String>,
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

impl TaskDecisionRequest {
    /// The call, apart from the token.
    pub fn into_call(self) -> (Option<String>, crate::pdp::TaskCall) {
        let call = crate::pdp::TaskCall {
            action: self.action.into(),
            resource: self.resource.into(),
            context: self.context,
            approval: self.approval,
            no_approval_request: false,
            issuing: None,
            bind: None,
        };
        (self.token, call)
    }
}

/// A human known to Remit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HumanView {
    /// `h-` and 32 hex digits.
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// `unverified` (named as an owner, never signed in), `active` or `deactivated`.
    pub state: String,
    /// `admin`, `operator`, `approver`, `auditor`.
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The OpenID provider (issuer) they signed in through, if any.
    pub issuer: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
}

impl From<remit_core::human::Human> for HumanView {
    fn from(h: remit_core::human::Human) -> Self {
        HumanView {
            id: h.id.to_string(),
            email: h.email,
            display_name: h.display_name,
            state: h.state.as_str().into(),
            roles: h.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            groups: h.groups,
            issuer: h.external.map(|e| e.issuer),
            created_at: rfc3339(h.created_at),
            updated_at: rfc3339(h.updated_at),
            deactivated_at: h.deactivated_at.map(rfc3339),
        }
    }
}

/// A human's session (never its tokens).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `s-` and 32 hex digits.
    pub id: String,
    pub human: String,
    /// `oidc:<provider>` or `local`.
    pub method: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when the current access token stops working.
    pub expires_at: String,
    /// RFC 3339: when the session ends, however often it is refreshed.
    pub ends_at: String,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

impl From<remit_core::human::Session> for SessionView {
    fn from(s: remit_core::human::Session) -> Self {
        SessionView {
            id: s.id.to_string(),
            human: s.human.to_string(),
            method: s.method,
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            ends_at: rfc3339(s.refresh_until),
            revoked_at: s.revoked_at.map(rfc3339),
            revoke_reason: s.revoke_reason,
        }
    }
}

/// A human with their sessions (newest first).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HumanDetail {
    pub human: HumanView,
    pub sessions: Vec<SessionView>,
}

/// The signed-in human and the session acting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub human: HumanView,
    pub session: SessionView,
}

/// What deactivating a human did, in one transaction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeactivationView {
    pub human: HumanView,
    pub sessions_revoked: Vec<String>,
    pub workflows_orphaned: Vec<String>,
    pub agents_orphaned: Vec<String>,
}

/// A configured OpenID provider.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub issuer: String,
    /// Where a browser starts signing in (`GET`).
    pub login: String,
}

/// `remit login`'s last step, or a refresh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTokenRequest {
    /// `authorization_code` (the hand-off code from the loopback redirect, with the CLI's
    /// PKCE verifier) or `refresh_token`.
    pub grant_type: String,
    pub code: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
}

/// A session's tokens: shown once, stored nowhere by Remit (only their hashes).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionTokensView {
    /// `remit_s.…`: the bearer credential for Remit's API.
    pub access_token: String,
    /// `remit_r.…`: trades for new tokens once (`grant_type=refresh_token`).
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// RFC 3339.
    pub expires_at: String,
    pub session: String,
}

/// A new owner for a workflow or agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetOwner {
    /// The new owner's email (a human known to Remit, or made one, unverified).
    pub owner: String,
    /// Why (recorded in the audit log).
    pub reason: String,
}

/// Workflows and agents whose owner was deactivated, until someone takes them over.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Orphans {
    pub workflows: Vec<WorkflowView>,
    pub agents: Vec<AgentView>,
    pub tools: Vec<super::tools::ToolView>,
}

/// A local human (no identity provider), made by an admin.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocalHuman {
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    /// `admin`, `operator`, `approver`, `auditor`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// 12 to 1024 characters; stored only as an argon2id hash.
    pub password: String,
}

/// A local human signing in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSignIn {
    pub email: String,
    pub password: String,
    /// The authenticator's 6-digit code, once a second factor is enrolled.
    pub code: Option<String>,
}

/// A second factor to enrol: shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrolmentView {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/…` (RFC 6238, SHA-1, 6 digits, 30 s), for a QR code.
    pub uri: String,
}

/// A code from the authenticator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}
