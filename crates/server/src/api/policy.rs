//! Policy bundles and the attribute store (admin only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::EntityIn;
use super::{AppState, Auth, Body};
use crate::api::error::ApiError;

/// Validates a bundle (Cedar, strict, against Remit's schema plus the bundle's) and makes it
/// the active version; 400 with Cedar's diagnostics, and nothing changed, if it is invalid.
#[utoipa::path(put, path = "/v1/policies", request_body(content = Object, description = "{policies: [{name, source}], schema, mapping}"),
    responses((status = 201, description = "the new active version"), (status = 400, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn push(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(bundle): Body<remit_policy::Bundle>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let version = app.pdp.push_policy(&caller, bundle).await?;
    Ok((StatusCode::CREATED, Json(json!({"version": version}))))
}

/// The active bundle and its version.
#[utoipa::path(get, path = "/v1/policies", responses((status = 200, description = "active bundle")), security(("bearer" = [])))]
pub async fn active(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<Value>, ApiError> {
    let Some(p) = app.pdp.active_policy(&caller).await? else {
        return Ok(Json(json!({"version": 0, "bundle": null})));
    };
    let bundle: Value = serde_json::from_str(&p.bundle).unwrap_or(Value::Null);
    Ok(Json(
        json!({"version": p.version, "created_at": p.created_at.to_rfc3339(), "created_by": p.created_by, "bundle": bundle}),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitiesBody {
    pub entities: Vec<EntityIn>,
}

/// Inserts or replaces entities of the attribute store (users, resources, roles).
#[utoipa::path(post, path = "/v1/entities", request_body = EntitiesBody,
    responses((status = 200, description = "count stored"), (status = 400, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn push_entities(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<EntitiesBody>,
) -> Result<Json<Value>, ApiError> {
    let n = app.pdp.push_entities(&caller, body.entities.into_iter().map(Into::into).collect()).await?;
    Ok(Json(json!({"stored": n})))
}
