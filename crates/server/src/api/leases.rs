//! Leases (database logins made for tasks): list, show, revoke. The logins themselves are
//! obtained on the proxy's listener (`POST /credentials/<tool>`); no route here returns a
//! password.

use axum::Json;
use axum::extract::State;
use remit_core::ids::{LeaseId, TaskId, ToolName, WorkflowName};
use remit_core::lease::{Lease, LeaseState};
use remit_store::LeaseFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::{Reason, rfc3339};
use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};

/// One lease.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub id: String,
    pub tool: String,
    pub task: String,
    pub workflow: String,
    pub agent: String,
    /// `postgres`.
    pub engine: String,
    /// The login's name at the engine (the role).
    pub handle: String,
    /// `active`, `revoking` or `revoked`.
    pub state: String,
    /// Revocation failed `STUCK_AFTER_ATTEMPTS` (6) times or more; still retried.
    pub stuck: bool,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_requested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// Failed revocation attempts.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl From<Lease> for LeaseView {
    fn from(l: Lease) -> Self {
        LeaseView {
            stuck: l.stuck(),
            id: l.id.to_string(),
            tool: l.tool.to_string(),
            task: l.task.to_string(),
            workflow: l.workflow.to_string(),
            agent: l.agent.to_string(),
            engine: l.engine.as_str().into(),
            handle: l.handle,
            state: l.state.as_str().into(),
            created_at: rfc3339(l.created_at),
            expires_at: rfc3339(l.expires_at),
            revoke_requested_at: l.revoke_requested_at.map(rfc3339),
            revoke_reason: l.revoke_reason,
            attempts: l.attempts,
            next_attempt_at: if l.state == LeaseState::Revoking { l.next_attempt_at.map(rfc3339) } else { None },
            last_error: l.last_error,
            revoked_at: l.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LeaseQuery {
    /// Only this task's leases.
    pub task: Option<String>,
    /// Only this workflow's.
    pub workflow: Option<String>,
    /// Only this tool's.
    pub tool: Option<String>,
    /// Only leases in this state: `active`, `revoking` or `revoked`.
    pub state: Option<String>,
    /// Only stuck leases (revocation failed 6 times or more).
    #[serde(default)]
    pub stuck: bool,
    /// Default 100, at most 10000.
    pub limit: Option<u32>,
}

/// Lists leases, newest first. Needs `lease.read`.
#[utoipa::path(get, path = "/v1/leases", tag = "leases", operation_id = "list_leases", params(LeaseQuery),
    responses((status = 200, body = [LeaseView], description = "leases, newest first"),
              (status = 400, body = ErrorBody, description = "invalid filter (the message names the parameter)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<LeaseQuery>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    caller.require_human_or_admin()?;
    let filter = LeaseFilter {
        task: q.task.as_deref().map(|t| parse_id(t, TaskId::parse)).transpose()?,
        workflow: q.workflow.as_deref().map(|w| parse_id(w, WorkflowName::parse)).transpose()?,
        tool: q.tool.as_deref().map(|t| parse_id(t, ToolName::parse)).transpose()?,
        state: q
            .state
            .as_deref()
            .map(|s| {
                LeaseState::parse(s)
                    .ok_or_else(|| ApiError::BadRequest("state: one of `active`, `revoking`, `revoked`".into()))
            })
            .transpose()?,
        stuck: q.stuck,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(app.leases(&caller, filter).await?.into_iter().map(Into::into).collect()))
}

/// One lease. Needs `lease.read`.
#[utoipa::path(get, path = "/v1/leases/{id}", tag = "leases", operation_id = "get_lease",
    params(("id" = String, Path, description = "the lease id (`l-…`)")),
    responses((status = 200, body = LeaseView, description = "the lease"),
              (status = 400, body = ErrorBody, description = "not a lease id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such lease")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    caller.require_human_or_admin()?;
    Ok(Json(app.lease(&caller, &parse_id(&id, LeaseId::parse)?).await?.into()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedLease {
    /// False when it was not active (already revoking or revoked).
    pub revoking: bool,
    pub lease: LeaseView,
}

/// Revokes one lease now: its login is removed in the background (its task goes on). Needs
/// `lease.revoke`.
#[utoipa::path(post, path = "/v1/leases/{id}/revoke", tag = "leases", operation_id = "revoke_lease",
    request_body = Reason,
    params(("id" = String, Path, description = "the lease id (`l-…`)")),
    responses((status = 200, body = RevokedLease, description = "the lease, now revoking"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such lease")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<RevokedLease>, ApiError> {
    caller.require_human_or_admin()?;
    let id = parse_id(&id, LeaseId::parse)?;
    let revoking = app.revoke_lease(&caller, &id, &r.reason).await?;
    let lease = app.lease(&caller, &id).await?.into();
    Ok(Json(RevokedLease { revoking, lease }))
}
