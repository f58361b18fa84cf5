//! Workload registration entries: create, list, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::ids::{AgentName, EntryId, WorkflowName};
use remit_core::workload::{Entry, Selector};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::rfc3339;
use super::{AppState, Auth, Body, Path, parse_id};
use crate::api::error::{ApiError, ErrorBody};
use crate::service::workload::NewEntry;

/// A registration entry to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntry {
    /// Every selector a caller must have: `unix:uid:<n>`, `unix:gid:<n>`, `unix:path:<path>`,
    /// `unix:sha256:<hex>`, or `oidc:<issuer>:<claim>:<value>` (all of one kind).
    pub selectors: Vec<String>,
    /// The agent a matching caller becomes an instance of.
    pub agent: String,
    /// Hold its instances to this workflow (the agent must be in it).
    #[serde(default)]
    pub workflow: Option<String>,
    /// The Workload API's `hint` for its SVIDs.
    #[serde(default)]
    pub hint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub selectors: Vec<String>,
    pub agent: String,
    pub workflow: Option<String>,
    pub hint: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub created_by: String,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        EntryView {
            id: e.id.to_string(),
            selectors: e.selectors.iter().map(|s| s.to_string()).collect(),
            agent: e.agent.to_string(),
            workflow: e.workflow.map(|w| w.to_string()),
            hint: e.hint,
            created_at: rfc3339(e.created_at),
            created_by: e.created_by,
        }
    }
}

/// Creates a registration entry. Needs `agent.join_token` on its agent.
#[utoipa::path(post, path = "/v1/entries", tag = "workloads", operation_id = "create_entry", request_body = CreateEntry,
    responses((status = 201, body = EntryView, description = "the new entry"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such agent"),
              (status = 409, body = ErrorBody, description = "an entry with these selectors exists")),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<CreateEntry>,
) -> Result<(StatusCode, Json<EntryView>), ApiError> {
    caller.require_human_or_admin()?;
    if req.selectors.len() > remit_core::workload::MAX_SELECTORS {
        return Err(ApiError::BadRequest(format!(
            "selectors: at most {} per entry",
            remit_core::workload::MAX_SELECTORS
        )));
    }
    let selectors = req.selectors.iter().map(|s| parse_id(s, Selector::parse)).collect::<Result<_, _>>()?;
    let new = NewEntry {
        selectors,
        agent: parse_id(&req.agent, AgentName::parse)?,
        workflow: req.workflow.as_deref().map(|w| parse_id(w, WorkflowName::parse)).transpose()?,
        hint: req.hint,
    };
    let e = app.create_entry(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

/// Lists registration entries. Needs `agent.read`.
#[utoipa::path(get, path = "/v1/entries", tag = "workloads", operation_id = "list_entries",
    responses((status = 200, body = [EntryView], description = "every entry, oldest first"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn list(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Vec<EntryView>>, ApiError> {
    caller.require_human_or_admin()?;
    Ok(Json(app.list_entries(&caller).await?.into_iter().map(Into::into).collect()))
}

/// Deletes a registration entry (instances already attested through it live on until their
/// process exits). Needs `agent.join_token` on its agent.
#[utoipa::path(delete, path = "/v1/entries/{id}", tag = "workloads", operation_id = "delete_entry",
    params(("id" = String, Path, description = "entry id (`re-…`)")),
    responses((status = 200, body = EntryView, description = "the deleted entry"),
              (status = 400, body = ErrorBody, description = "not a valid entry id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such entry")),
    security(("bearer" = [])))]
pub async fn delete(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<EntryView>, ApiError> {
    caller.require_human_or_admin()?;
    let id = parse_id(&id, EntryId::parse)?;
    Ok(Json(app.delete_entry(&caller, &id).await?.into()))
}
