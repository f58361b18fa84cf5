//! Registered tools: create (the response carries the tool's introspection secret, once),
//! list, show, disable.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::ids::ToolName;
use remit_core::tool::{NewTool, Tool};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::{Reason, rfc3339};
use super::{AppState, Auth, Body, Path, parse_id};
use crate::api::error::{ApiError, ErrorBody};

/// A tool to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    /// `a-z`, `0-9`, `-` (1-63): the resource id policies see (`Tool::"<name>"`).
    pub name: String,
    /// The `aud` of its credentials: an absolute URI (`https://…`, `urn:…`, `spiffe://…`),
    /// unique among tools and never Remit's own.
    pub audience: String,
    /// The scopes it accepts; each is decided as the Cedar action of the same name.
    pub scopes: Vec<String>,
    /// The longest credential it accepts, seconds (default 300, at most 3600).
    #[serde(default)]
    pub max_ttl_seconds: Option<u64>,
    /// The most sensitive data behind it: `public`, `internal` (default), `confidential`,
    /// `restricted`. A task below it gets no credential for it.
    #[serde(default)]
    pub classification: Option<String>,
    /// What it gives access to: `model`, `tool` (default) or `data`; with a trust domain
    /// configured for the class, its credentials are signed in that trust domain.
    #[serde(default)]
    pub class: Option<String>,
    /// How agents call it through Remit's injecting proxy (`/tools/<name>/<path>` on the
    /// proxy listener): its upstream URL, the routes (method, path template, scope) and where
    /// its upstream credential goes. Absent: not callable through the proxy.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub proxy: Option<remit_core::proxy::ProxyConfig>,
    /// Its dynamic engine: Remit makes a database login per task (`POST /credentials/<name>`
    /// on the proxy listener), removed when the task ends: `engine` (`postgres`),
    /// `admin_secret` (the name of this tool's secret holding the admin URL), `scope`,
    /// `grants` (statements with `{{role}}`), `max_ttl_secs`, `connection_limit`,
    /// `connect_host`, `env`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub database: Option<remit_core::lease::DatabaseConfig>,
    /// The email of the human who answers for it.
    pub owner: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolView {
    pub name: String,
    pub audience: String,
    pub scopes: Vec<String>,
    pub max_ttl_seconds: u64,
    pub classification: String,
    /// `model`, `tool` or `data`.
    pub class: String,
    /// The trust domain its credentials come from.
    pub trust_domain: String,
    /// Its proxy configuration (upstream, routes, injection: the secret's name, never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub proxy: Option<remit_core::proxy::ProxyConfig>,
    /// Its dynamic engine (the admin secret's name, never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub database: Option<remit_core::lease::DatabaseConfig>,
    pub owner: String,
    pub owner_id: Option<String>,
    /// RFC 3339: when its owner was deactivated, if nobody has taken it over since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphaned_at: Option<String>,
    /// `active` or `disabled`.
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A tool as the API shows it, with the trust domain its credentials come from.
pub fn view(app: &crate::app::App, t: Tool) -> ToolView {
    let td = app.class_trust_domain(t.class).to_string();
    ToolView::new(t, &td)
}

impl ToolView {
    pub fn new(t: Tool, trust_domain: &str) -> Self {
        ToolView {
            name: t.name.to_string(),
            audience: t.audience,
            scopes: t.scopes,
            max_ttl_seconds: t.max_ttl_secs,
            classification: t.classification.to_string(),
            class: t.class.to_string(),
            trust_domain: trust_domain.to_owned(),
            proxy: t.proxy,
            database: t.database,
            owner: t.owner,
            owner_id: t.owner_id.map(|h| h.to_string()),
            orphaned_at: t.orphaned_at.map(rfc3339),
            state: t.state.as_str().into(),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// A new tool and its introspection secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTool {
    pub tool: ToolView,
    /// The tool's own credential for `/oauth2/introspect` (`remit_tool.<name>.<secret>`): it
    /// sees only credentials issued for this tool. Shown once; Remit keeps only a hash.
    pub introspection_secret: String,
}

/// Registers a tool. Needs `tool.create` (an admin).
#[utoipa::path(post, path = "/v1/tools", tag = "tools", operation_id = "create_tool", request_body = CreateTool,
    responses((status = 201, body = CreatedTool, description = "the new tool and its introspection secret"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 409, body = ErrorBody, description = "a tool with that name or audience exists")),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<CreateTool>,
) -> Result<(StatusCode, Json<CreatedTool>), ApiError> {
    caller.require_human_or_admin()?;
    let classification = match req.classification.as_deref() {
        None => Default::default(),
        Some(c) => c.parse().map_err(|e: remit_core::DomainError| ApiError::BadRequest(e.to_string()))?,
    };
    let new = NewTool {
        name: parse_id(&req.name, ToolName::parse)?,
        audience: req.audience,
        scopes: req.scopes,
        max_ttl_secs: req.max_ttl_seconds,
        classification,
        class: match req.class.as_deref() {
            None => remit_core::tool::ToolClass::Tool,
            Some(c) => remit_core::tool::ToolClass::parse(c)
                .ok_or_else(|| ApiError::BadRequest(format!("class: `{c}` is not `model`, `tool` or `data`")))?,
        },
        proxy: req.proxy,
        database: req.database,
        owner: req.owner,
        secret_hash: String::new(),
    };
    let (tool, secret) = app.create_tool(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(CreatedTool { tool: view(&app, tool), introspection_secret: secret })))
}

/// Lists tools. Needs `tool.read`.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", operation_id = "list_tools",
    responses((status = 200, body = [ToolView], description = "every tool"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn list(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Vec<ToolView>>, ApiError> {
    caller.require_human_or_admin()?;
    Ok(Json(app.list_tools(&caller).await?.into_iter().map(|t| view(&app, t)).collect()))
}

/// Shows one tool. Needs `tool.read`.
#[utoipa::path(get, path = "/v1/tools/{name}", tag = "tools", operation_id = "get_tool", params(("name" = String, Path, description = "tool name")),
    responses((status = 200, body = ToolView, description = "the tool"),
              (status = 400, body = ErrorBody, description = "not a valid tool name"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such tool")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<ToolView>, ApiError> {
    caller.require_human_or_admin()?;
    let name = parse_id(&name, ToolName::parse)?;
    Ok(Json(view(&app, app.tool(&caller, &name).await?)))
}

/// Gives a tool a new owner, taking it out of the orphans. Needs `tool.create`.
#[utoipa::path(put, path = "/v1/tools/{name}/owner", tag = "tools", operation_id = "set_tool_owner",
    params(("name" = String, Path, description = "tool name")),
    request_body = super::wire::SetOwner,
    responses((status = 200, body = ToolView, description = "the tool with its new owner"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such tool"),
              (status = 409, body = ErrorBody, description = "the new owner is deactivated")),
    security(("bearer" = [])))]
pub async fn set_owner(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(b): Body<super::wire::SetOwner>,
) -> Result<Json<ToolView>, ApiError> {
    caller.require_human_or_admin()?;
    let name = parse_id(&name, ToolName::parse)?;
    app.set_owner(&caller, remit_store::Owned::Tool(name.clone()), &b.owner, &b.reason).await?;
    Ok(Json(view(&app, app.tool(&caller, &name).await?)))
}

/// Disables a tool: no new credential for it, and every credential issued for it is inactive
/// at introspection at once. Needs `tool.disable` (an operator's kill switch).
#[utoipa::path(post, path = "/v1/tools/{name}/disable", tag = "tools", operation_id = "disable_tool", params(("name" = String, Path, description = "tool name")),
    request_body = Reason,
    responses((status = 200, body = ToolView, description = "the disabled tool"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such tool"),
              (status = 409, body = ErrorBody, description = "already disabled")),
    security(("bearer" = [])))]
pub async fn disable(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    Body(req): Body<Reason>,
) -> Result<Json<ToolView>, ApiError> {
    caller.require_human_or_admin()?;
    let name = parse_id(&name, ToolName::parse)?;
    Ok(Json(view(&app, app.disable_tool(&caller, &name, &req.reason).await?)))
}
