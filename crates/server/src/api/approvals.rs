//! Approval requests: listed by and decided by a named human holding the admin credential
//! (for a task's request: its workflow's owner or configured approvers); read and waited for
//! by the task whose call it is.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use remit_core::approval::ApprovalState;
use remit_core::ids::ApprovalId;
use remit_core::time::UnixMillis;

use super::schema::{ApprovalDecided, ApprovalList, ApprovalView};
use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};

fn approval_id(s: &str) -> Result<ApprovalId, ApiError> {
    parse_id(s, ApprovalId::parse)
}

fn view(a: &remit_core::approval::Approval) -> ApprovalView {
    let t = |t: Option<UnixMillis>| t.map(UnixMillis::to_rfc3339);
    ApprovalView {
        id: a.id.to_string(),
        state: a.state,
        policy_version: a.policy_version,
        request: serde_json::from_str::<Value>(&a.request).unwrap_or(Value::Null),
        reasons: a.reasons.clone(),
        requested_by: a.requested_by.clone(),
        requested_at: a.requested_at.to_rfc3339(),
        expires_at: a.expires_at.to_rfc3339(),
        decided_by: a.decided_by.clone(),
        decided_at: t(a.decided_at),
        decision_reason: a.decision_reason.clone(),
        used_at: t(a.used_at),
        task: a.task.as_ref().map(ToString::to_string),
        workflow: a.workflow.as_ref().map(ToString::to_string),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `pending`, `approved`, `denied` or `used`.
    pub state: Option<String>,
    /// Default 100.
    pub limit: Option<u32>,
}

/// Approval requests, newest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", operation_id = "list_approvals", params(ListQuery),
    responses((status = 200, body = ApprovalList, description = "approval requests, newest first"),
              (status = 400, body = ErrorBody, description = "unknown state or invalid limit"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => {
            Some(ApprovalState::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown approval state `{s}`")))?)
        }
    };
    app.allow(&caller, remit_policy::admin::AdminAction::ApprovalRead, remit_policy::admin::AdminTarget::Installation)
        .await?;
    let list = app.pdp.list_approvals(&caller, state, q.limit.unwrap_or(100)).await?;
    Ok(Json(ApprovalList { approvals: list.iter().map(view).collect() }))
}

/// One approval request (for whoever may read it, as for `/events`).
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", operation_id = "get_approval", params(("id" = String, Path, description = "approval request id")),
    responses((status = 200, body = ApprovalView, description = "the approval request"),
              (status = 400, body = ErrorBody, description = "not an approval id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 404, body = ErrorBody, description = "no such request (or not the caller's to read)")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    let id = approval_id(&id)?;
    app.allow_on_approval(&caller, remit_policy::admin::AdminAction::ApprovalRead, &id).await?;
    let a = app.pdp.approval(&caller, &id).await?;
    Ok(Json(view(&a)))
}

/// Waits for a human's decision: Server-Sent Events, `event: state` with an
/// [`ApprovalWatchEvent`](crate::service::approval_watch::ApprovalWatchEvent) — the current
/// state at once, then the next one, after which the stream ends (`approved`, `denied`,
/// `used` or `expired`). For whoever may read the request: the admin, the task whose call it
/// is (with its own token), the instance that started that task or made the request.
/// Comments keep it alive every 15 s.
#[utoipa::path(get, path = "/v1/approvals/{id}/events", tag = "approvals", operation_id = "watch_approval", params(("id" = String, Path, description = "approval request id")),
    responses((status = 200, content_type = "text/event-stream", body = crate::service::approval_watch::ApprovalWatchEvent,
                  description = "Server-Sent Events: `event: state`, `data:` one JSON state"),
              (status = 400, body = ErrorBody, description = "not an approval id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 404, body = ErrorBody, description = "no such request (or not the caller's to read)")),
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
    /// Why; required and recorded in the audit log.
    pub reason: String,
}

/// Approves a pending request (the human is the `x-remit-operator`).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", operation_id = "approve_request", params(("id" = String, Path, description = "approval request id")),
    request_body = DecideBody,
    responses((status = 200, body = ApprovalDecided, description = "approved"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "no named human, not an approver of it, or the one who asked"),
              (status = 404, body = ErrorBody, description = "no such request"),
              (status = 409, body = ErrorBody, description = "no longer pending, expired, or its task has ended")),
    security(("bearer" = [])))]
pub async fn approve(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<DecideBody>,
) -> Result<Json<ApprovalDecided>, ApiError> {
    let id = approval_id(&id)?;
    app.allow_on_approval(&caller, remit_policy::admin::AdminAction::ApprovalDecide, &id).await?;
    let a = app.pdp.decide_approval(&caller, &id, true, &b.reason).await?;
    Ok(Json(ApprovalDecided { id: a.id.to_string(), state: a.state }))
}

/// Denies a pending request.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", operation_id = "deny_request", params(("id" = String, Path, description = "approval request id")),
    request_body = DecideBody,
    responses((status = 200, body = ApprovalDecided, description = "denied"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "no named human, not an approver of it, or the one who asked"),
              (status = 404, body = ErrorBody, description = "no such request"),
              (status = 409, body = ErrorBody, description = "no longer pending, expired, or its task has ended")),
    security(("bearer" = [])))]
pub async fn deny(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<DecideBody>,
) -> Result<Json<ApprovalDecided>, ApiError> {
    let id = approval_id(&id)?;
    app.allow_on_approval(&caller, remit_policy::admin::AdminAction::ApprovalDecide, &id).await?;
    let a = app.pdp.decide_approval(&caller, &id, false, &b.reason).await?;
    Ok(Json(ApprovalDecided { id: a.id.to_string(), state: a.state }))
}
