//! Admin endpoints: workflows, agents, join tokens, instance revocation, key rotation, status.
//! Every handler here requires the admin credential.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::ids::{AgentName, InstanceId, WorkflowName};
use remit_core::model::{KillTarget, Sensitivity};
use remit_core::rules::NewWorkflow;

use super::wire::*;
use super::{AppState, Auth, Body, Path, parse_id};
use crate::api::error::{ApiError, ErrorBody};

fn sensitivity(s: Option<&str>) -> Result<Sensitivity, ApiError> {
    s.map(|s| s.parse().map_err(|e: remit_core::DomainError| ApiError::BadRequest(e.to_string())))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Creates a workflow. Admin.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows and agents", request_body = CreateWorkflow,
    responses((status = 201, body = WorkflowView, description = "the new workflow"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 409, body = ErrorBody, description = "a workflow of that name exists")),
    security(("bearer" = [])))]
pub async fn create_workflow(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<CreateWorkflow>,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    caller.require_human_or_admin()?;
    let new = NewWorkflow {
        name: parse_id(&req.name, WorkflowName::parse)?,
        purpose: req.purpose,
        owner: req.owner,
        ceiling: sensitivity(req.ceiling.as_deref())?,
        allowed_tools: req.allowed_tools,
        max_task_ttl_secs: req.max_task_ttl_seconds,
        max_delegation_depth: req.max_delegation_depth,
        trust: req.trust.map(Into::into).unwrap_or_default(),
    };
    let wf = app.create_workflow(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(wf.into())))
}

/// Lists workflows. Admin.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows and agents",
    responses((status = 200, body = [WorkflowView], description = "every workflow"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn list_workflows(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<Vec<WorkflowView>>, ApiError> {
    Ok(Json(app.list_workflows(&caller).await?.into_iter().map(Into::into).collect()))
}

/// Shows one workflow. Admin.
#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows and agents", params(("name" = String, Path, description = "workflow name")),
    responses((status = 200, body = WorkflowView, description = "the workflow"),
              (status = 400, body = ErrorBody, description = "not a valid workflow name"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn get_workflow(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.workflow(&caller, &name).await?.into()))
}

/// Kill switch: suspends a workflow and revokes all its live tasks. Admin.
#[utoipa::path(post, path = "/v1/workflows/{name}/suspend", tag = "workflows and agents", params(("name" = String, Path, description = "workflow name")),
    request_body = Reason,
    responses((status = 200, body = KillReportView, description = "what was revoked"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn suspend_workflow(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<KillReportView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.suspend_workflow(&caller, &name, &r.reason).await?.into()))
}

/// Resumes a suspended workflow (revoked tasks stay revoked). Admin.
#[utoipa::path(post, path = "/v1/workflows/{name}/resume", tag = "workflows and agents", params(("name" = String, Path, description = "workflow name")),
    request_body = Reason,
    responses((status = 200, body = WorkflowView, description = "the workflow, active again"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such workflow"),
              (status = 409, body = ErrorBody, description = "the workflow is not suspended")),
    security(("bearer" = [])))]
pub async fn resume_workflow(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<WorkflowView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.resume_workflow(&caller, &name, &r.reason).await?.into()))
}

/// Replaces a workflow's allowed tools (the allow-list no policy can widen); the next decision
/// of each of its tasks, on every replica, uses the new list. Admin.
#[utoipa::path(put, path = "/v1/workflows/{name}/tools", tag = "workflows and agents",
    params(("name" = String, Path, description = "the workflow's name")),
    request_body = SetTools,
    responses((status = 200, body = WorkflowView, description = "the workflow with its new tools"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn set_workflow_tools(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<SetTools>,
) -> Result<Json<WorkflowView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.set_workflow_tools(&caller, &name, b.tools, &b.reason).await?.into()))
}

/// Replaces a workflow's transitive-trust rules: which agent may start child tasks for which,
/// and whether workers may delegate further. Needs `workflow.update`.
#[utoipa::path(put, path = "/v1/workflows/{name}/trust", tag = "workflows and agents",
    params(("name" = String, Path, description = "the workflow's name")),
    request_body = SetTrust,
    responses((status = 200, body = WorkflowView, description = "the workflow with its new rules"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn set_workflow_trust(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<SetTrust>,
) -> Result<Json<WorkflowView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.set_workflow_trust(&caller, &name, b.trust.into(), &b.reason).await?.into()))
}

/// Registers an agent. Admin.
#[utoipa::path(post, path = "/v1/agents", tag = "workflows and agents", request_body = CreateAgent,
    responses((status = 201, body = AgentView, description = "the new agent"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "a named workflow does not exist"),
              (status = 409, body = ErrorBody, description = "an agent of that name exists")),
    security(("bearer" = [])))]
pub async fn create_agent(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    caller.require_human_or_admin()?;
    let name = parse_id(&req.name, AgentName::parse)?;
    let wfs = req.workflows.iter().map(|w| parse_id(w, WorkflowName::parse)).collect::<Result<Vec<_>, _>>()?;
    let agent = app.create_agent(&caller, name, req.owner, wfs).await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// Lists agents. Admin.
#[utoipa::path(get, path = "/v1/agents", tag = "workflows and agents",
    responses((status = 200, body = [AgentView], description = "every agent"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn list_agents(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Vec<AgentView>>, ApiError> {
    Ok(Json(app.list_agents(&caller).await?.into_iter().map(Into::into).collect()))
}

/// Shows one agent. Admin.
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "workflows and agents", params(("name" = String, Path, description = "agent name")),
    responses((status = 200, body = AgentView, description = "the agent"),
              (status = 400, body = ErrorBody, description = "not a valid agent name"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such agent")),
    security(("bearer" = [])))]
pub async fn get_agent(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let name = parse_id(&name, AgentName::parse)?;
    Ok(Json(app.agent(&caller, &name).await?.into()))
}

/// Kill switch: disables an agent, revoking its instances and their tasks. Admin.
#[utoipa::path(post, path = "/v1/agents/{name}/disable", tag = "workflows and agents", params(("name" = String, Path, description = "agent name")),
    request_body = Reason,
    responses((status = 200, body = KillReportView, description = "what was revoked"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such agent")),
    security(("bearer" = [])))]
pub async fn disable_agent(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<KillReportView>, ApiError> {
    let name = parse_id(&name, AgentName::parse)?;
    Ok(Json(app.disable_agent(&caller, &name, &r.reason).await?.into()))
}

/// Re-enables a disabled agent (revoked instances stay revoked). Admin.
#[utoipa::path(post, path = "/v1/agents/{name}/enable", tag = "workflows and agents", params(("name" = String, Path, description = "agent name")),
    request_body = Reason,
    responses((status = 200, body = AgentView, description = "the agent, active again"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such agent"),
              (status = 409, body = ErrorBody, description = "the agent is not disabled")),
    security(("bearer" = [])))]
pub async fn enable_agent(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<AgentView>, ApiError> {
    let name = parse_id(&name, AgentName::parse)?;
    Ok(Json(app.enable_agent(&caller, &name, &r.reason).await?.into()))
}

/// Creates a one-time join token for an agent; the secret is in this response only. Admin.
#[utoipa::path(post, path = "/v1/agents/{name}/join-tokens", tag = "workflows and agents", params(("name" = String, Path, description = "agent name")),
    request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenView, description = "the join token, with its one-time secret"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such agent"),
              (status = 409, body = ErrorBody, description = "the agent is disabled")),
    security(("bearer" = [])))]
pub async fn create_join_token(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(req): Body<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenView>), ApiError> {
    let name = parse_id(&name, AgentName::parse)?;
    let jt = app.create_join_token(&caller, &name, req.ttl_seconds).await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenView {
            id: jt.record.id.to_string(),
            agent: jt.record.agent.to_string(),
            token: jt.token,
            expires_at: rfc3339(jt.record.expires_at),
        }),
    ))
}

/// Kill switch: revokes one agent instance and every task it started. Admin.
#[utoipa::path(post, path = "/v1/instances/{id}/revoke", tag = "instances",
    params(("id" = String, Path, description = "instance id")), request_body = Reason,
    responses((status = 200, body = KillReportView, description = "what was revoked"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 404, body = ErrorBody, description = "no such instance")),
    security(("bearer" = [])))]
pub async fn revoke_instance(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<KillReportView>, ApiError> {
    let id = parse_id(&id, InstanceId::parse)?;
    Ok(Json(app.kill(&caller, KillTarget::Instance(id), &r.reason).await?.into()))
}

/// Which key `/v1/keys/rotate` rotates.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// `jwt` (default): the JWT-SVID signing key; `x509`: the trust domain's X.509 CA;
    /// `jwt-model`, `jwt-tool`, `jwt-data`: the signing key of that tool class's own trust
    /// domain.
    pub purpose: Option<String>,
}

/// Rotates the JWT signing key (or, with `purpose=x509`, the X.509 CA); the old key stays
/// published until what it signed has expired. Admin.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "operations", params(RotateQuery),
    responses((status = 200, body = RotatedKeys, description = "the new signing key and bundle sequence"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 409, body = ErrorBody, description = "the signing key changed meanwhile; retry")),
    security(("bearer" = [])))]
pub async fn rotate_keys(
    State(app): State<AppState>,
    Auth(caller): Auth,
    super::Query(q): super::Query<RotateQuery>,
) -> Result<Json<RotatedKeys>, ApiError> {
    let (kid, seq) = match q.purpose.as_deref() {
        None | Some("jwt") => app.rotate_keys(&caller).await?,
        Some("x509") => app.rotate_x509_ca(&caller).await?,
        Some(p) => match remit_store::KeyPurpose::parse(p).and_then(remit_store::KeyPurpose::tool_class) {
            Some(class) => app.rotate_class_key(&caller, class).await?,
            None => {
                return Err(ApiError::BadRequest(format!(
                    "purpose: `{}` is not `jwt`, `x509`, `jwt-model`, `jwt-tool` or `jwt-data`",
                    remit_core::ids::truncate_for_error(p)
                )));
            }
        },
    };
    Ok(Json(RotatedKeys { kid, bundle_sequence: seq }))
}

/// The server's state at a glance: version, store, keys, the audit chain's head and last
/// checkpoint, the active policy version. Admin.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, body = crate::service::status::Status, description = "the server's state"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn status(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<crate::service::status::Status>, ApiError> {
    Ok(Json(app.status(&caller).await?))
}

/// Gives a workflow a new owner, taking it out of the orphans.
#[utoipa::path(put, path = "/v1/workflows/{name}/owner", tag = "workflows and agents",
    params(("name" = String, Path, description = "the workflow's name")),
    request_body = SetOwner,
    responses((status = 200, body = WorkflowView, description = "the workflow with its new owner"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow"),
              (status = 409, body = ErrorBody, description = "the new owner is deactivated")),
    security(("bearer" = [])))]
pub async fn set_workflow_owner(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<SetOwner>,
) -> Result<Json<WorkflowView>, ApiError> {
    let name = parse_id(&name, WorkflowName::parse)?;
    app.set_owner(&caller, remit_store::Owned::Workflow(name.clone()), &b.owner, &b.reason).await?;
    Ok(Json(app.workflow(&caller, &name).await?.into()))
}

/// Gives an agent a new owner, taking it out of the orphans.
#[utoipa::path(put, path = "/v1/agents/{name}/owner", tag = "workflows and agents",
    params(("name" = String, Path, description = "the agent's name")),
    request_body = SetOwner,
    responses((status = 200, body = AgentView, description = "the agent with its new owner"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such agent"),
              (status = 409, body = ErrorBody, description = "the new owner is deactivated")),
    security(("bearer" = [])))]
pub async fn set_agent_owner(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<SetOwner>,
) -> Result<Json<AgentView>, ApiError> {
    let name = parse_id(&name, AgentName::parse)?;
    app.set_owner(&caller, remit_store::Owned::Agent(name.clone()), &b.owner, &b.reason).await?;
    Ok(Json(app.agent(&caller, &name).await?.into()))
}

/// Workflows and agents whose owner was deactivated (by an admin or SCIM) and nobody has
/// taken over yet.
#[utoipa::path(get, path = "/v1/orphans", tag = "workflows and agents",
    responses((status = 200, body = Orphans, description = "the orphaned workflows and agents"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn orphans(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Orphans>, ApiError> {
    let o = app.orphans(&caller).await?;
    Ok(Json(Orphans {
        workflows: o.workflows.into_iter().map(Into::into).collect(),
        agents: o.agents.into_iter().map(Into::into).collect(),
        tools: o.tools.into_iter().map(|t| super::tools::view(&app, t)).collect(),
    }))
}
