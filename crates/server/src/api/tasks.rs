//! Agent-facing endpoints: join, renew, and the task lifecycle.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::model::TaskState;
use remit_store::TaskFilter;
use serde::Deserialize;

use super::wire::*;
use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};
use crate::service::tasks::StartTaskRequest;

/// Trades a one-time join token for an agent-instance identity. Anonymous (the join token
/// is the credential).
#[utoipa::path(post, path = "/v1/join", tag = "instances", operation_id = "join", request_body = JoinRequest,
    responses((status = 201, body = InstanceIdentity, description = "the new instance's identity and token"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "the join token is unknown, used, expired or revoked")))]
pub async fn join(
    State(app): State<AppState>,
    Body(req): Body<JoinRequest>,
) -> Result<(StatusCode, Json<InstanceIdentity>), ApiError> {
    let i = app.join(&req.join_token).await?;
    Ok((StatusCode::CREATED, Json(identity(i))))
}

fn identity(i: crate::service::tasks::Issued<remit_core::model::Instance>) -> InstanceIdentity {
    InstanceIdentity {
        instance_id: i.subject.id.to_string(),
        agent: i.subject.agent.to_string(),
        spiffe_id: i.spiffe_id,
        token: i.token,
        expires_at: rfc3339(i.subject.expires_at),
    }
}

/// Renews the calling instance's identity. Instance token.
#[utoipa::path(post, path = "/v1/instances/renew", tag = "instances",
    responses((status = 200, body = InstanceIdentity, description = "the renewed identity and a fresh token"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not an instance token"),
              (status = 409, body = ErrorBody, description = "the instance can no longer be renewed")),
    security(("bearer" = [])))]
pub async fn renew_instance(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<InstanceIdentity>, ApiError> {
    Ok(Json(identity(app.renew_instance(&caller).await?)))
}

/// Starts a task and issues its JWT-SVID. Admin (naming the agent) or an instance token.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = StartTaskBody,
    responses((status = 201, body = StartedTask, description = "the task and its JWT-SVID"),
        (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
        (status = 401, body = ErrorBody, description = "no valid bearer credential"),
        (status = 403, body = ErrorBody, description = "denied: workflow suspended, agent disabled or not allowed, sensitivity above ceiling"),
        (status = 404, body = ErrorBody, description = "no such workflow or agent")),
    security(("bearer" = [])))]
pub async fn start_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    headers: axum::http::HeaderMap,
    Body(req): Body<StartTaskBody>,
) -> Result<(StatusCode, Json<StartedTask>), ApiError> {
    // A `DPoP` proof (RFC 9449, with `ath` of the caller's token) binds the task token to its
    // key. A bound task starting a child already proved its key (once: the proof is spent), and
    // the child is bound to the same key.
    let bound_caller = match &caller {
        crate::service::Caller::Task { binding: Some(b), .. } => Some(b.jkt.clone()),
        _ => None,
    };
    let bind = match super::dpop_header(&headers).map_err(|e| ApiError::DpopRequired(e.to_string()))? {
        _ if bound_caller.is_some() => bound_caller,
        None => None,
        Some(proof) => {
            let bearer = super::bearer_of(&headers).unwrap_or_default();
            let p = app
                .dpop_proof(proof, "POST", "/v1/tasks", Some(bearer))
                .await
                .map_err(|e| ApiError::DpopRequired(e.to_string()))?;
            Some(p.jkt)
        }
    };
    let sensitivity = match req.sensitivity.as_deref() {
        Some(s) => Some(s.parse().map_err(|e: remit_core::DomainError| ApiError::BadRequest(e.to_string()))?),
        None => None,
    };
    let set = |v: Option<Vec<String>>| v.map(|v| v.into_iter().collect());
    let r = StartTaskRequest {
        workflow: req.workflow.as_deref().map(|w| parse_id(w, WorkflowName::parse)).transpose()?,
        agent: req.agent.as_deref().map(|a| parse_id(a, AgentName::parse)).transpose()?,
        intent: req.intent,
        sensitivity,
        ttl_secs: req.ttl_seconds,
        audience: req.audience,
        parent: req.parent.as_deref().map(|p| parse_id(p, TaskId::parse)).transpose()?,
        grant: req.grant.as_deref().map(|g| parse_id(g, remit_core::ids::GrantId::parse)).transpose()?,
        bind,
        narrow: remit_core::delegation::ChildRequest {
            tools: set(req.tools),
            scopes: set(req.scopes),
            resource_prefix: req.resource_prefix,
            max_calls: req.max_calls,
            may_delegate: req.may_delegate,
            ttl_secs: None,
            sensitivity: None,
        },
    };
    let issued = app.start_task(&caller, r).await?;
    let expires_at = rfc3339(issued.subject.expires_at);
    Ok((
        StatusCode::CREATED,
        Json(StartedTask {
            task: TaskView::new(issued.subject, &app.trust_domain, app.clock.now()),
            spiffe_id: issued.spiffe_id,
            token: issued.token,
            expires_at,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only tasks of this workflow.
    pub workflow: Option<String>,
    /// Only tasks of this agent.
    pub agent: Option<String>,
    /// Only tasks in this stored state: `active`, `completed`, `revoked` or `expired`.
    pub state: Option<String>,
    /// Default 100, at most 10000.
    pub limit: Option<u32>,
}

/// Lists tasks, newest first. Admin sees all; an instance sees its own.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = [TaskView], description = "tasks, newest first"),
              (status = 400, body = ErrorBody, description = "invalid filter (the message names the parameter)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token may not list tasks")),
    security(("bearer" = [])))]
pub async fn list_tasks(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let filter = TaskFilter {
        workflow: q.workflow.as_deref().map(|w| parse_id(w, WorkflowName::parse)).transpose()?,
        agent: q.agent.as_deref().map(|a| parse_id(a, AgentName::parse)).transpose()?,
        instance: None,
        state: q
            .state
            .as_deref()
            .map(|s| s.parse::<TaskState>().map_err(|e| ApiError::BadRequest(e.to_string())))
            .transpose()?,
        limit: q.limit.unwrap_or(100),
    };
    let now = app.clock.now();
    let tasks = app.list_tasks(&caller, filter).await?;
    Ok(Json(tasks.into_iter().map(|t| TaskView::new(t, &app.trust_domain, now)).collect()))
}

/// Shows one task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskView, description = "the task"),
              (status = 400, body = ErrorBody, description = "not a task id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 404, body = ErrorBody, description = "no such task (or not the caller's)")),
    security(("bearer" = [])))]
pub async fn get_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse_id(&id, TaskId::parse)?;
    let t = app.task(&caller, &id).await?;
    Ok(Json(TaskView::new(t, &app.trust_domain, app.clock.now())))
}

/// Completes a task; its token (and any sub-task's) is inactive from now on. Admin or the
/// instance that started it.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = KillReportView, description = "the task and its sub-tasks ended"),
              (status = 400, body = ErrorBody, description = "not a task id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 404, body = ErrorBody, description = "no such task (or not the caller's)"),
              (status = 409, body = ErrorBody, description = "the task is not active")),
    security(("bearer" = [])))]
pub async fn complete_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<KillReportView>, ApiError> {
    let id = parse_id(&id, TaskId::parse)?;
    Ok(Json(app.complete_task(&caller, &id).await?.into()))
}

/// Kill switch: revokes a task and everything issued under it. Admin.
#[utoipa::path(post, path = "/v1/tasks/{id}/revoke", tag = "tasks", params(("id" = String, Path, description = "task id")),
    request_body = Reason,
    responses((status = 200, body = KillReportView, description = "what was revoked"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such task"),
              (status = 409, body = ErrorBody, description = "the task is not active")),
    security(("bearer" = [])))]
pub async fn revoke_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<KillReportView>, ApiError> {
    let id = parse_id(&id, TaskId::parse)?;
    Ok(Json(app.revoke_task(&caller, &id, &r.reason).await?.into()))
}

/// Watches a task: a `text/event-stream` whose `state` events (JSON: `task`, `live`, `state`,
/// `reason`) say at once whether the task is live, and again the moment it stops being live
/// (revoked, completed, expired, or killed with its instance, agent or workflow); then it
/// ends. Admin, or the instance that started the task. Comments keep it alive every 15 s.
#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = "tasks", params(("id" = String, Path, description = "task id")),
    responses((status = 200, content_type = "text/event-stream", body = crate::service::watch::TaskWatchEvent,
                  description = "Server-Sent Events: `event: state`, `data:` one JSON state"),
              (status = 400, body = ErrorBody, description = "not a task id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 404, body = ErrorBody, description = "no such task (or not the caller's)")),
    security(("bearer" = [])))]
pub async fn watch_task(
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
    let id = parse_id(&id, TaskId::parse)?;
    let stream = app.watch_task(&caller, id).await?.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok(Event::default().event("state").data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}

/// How long to extend a task.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewTask {
    /// Seconds from now (default: the workflow's task TTL); capped by the task's lifetime, its
    /// instance, parent and grant.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// Renews a live task (long-running agents): re-evaluates what it was started under and the
/// policy's `renew` action if declared, extends its expiry and issues a fresh token (the old
/// one stays valid until its own expiry). The task itself, the instance that started it, or
/// the admin.
#[utoipa::path(post, path = "/v1/tasks/{id}/renew", tag = "tasks", params(("id" = String, Path, description = "task id")),
    request_body = RenewTask,
    responses((status = 200, body = StartedTask, description = "the task, renewed, and its new token"),
              (status = 400, body = ErrorBody, description = "not a task id, or a TTL out of bounds"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "no longer allowed (the message says why)"),
              (status = 404, body = ErrorBody, description = "no such task (or not the caller's)"),
              (status = 409, body = ErrorBody, description = "not live, or cannot be extended")),
    security(("bearer" = [])))]
pub async fn renew_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(b): Body<RenewTask>,
) -> Result<Json<StartedTask>, ApiError> {
    let id = parse_id(&id, TaskId::parse)?;
    let issued = app.renew_task(&caller, &id, b.ttl_seconds).await?;
    let expires_at = rfc3339(issued.subject.expires_at);
    Ok(Json(StartedTask {
        task: TaskView::new(issued.subject, &app.trust_domain, app.clock.now()),
        spiffe_id: issued.spiffe_id,
        token: issued.token,
        expires_at,
    }))
}
