//! Policy bundles and the attribute store (admin only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::schema::{ActivePolicy, EntitiesStored, PolicyBundleDoc, PolicyVersion};
use super::wire::EntityIn;
use super::{AppState, Auth, Body};
use crate::api::error::{ApiError, ErrorBody};

/// Validates a bundle (Cedar, strict, against Remit's schema plus the bundle's) and makes it
/// the active version; 400 with Cedar's diagnostics, and nothing changed, if it is invalid.
#[utoipa::path(put, path = "/v1/policies", tag = "policies", operation_id = "push_policy",
    request_body(content = PolicyBundleDoc, description = "the bundle: policy files, a Cedar schema, a type mapping"),
    responses((status = 201, body = PolicyVersion, description = "the new active version"),
              (status = 400, body = ErrorBody, description = "invalid bundle (the message carries Cedar's diagnostics)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn push(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(bundle): Body<remit_policy::Bundle>,
) -> Result<(StatusCode, Json<PolicyVersion>), ApiError> {
    app.allow(&caller, remit_policy::admin::AdminAction::PolicyPush, remit_policy::admin::AdminTarget::Installation)
        .await?;
    let version = app.pdp.push_policy(&caller, bundle).await?;
    Ok((StatusCode::CREATED, Json(PolicyVersion { version })))
}

/// The active bundle and its version.
#[utoipa::path(get, path = "/v1/policies", tag = "policies", operation_id = "active_policy",
    responses((status = 200, body = ActivePolicy, description = "the active bundle (version 0 and a null bundle if none)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn active(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<ActivePolicy>, ApiError> {
    app.allow(&caller, remit_policy::admin::AdminAction::PolicyRead, remit_policy::admin::AdminTarget::Installation)
        .await?;
    let Some(p) = app.pdp.active_policy(&caller).await? else {
        return Ok(Json(ActivePolicy { version: 0, created_at: None, created_by: None, bundle: Value::Null }));
    };
    let bundle: Value = serde_json::from_str(&p.bundle).unwrap_or(Value::Null);
    Ok(Json(ActivePolicy {
        version: p.version,
        created_at: Some(p.created_at.to_rfc3339()),
        created_by: Some(p.created_by),
        bundle,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitiesBody {
    /// At most 10000 entities.
    pub entities: Vec<EntityIn>,
}

/// Inserts or replaces entities of the attribute store (users, resources, roles).
#[utoipa::path(post, path = "/v1/entities", tag = "policies", request_body = EntitiesBody,
    responses((status = 200, body = EntitiesStored, description = "how many entities were stored"),
              (status = 400, body = ErrorBody, description = "invalid entity (the message names it)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin"),
              (status = 409, body = ErrorBody, description = "an alias already names another entity")),
    security(("bearer" = [])))]
pub async fn push_entities(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<EntitiesBody>,
) -> Result<Json<EntitiesStored>, ApiError> {
    app.allow(&caller, remit_policy::admin::AdminAction::EntitiesPush, remit_policy::admin::AdminTarget::Installation)
        .await?;
    let n = app.pdp.push_entities(&caller, body.entities.into_iter().map(Into::into).collect()).await?;
    Ok(Json(EntitiesStored { stored: n }))
}
