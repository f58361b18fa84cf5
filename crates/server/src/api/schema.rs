//! Response bodies the handlers build, and the documented shapes of what they pass through
//! from other crates, so that `GET /openapi.json` types every response.
//!
//! Two kinds of types live here:
//! - response structs a handler returns (`#[derive(Serialize, ToSchema)]`); their JSON is
//!   exactly what the handler used to build by hand;
//! - `…Doc` types that only describe JSON produced elsewhere (the audit records, checkpoints
//!   and verification reports of `remit-core`, the key sets of `remit-token`, a policy
//!   bundle, the AuthZEN request bodies parsed leniently from JSON). They are never built;
//!   fields holding those foreign values point at them with `#[schema(value_type = …)]`.
//!
//! `tests/openapi.rs` checks real responses against these schemas.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::pdp::Verdict;

// ---------------------------------------------------------------- discovery and health

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: String,
}

/// A public EC P-256 key (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkDoc {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// Base64url X coordinate.
    pub x: String,
    /// Base64url Y coordinate.
    pub y: String,
    /// The key id (the `kid` of the JWTs it verifies).
    pub kid: String,
    /// `sig` in the JWK Set; `jwt-svid` or `x509-svid` in the SPIFFE bundle.
    #[serde(rename = "use")]
    pub use_: String,
    /// `ES256` (in the JWK Set only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// An `x509-svid` key's CA certificate (one standard-base64 DER element).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// An RFC 7517 JWK Set: the current signing key and the retired keys still accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSetDoc {
    pub keys: Vec<JwkDoc>,
}

/// A SPIFFE trust bundle: JWT-SVID keys and the X.509 CA certificates.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpiffeBundleDoc {
    pub keys: Vec<JwkDoc>,
    /// Grows with every key rotation.
    pub spiffe_sequence: u64,
    /// How often consumers should re-fetch, in seconds.
    pub spiffe_refresh_hint: u64,
}

/// OpenID-style discovery of the issuer, its keys and its token endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    /// The issuer (`iss` of every token), this server's public URL.
    pub issuer: String,
    pub jwks_uri: String,
    /// The token endpoint (RFC 8693 token exchange).
    pub token_endpoint: String,
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_types_supported: Vec<String>,
    /// `none`: the subject token is the authority.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9449: the algorithms accepted for DPoP proofs.
    pub dpop_signing_alg_values_supported: Vec<String>,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    /// The SPIFFE trust domain of every identity Remit issues.
    pub spiffe_trust_domain: String,
    pub spiffe_bundle_endpoint: String,
}

// ---------------------------------------------------------------- OAuth

/// Remit's own claims of a JWT-SVID.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemitClaimsDoc {
    /// `task` or `instance`.
    pub kind: String,
    pub agent: String,
    /// The agent instance (task and instance tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Task tokens only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The task id (task tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// SHA-256 (hex) of the task's stated intent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_hash: Option<String>,
    /// The task's data sensitivity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
}

/// An RFC 7662 introspection response. An inactive token answers `{"active": false}` and
/// nothing else; an active one carries its verified claims.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The SPIFFE ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Vec<String>>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `jwt-svid` for an instance or task token; `Bearer` or `DPoP` for a per-tool credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Same as `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// A per-tool credential's scopes, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A per-tool credential's actor chain (RFC 8693 §4.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub act: Option<serde_json::Value>,
    /// The key a DPoP-bound credential is bound to: `{"jkt": "<RFC 7638 thumbprint>"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cnf: Option<serde_json::Value>,
    /// Remit's claims (kind, agent, instance, workflow, task, intent hash, sensitivity, tool).
    #[serde(rename = "https://remit.dev/claims", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RemitClaimsDoc>)]
    pub remit: Option<remit_token::jwt::RemitClaims>,
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token` (token exchange) or
    /// `urn:ietf:params:oauth:token-type:jwt` (an instance's JWT-SVID, from `jwt-bearer`).
    pub issued_token_type: String,
    /// `Bearer`, or `DPoP` for a token bound to the caller's key.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The scopes granted, space-separated (fewer than asked when the policy narrowed them);
    /// token exchange only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The instance's SPIFFE ID (`jwt-bearer` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

/// An RFC 7009 revocation response: always the empty object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {}

// ---------------------------------------------------------------- audit

/// Whether the recorded action took effect.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcomeDoc {
    Success,
    Denied,
}

/// One record of the hash-chained audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecordDoc {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// A SPIFFE ID, `admin` (or `admin:<operator>`), or `join:<token id>`.
    pub actor: String,
    /// What happened, e.g. `task.start`, `access.evaluate`, `approval.approve`.
    pub action: String,
    pub outcome: AuditOutcomeDoc,
    pub workflow: Option<String>,
    pub task: Option<String>,
    pub agent: Option<String>,
    pub reason: Option<String>,
    /// Further facts: a JSON object encoded as text with sorted keys, or empty.
    pub detail: String,
    /// Hex SHA-256 of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
}

/// What a successful verification covered.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReportDoc {
    /// Records verified (the chain's head sequence number).
    pub records: u64,
    pub head_hash: String,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    pub last_checkpoint_seq: u64,
}

/// The outcome of `POST /v1/audit/verify`: `ok` with a report, or not `ok` with the first
/// break in the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// When `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<VerifyReportDoc>)]
    pub report: Option<remit_core::audit::VerifyReport>,
    /// When not `ok`: the first problem, e.g. `record 5: hash does not match its contents
    /// (record edited)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When not `ok`: the same problem in a structured debug form.
    #[serde(rename = "break", skip_serializing_if = "Option::is_none")]
    pub brk: Option<String>,
}

/// A signed statement "the chain had `seq` records, the last with hash `head_hash`".
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointDoc {
    pub seq: u64,
    pub head_hash: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// The audit key that signed it.
    pub key_id: String,
    /// Base64url ES256 signature.
    pub signature: String,
}

/// The checkpoint just signed, or null when the head has not moved since the last one.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointResult {
    #[schema(value_type = Option<CheckpointDoc>)]
    pub checkpoint: Option<remit_core::audit::Checkpoint>,
}

// ---------------------------------------------------------------- policies and entities

/// How AuthZEN `type`s name Cedar entity types; unmapped types are used verbatim.
#[derive(Debug, Serialize, ToSchema)]
pub struct MappingDoc {
    /// AuthZEN subject type → Cedar entity type.
    #[serde(default)]
    pub subject_types: BTreeMap<String, String>,
    /// AuthZEN resource type → Cedar entity type.
    #[serde(default)]
    pub resource_types: BTreeMap<String, String>,
}

/// One Cedar policy file of a bundle.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyFileDoc {
    pub name: String,
    /// Cedar policy text.
    pub source: String,
}

/// A policy bundle, as pushed and stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyBundleDoc {
    pub policies: Vec<PolicyFileDoc>,
    /// Cedar schema (Cedar syntax) extending Remit's base schema; may be empty.
    #[serde(default)]
    pub schema: String,
    #[serde(default)]
    pub mapping: MappingDoc,
}

/// The version a push made active.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersion {
    pub version: u64,
}

/// The active bundle; version 0 and a null bundle when none was ever pushed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivePolicy {
    pub version: u64,
    /// RFC 3339 (absent when no bundle was pushed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Who pushed it (absent when no bundle was pushed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[schema(value_type = Option<PolicyBundleDoc>)]
    pub bundle: Value,
}

/// How many entities were stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitiesStored {
    pub stored: usize,
}

// ---------------------------------------------------------------- decisions

/// The approval request behind a task decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskApproval {
    /// The approval request's id; present it as `approval` on the retry.
    pub id: String,
    /// When the request expires (RFC 3339), if known.
    pub expires_at: Option<String>,
    /// The `@approval` texts of the policies that asked for it.
    pub reasons: Vec<String>,
}

/// A decision on an agent's task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDecision {
    /// Whether the call may go ahead.
    pub decision: bool,
    pub outcome: Verdict,
    /// The policy version that decided.
    pub policy_version: u64,
    /// Policies that determined the outcome.
    pub reasons: Vec<String>,
    /// Evaluation errors (they explain a deny).
    pub errors: Vec<String>,
    /// The task the token named (null when the token was not a valid task token).
    pub task: Option<String>,
    /// The tool this call uses, as recorded for the task (when allowed).
    pub tool: Option<String>,
    /// The approval request opened for this call, or the one presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<TaskApproval>,
}

/// A policy's outcome.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcomeDoc {
    Allow,
    Deny,
    ApprovalRequired,
}

/// A decision with its reasons (nothing is opened, used or changed).
#[derive(Debug, Serialize, ToSchema)]
pub struct Explanation {
    #[schema(value_type = PolicyOutcomeDoc)]
    pub outcome: remit_policy::Outcome,
    /// Whether the outcome is `allow`.
    pub decision: bool,
    pub policy_version: u64,
    /// Ids of the policies that decided.
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
    /// For `approval_required`: the `@approval` texts of the deciding permits.
    pub approval: Vec<String>,
    /// The source of each deciding policy, by id, from the version that decided.
    pub policies: BTreeMap<String, String>,
}

// ---------------------------------------------------------------- approvals

/// Where an approval request is in its lifecycle.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStateDoc {
    Pending,
    Approved,
    Denied,
    Used,
}

/// An approval request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    /// The stored state (a pending request past `expires_at` can no longer be decided).
    #[schema(value_type = ApprovalStateDoc)]
    pub state: remit_core::approval::ApprovalState,
    /// The policy version that asked for it; the retry must be decided under the same one.
    pub policy_version: u64,
    /// The call to approve (subject, action, resource, context), for the approver to read.
    #[schema(value_type = Option<Object>)]
    pub request: Value,
    /// The `@approval` texts of the policies that asked.
    pub reasons: Vec<String>,
    pub requested_by: String,
    /// RFC 3339.
    pub requested_at: String,
    /// RFC 3339.
    pub expires_at: String,
    pub decided_by: Option<String>,
    /// RFC 3339.
    pub decided_at: Option<String>,
    pub decision_reason: Option<String>,
    /// RFC 3339.
    pub used_at: Option<String>,
    /// The task whose call it is (task-token decisions).
    pub task: Option<String>,
    /// That task's workflow.
    pub workflow: Option<String>,
}

/// Approval requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
}

/// The request a human just approved or denied.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDecided {
    pub id: String,
    #[schema(value_type = ApprovalStateDoc)]
    pub state: remit_core::approval::ApprovalState,
}

// ---------------------------------------------------------------- AuthZEN

/// Why a deny is not final: an approval to wait for, or one still waiting for a human.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationContext {
    /// True when this call opened an approval request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_required: Option<bool>,
    /// True when the approval presented is still waiting for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_pending: Option<bool>,
    /// The request to wait for; retry with `context.remit_approval` set to it.
    pub approval_id: Option<String>,
    /// When the request expires (RFC 3339).
    pub expires_at: Option<String>,
    /// The `@approval` texts of the deciding permits.
    pub approval: Vec<String>,
    pub policy_version: u64,
}

/// An AuthZEN decision: a deny is a 200 with `decision: false`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationResponse {
    pub decision: bool,
    /// Present only when the call needs (or waits for) a human's approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<EvaluationContext>,
}

/// One decision per evaluation, in order (fewer with a short-circuiting semantic).
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationsBatch {
    pub evaluations: Vec<EvaluationResponse>,
}

/// The answer to `/access/v1/evaluations`: a batch, or a single decision when the request had
/// no (or an empty) `evaluations` array.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EvaluationsResponse {
    Batch(EvaluationsBatch),
    Single(EvaluationResponse),
}

/// AuthZEN 1.0 PDP metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthZenConfiguration {
    pub policy_decision_point: String,
    pub access_evaluation_endpoint: String,
    pub access_evaluations_endpoint: String,
    pub search_subject_endpoint: String,
    pub search_resource_endpoint: String,
    pub search_action_endpoint: String,
}

/// A subject or resource a search found.
#[derive(Debug, Serialize, ToSchema)]
pub struct FoundEntityDoc {
    #[serde(rename = "type")]
    pub etype: String,
    pub id: String,
}

/// An action a search found.
#[derive(Debug, Serialize, ToSchema)]
pub struct FoundActionDoc {
    pub name: String,
}

/// Where a paginated search goes on.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    /// Send it back as `page.token` for the next page; empty on the last page.
    pub next_token: String,
}

/// Subjects or resources the rest of the request allows.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitySearchResponse {
    #[schema(value_type = Vec<FoundEntityDoc>)]
    pub results: Vec<Value>,
    /// Present while there is more, and on the last page of a paginated sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<SearchPage>,
}

/// Actions the rest of the request allows.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionSearchResponse {
    #[schema(value_type = Vec<FoundActionDoc>)]
    pub results: Vec<Value>,
    /// Present while there is more, and on the last page of a paginated sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<SearchPage>,
}

/// An AuthZEN subject or resource as a request names it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntityRefDoc {
    #[serde(rename = "type")]
    pub etype: String,
    pub id: String,
    /// Attributes the caller states (not for Remit's own entity types).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

/// An AuthZEN action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionRefDoc {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

/// An AuthZEN access evaluation request. `context.remit_approval` presents an approved
/// request's id on the retry of a call that needed approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationRequestDoc {
    pub subject: EntityRefDoc,
    pub action: ActionRefDoc,
    pub resource: EntityRefDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// One item of a batch: each part it omits is taken from the request's top level.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationItemDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<EntityRefDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRefDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<EntityRefDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// How a batch is evaluated.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationsSemanticDoc {
    /// Every item (the default).
    ExecuteAll,
    /// Stop after the first deny.
    DenyOnFirstDeny,
    /// Stop after the first permit.
    PermitOnFirstPermit,
}

/// Batch options.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationsOptionsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluations_semantic: Option<EvaluationsSemanticDoc>,
}

/// An AuthZEN batch request: top-level `subject`, `action`, `resource` and `context` are
/// defaults for every item; without `evaluations` it is one evaluation of the top level.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationsRequestDoc {
    /// The defaults: the same members as an item.
    #[serde(flatten)]
    pub defaults: EvaluationItemDoc,
    /// At most 1000 items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Vec<EvaluationItemDoc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<EvaluationsOptionsDoc>,
}

/// A search entity: `type` is required; the searched entity's `id` is ignored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchEntityDoc {
    #[serde(rename = "type")]
    pub etype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

/// A search action: `name` is required except in an action search.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchActionDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
}

/// Paging of a search request.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPageRequestDoc {
    /// The previous page's `next_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Results per page: default 1000, at most 10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// An AuthZEN search request: everything but the searched-for part.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchRequestDoc {
    pub subject: SearchEntityDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<SearchActionDoc>,
    pub resource: SearchEntityDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<SearchPageRequestDoc>,
}
