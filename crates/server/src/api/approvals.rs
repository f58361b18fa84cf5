//! Approval requests: listed by and decided by a named human holding the admin credential
//! (for a task's request: its workflow's owner or configured approvers); read and waited for
//! by the task whose call it is.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use remit_core::approval::ApprovalState;
use remit_core::ids::ApprovalId;
use remit_core::time::UnixMillis;

use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::ApiError;

fn approval_id(s: &str) -> Result<ApprovalId, ApiError> {
    parse_id(s, ApprovalId::parse)
}

fn view(a: &remit_core::approval::Approval) -> Value {
    let t = |t: Option<UnixMillis>| t.map(UnixMillis::to_rfc3339);
    json!({
        "id": a.id, "state": a.state, "policy_version": a.policy_version,
        "request": serde_json::from_str::<Value>(&a.request).unwrap_or(Value::Null),
        "reasons": a.reasons, "requested_by": a.requested_by, "requested_at": a.requested_at.to_rfc3339(),
        "expires_at": a.expires_at.to_rfc3339(), "decided_by": a.decided_by, "decided_at": t(a.decided_at),
        "decision_reason": a.decision_reason, "used_at": t(a.used_at), "task": a.task, "workflow": a.workflow,
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

/// One approval request (for whoever may read it, as for `/events`).
#[utoipa::path(get, path = "/v1/approvals/{id}", responses((status = 200, description = "approval"), (status = 404, body = crate::api::error::ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = app.pdp.approval(&caller, &approval_id(&id)?).await?;
    Ok(Json(view(&a)))
}

/// Waits for a human's decision: Server-Sent Events, `event: state` with an
/// [`ApprovalWatchEvent`](crate::service::approval_watch::ApprovalWatchEvent) — the current
/// state at once, then the next one, after which the stream ends (`approved`, `denied`,
/// `used` or `expired`). For whoever may read the request: the admin, the task whose call it
/// is (with its own token), the instance that started that task or made the request.
/// Comments keep it alive every 15 s.
#[utoipa::path(get, path = "/v1/approvals/{id}/events", params(("id" = String, Path, description = "approval id")),
    responses((status = 200, content_type = "text/event-stream", body = crate::service::approval_watch::ApprovalWatchEvent,
        description = "state events"), (status = 404, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn watch(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let stream = app.watch_approval(&caller, &approval_id(&id)?).await?.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok(Event::default().event("state").data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
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
