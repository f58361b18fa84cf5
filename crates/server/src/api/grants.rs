//! Human → agent grants: propose (returns the confirmation code, once), confirm (a second,
//! separate request by the same signed-in human, with the code), list, show, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::grant::{Grant, NewGrant};
use remit_core::ids::{AgentName, GrantId, WorkflowName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::{KillReportView, Reason, rfc3339};
use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};

/// A grant to propose.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeGrant {
    /// The agent that may act on your behalf.
    pub agent: String,
    /// The workflow it may act in.
    pub workflow: String,
    /// The tools it may use (default: the workflow's).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// The scopes / actions it may use (default: any the policy allows).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Resources its calls must be under.
    #[serde(default)]
    pub resource_prefix: Option<String>,
    /// The most allowed calls each task under it may make.
    #[serde(default)]
    pub max_calls: Option<u64>,
    /// How long the grant lasts, seconds (at most a day).
    pub ttl_seconds: u64,
    /// How deep its tasks may delegate further (default 0: not at all).
    #[serde(default)]
    pub max_depth: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    /// The human whose authority it is (`h-…`) and their email.
    pub human: String,
    pub human_email: String,
    pub agent: String,
    pub workflow: String,
    /// `tools`, `scopes`, `resource_prefix`, `max_calls` (absent: not narrowed), `may_delegate`.
    #[schema(value_type = Object)]
    pub authority: serde_json::Value,
    pub max_depth: u32,
    /// `proposed` (waiting for its human's confirmation), `active` or `revoked`; an active
    /// grant past `expires_at` is `expired`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl GrantView {
    fn new(g: Grant, now: remit_core::time::UnixMillis) -> Self {
        let state = match g.state {
            remit_core::grant::GrantState::Active if now >= g.expires_at => "expired",
            s => s.as_str(),
        };
        GrantView {
            id: g.id.to_string(),
            human: g.human.to_string(),
            human_email: g.human_email,
            agent: g.agent.to_string(),
            workflow: g.workflow.to_string(),
            authority: serde_json::to_value(&g.authority).unwrap_or_default(),
            max_depth: g.max_depth,
            state: state.into(),
            created_at: rfc3339(g.created_at),
            expires_at: rfc3339(g.expires_at),
            confirmed_at: g.confirmed_at.map(rfc3339),
            revoked_at: g.revoked_at.map(rfc3339),
        }
    }
}

/// A proposed grant and the code that confirms it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProposedGrant {
    pub grant: GrantView,
    /// Confirm with `POST /v1/grants/{id}/confirm` and this code (shown once, kept as a hash):
    /// a second, deliberate step by the same signed-in human.
    pub confirmation_code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmGrant {
    pub code: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GrantQuery {
    /// Every grant (needs `grant.read`), not only the caller's own.
    #[serde(default)]
    pub all: bool,
}

/// Proposes a grant to an agent: a signed-in human who may `grant.create` on the workflow
/// (its owner, or an admin). Usable only once confirmed.
#[utoipa::path(post, path = "/v1/grants", tag = "grants", operation_id = "propose_grant", request_body = ProposeGrant,
    responses((status = 201, body = ProposedGrant, description = "the proposed grant and its confirmation code"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not a signed-in human, or not allowed on the workflow"),
              (status = 404, body = ErrorBody, description = "no such workflow or agent")),
    security(("bearer" = [])))]
pub async fn propose(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(b): Body<ProposeGrant>,
) -> Result<(StatusCode, Json<ProposedGrant>), ApiError> {
    let set = |v: Option<Vec<String>>| v.map(|v| v.into_iter().collect());
    let req = NewGrant {
        agent: Some(parse_id(&b.agent, AgentName::parse)?),
        workflow: Some(parse_id(&b.workflow, WorkflowName::parse)?),
        tools: set(b.tools),
        scopes: set(b.scopes),
        resource_prefix: b.resource_prefix,
        max_calls: b.max_calls,
        ttl_secs: b.ttl_seconds,
        max_depth: b.max_depth,
    };
    let (g, code) = app.propose_grant(&caller, req).await?;
    let now = app.clock.now();
    Ok((StatusCode::CREATED, Json(ProposedGrant { grant: GrantView::new(g, now), confirmation_code: code })))
}

/// Confirms a proposed grant: the same signed-in human, with its confirmation code.
#[utoipa::path(post, path = "/v1/grants/{id}/confirm", tag = "grants", operation_id = "confirm_grant",
    params(("id" = String, Path, description = "grant id")), request_body = ConfirmGrant,
    responses((status = 200, body = GrantView, description = "the active grant"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not its human, or a wrong code"),
              (status = 404, body = ErrorBody, description = "no such grant"),
              (status = 409, body = ErrorBody, description = "not waiting for confirmation (confirmed, revoked or expired)")),
    security(("bearer" = [])))]
pub async fn confirm(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<ConfirmGrant>,
) -> Result<Json<GrantView>, ApiError> {
    let id = parse_id(&id, GrantId::parse)?;
    let g = app.confirm_grant(&caller, &id, &b.code).await?;
    Ok(Json(GrantView::new(g, app.clock.now())))
}

/// Revokes a grant and every task started under it, with their subtrees and credentials, at
/// once: its human, or whoever may `grant.revoke` on its workflow.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "grants", operation_id = "revoke_grant",
    params(("id" = String, Path, description = "grant id")), request_body = Reason,
    responses((status = 200, body = KillReportView, description = "what the revocation ended"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such grant"),
              (status = 409, body = ErrorBody, description = "already revoked")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<Reason>,
) -> Result<Json<KillReportView>, ApiError> {
    let id = parse_id(&id, GrantId::parse)?;
    Ok(Json(app.revoke_grant(&caller, &id, &b.reason).await?.into()))
}

/// Lists the caller's own grants (or, with `all=true`, every grant: needs `grant.read`).
#[utoipa::path(get, path = "/v1/grants", tag = "grants", operation_id = "list_grants", params(GrantQuery),
    responses((status = 200, body = [GrantView], description = "grants, newest first"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<GrantQuery>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    caller.require_human_or_admin()?;
    let now = app.clock.now();
    Ok(Json(app.list_grants(&caller, q.all).await?.into_iter().map(|g| GrantView::new(g, now)).collect()))
}

/// Shows one grant (its human, or whoever may `grant.read` on its workflow).
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "grants", operation_id = "get_grant",
    params(("id" = String, Path, description = "grant id")),
    responses((status = 200, body = GrantView, description = "the grant"),
              (status = 400, body = ErrorBody, description = "not a grant id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such grant")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<GrantView>, ApiError> {
    caller.require_human_or_admin()?;
    let id = parse_id(&id, GrantId::parse)?;
    Ok(Json(GrantView::new(app.grant(&caller, &id).await?, app.clock.now())))
}
