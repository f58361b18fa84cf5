//! Approval requests: listed by and decided by a named human holding the admin credential
//! (for a task's request: its workflow's owner or configured approvers).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use remit_core::approval::ApprovalState;
use remit_core::ids::ApprovalId;

use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::ApiError;

fn approval_id(s: &str) -> Result<ApprovalId, ApiError> {
    parse_id(s, ApprovalId::parse)
}

fn view(a: &remit_core::approval::Approval) -> Value {
    json!({
        "id": a.id, "state": a.state, "policy_version": a.policy_version,
        "request": serde_json::from_str::<Value>(&a.request).unwrap_or(Value::Null),
        "reasons": a.reasons, "requested_by": a.requested_by, "requested_at": a.requested_at,
        "expires_at": a.expires_at, "decided_by": a.decided_by, "decided_at": a.decided_at,
        "decision_reason": a.decision_reason, "used_at": a.used_at, "task": a.task, "workflow": a.workflow,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied` or `used`.
    pub state: Option<String>,
    pub limit: Option<u32>,
}

/// Approval requests, newest first.
#[utoipa::path(get, path = "/v1/approvals", params(ListQuery), responses((status = 200, description = "approvals")), security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => {
            Some(ApprovalState::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown approval state `{s}`")))?)
        }
    };
    let list = app.pdp.list_approvals(&caller, state, q.limit.unwrap_or(100)).await?;
    Ok(Json(json!({"approvals": list.iter().map(view).collect::<Vec<_>>()})))
}

/// One approval request.
#[utoipa::path(get, path = "/v1/approvals/{id}", responses((status = 200, description = "approval"), (status = 404, body = crate::api::error::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = app.pdp.approval(&caller, &approval_id(&id)?).await?;
    Ok(Json(view(&a)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub reason: String,
}

/// Approves a pending request (the human is the `x-remit-operator`).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", request_body = DecideBody,
    responses((status = 200, description = "approved"), (status = 403, body = crate::api::error::ErrorBody), (status = 409, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<DecideBody>,
) -> Result<Json<Value>, ApiError> {
    let a = app.pdp.decide_approval(&caller, &approval_id(&id)?, true, &b.reason).await?;
    Ok(Json(json!({"id": a.id, "state": a.state})))
}

/// Denies a pending request.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", request_body = DecideBody,
    responses((status = 200, description = "denied"), (status = 403, body = crate::api::error::ErrorBody), (status = 409, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn deny(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<DecideBody>,
) -> Result<Json<Value>, ApiError> {
    let a = app.pdp.decide_approval(&caller, &approval_id(&id)?, false, &b.reason).await?;
    Ok(Json(json!({"id": a.id, "state": a.state})))
}
