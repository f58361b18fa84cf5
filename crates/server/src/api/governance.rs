//! Governance: a workflow's governance settings (containment rules, recertification period)
//! and external risk signals.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use remit_core::ids::WorkflowName;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{AppState, Auth, Body, OPERATOR_HEADER, Path, bearer_of, parse_id};
use crate::api::error::{ApiError, ErrorBody};
use crate::governance::containment::{Effective, RiskSignal, Settings};
use crate::governance::recert::{Due, Recertify};
use crate::governance::report::{Report, Usage};
use crate::governance::reuse::{AcceptReuse, Reuse};

/// New settings and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSettings {
    pub settings: Settings,
    pub reason: String,
}

/// A risk signal was recorded.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RiskRecorded {
    pub task: String,
    pub recorded: bool,
}

/// A workflow's governance settings in effect (its own, or the defaults). Needs
/// `governance.read` (owners have it).
#[utoipa::path(get, path = "/v1/workflows/{name}/governance", tag = "governance", operation_id = "get_governance",
    params(("name" = String, Path, description = "the workflow")),
    responses((status = 200, body = Effective, description = "the settings in effect"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<Effective>, ApiError> {
    let w = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.governance_settings(&caller, &w).await?))
}

/// Replaces a workflow's governance settings: containment rules (checked) and the
/// recertification period. Needs `governance.manage`.
#[utoipa::path(put, path = "/v1/workflows/{name}/governance", tag = "governance", operation_id = "set_governance",
    params(("name" = String, Path, description = "the workflow")), request_body = SetSettings,
    responses((status = 200, body = Effective, description = "the settings now in effect"),
              (status = 400, body = ErrorBody, description = "an invalid rule (the message names it)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn set(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<SetSettings>,
) -> Result<Json<Effective>, ApiError> {
    let w = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.set_governance_settings(&caller, &w, b.settings, &b.reason).await?))
}

/// An external risk signal naming a task (a prompt-injection detector, a DLP system). Signed by
/// the detector with `Remit-Signature: t=…,v1=…` (HMAC-SHA256 of `t.body` with
/// `[governance] risk_secret_file`, within 5 minutes), or sent by an administrator with
/// `governance.manage`. Recorded as `security.risk_signal`; containment rules act on it. A
/// signed message acts once: sent again (a retry, a replay) it is answered `202` with
/// `recorded: false`.
#[utoipa::path(post, path = "/v1/signals/risk", tag = "governance", operation_id = "risk_signal",
    request_body = RiskSignal,
    responses((status = 202, body = RiskRecorded, description = "recorded"),
              (status = 400, body = ErrorBody, description = "invalid signal"),
              (status = 401, body = ErrorBody, description = "no valid signature or credential"),
              (status = 404, body = ErrorBody, description = "no such task")))]
pub async fn risk(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RiskRecorded>), ApiError> {
    let parse = |body: &[u8]| {
        serde_json::from_slice::<RiskSignal>(body)
            .map_err(|e| crate::error::Error::Invalid(format!("invalid risk signal: {e}")))
    };
    if let Some(sig) = headers.get(remit_token::webhook::HEADER).and_then(|v| v.to_str().ok()) {
        let (task, recorded) = app.signed_risk_signal(sig, &body, parse).await?;
        return Ok((StatusCode::ACCEPTED, Json(RiskRecorded { task, recorded })));
    }
    let token = bearer_of(&headers).ok_or_else(ApiError::unauthenticated)?;
    let operator = headers.get(OPERATOR_HEADER).and_then(|v| v.to_str().ok());
    let caller = app.authenticate(token, operator).await?;
    caller.require_human_or_admin()?;
    app.allow(
        &caller,
        remit_policy::admin::AdminAction::GovernanceManage,
        remit_policy::admin::AdminTarget::Installation,
    )
    .await?;
    let s = parse(&body)?;
    let task = s.task.clone();
    app.risk_signal(&caller.actor(), s).await?;
    Ok((StatusCode::ACCEPTED, Json(RiskRecorded { task, recorded: true })))
}

/// What is due for recertification: everything (with `governance.read`), or what the signed-in
/// human owns.
#[utoipa::path(get, path = "/v1/recertifications", tag = "governance", operation_id = "list_recertifications",
    responses((status = 200, body = [Due], description = "every agent, workflow and standing grant with its standing"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not a human or an administrator")),
    security(("bearer" = [])))]
pub async fn due(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Vec<Due>>, ApiError> {
    Ok(Json(app.recertifications(&caller).await?))
}

/// Recertifies an agent, workflow or grant: a signed-in human (its owner, or with
/// `recertify`) says why it is still needed. Audited as `recert.certify`.
#[utoipa::path(post, path = "/v1/recertifications", tag = "governance", operation_id = "recertify",
    request_body = Recertify,
    responses((status = 200, body = Due, description = "its standing now"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not a signed-in human allowed to"),
              (status = 404, body = ErrorBody, description = "no such object")),
    security(("bearer" = [])))]
pub async fn recertify(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(r): Body<Recertify>,
) -> Result<Json<Due>, ApiError> {
    Ok(Json(app.recertify(&caller, r).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (default), `markdown` or `html`.
    pub format: Option<String>,
    /// The window usage is measured over (default 30, 1..=365).
    pub window_days: Option<u32>,
}

/// The governance report: each control with its status, evidence and gaps, mapped to OWASP NHI
/// Top 10 (2025), OWASP Top 10 for Agentic Applications (2026), CSA MAESTRO layers and NIST AI
/// RMF 1.0 subcategories. Needs `governance.read`.
#[utoipa::path(get, path = "/v1/governance/report", tag = "governance", operation_id = "governance_report",
    params(ReportQuery),
    responses((status = 200, description = "the report",
               content((Report = "application/json"), (String = "text/markdown"), (String = "text/html"))),
              (status = 400, body = ErrorBody, description = "an unknown format or window"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn report(
    State(app): State<AppState>,
    Auth(caller): Auth,
    super::Query(q): super::Query<ReportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let r = app.governance_report(&caller, q.window_days.unwrap_or(30)).await?;
    let text = |ct: &'static str, body: String| ([(axum::http::header::CONTENT_TYPE, ct)], body).into_response();
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(r).into_response(),
        "markdown" | "md" => text("text/markdown; charset=utf-8", crate::governance::report::markdown(&r)),
        "html" => text("text/html; charset=utf-8", crate::governance::report::html(&r)),
        _ => return Err(ApiError::BadRequest("format: `json`, `markdown` or `html`".into())),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// The window (default 30, 1..=365).
    pub window_days: Option<u32>,
}

/// A workflow's granted versus used tools over a window, and the narrower list suggested.
/// Needs `governance.read` on it.
#[utoipa::path(get, path = "/v1/workflows/{name}/usage", tag = "governance", operation_id = "workflow_usage",
    params(("name" = String, Path, description = "the workflow"), WindowQuery),
    responses((status = 200, body = Usage, description = "granted, used, unused, suggested"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow")),
    security(("bearer" = [])))]
pub async fn usage(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    super::Query(q): super::Query<WindowQuery>,
) -> Result<Json<Usage>, ApiError> {
    let w = parse_id(&name, WorkflowName::parse)?;
    Ok(Json(app.usage(&caller, &w, q.window_days.unwrap_or(30)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptUsage {
    pub reason: String,
    /// The window the suggestion is computed over (default 30).
    #[serde(default)]
    pub window_days: Option<u32>,
}

/// The accepted narrowing: what observed use said, and the workflow now.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Accepted {
    pub usage: Usage,
    pub allowed_tools: Vec<String>,
}

/// Accepts the suggested narrower tool list in one step (recomputed now; audited as the
/// workflow's update). Needs `workflow.update`.
#[utoipa::path(post, path = "/v1/workflows/{name}/usage/accept", tag = "governance", operation_id = "accept_usage",
    params(("name" = String, Path, description = "the workflow")), request_body = AcceptUsage,
    responses((status = 200, body = Accepted, description = "the workflow's tools now"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such workflow"),
              (status = 409, body = ErrorBody, description = "nothing to narrow")),
    security(("bearer" = [])))]
pub async fn accept(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<AcceptUsage>,
) -> Result<Json<Accepted>, ApiError> {
    let w = parse_id(&name, WorkflowName::parse)?;
    let (usage, wf) = app.accept_usage(&caller, &w, b.window_days.unwrap_or(30), &b.reason).await?;
    Ok(Json(Accepted { usage, allowed_tools: wf.allowed_tools }))
}

/// Agents serving more than one workflow, with whether the workflows are equivalent (same
/// ceiling and owner, the agent's owner theirs) and accepted. Needs `governance.read`.
#[utoipa::path(get, path = "/v1/reuse", tag = "governance", operation_id = "list_reuse",
    responses((status = 200, body = [Reuse], description = "reused agents"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn reuse(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Vec<Reuse>>, ApiError> {
    Ok(Json(app.list_reuse(&caller).await?))
}

/// Accepts an agent's reuse across its equivalent workflows for a number of days (a signed-in
/// owner, or one with `recertify` on the agent); refused, naming the difference, when the
/// workflows are not equivalent.
#[utoipa::path(post, path = "/v1/agents/{name}/reuse", tag = "governance", operation_id = "accept_reuse",
    params(("name" = String, Path, description = "the agent")), request_body = AcceptReuse,
    responses((status = 200, body = Reuse, description = "the reuse, accepted"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed, or not equivalent"),
              (status = 409, body = ErrorBody, description = "no reuse to accept")),
    security(("bearer" = [])))]
pub async fn accept_reuse(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<AcceptReuse>,
) -> Result<Json<Reuse>, ApiError> {
    let a = parse_id(&name, remit_core::ids::AgentName::parse)?;
    Ok(Json(app.accept_reuse(&caller, &a, b).await?))
}
