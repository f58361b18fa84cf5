//! `/scim/v2`: the SCIM 2.0 service provider (RFC 7644) for the organisation's identity
//! provider. Its own protocol, described by its own discovery endpoints (`/ServiceProviderConfig`,
//! `/ResourceTypes`, `/Schemas`) rather than the OpenAPI document: answers are
//! `application/scim+json`, errors are SCIM errors, bodies are read whether sent as
//! `application/scim+json` or `application/json`, and the caller is the SCIM credential
//! (`Authorization: Bearer`, compared in constant time; it opens nothing else).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, Path, Query, bearer_of};
use crate::scim::{Kind, SEARCH_SCHEMA, ScimError, attr_list};
use crate::service::scim::{Update, etag_version};

const SCIM_JSON: &str = "application/scim+json";

fn scim_response(status: StatusCode, body: &Value, version: Option<u64>) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(v) = version {
        if let Ok(tag) = HeaderValue::from_str(&format!("W/\"{v}\"")) {
            h.insert(ETAG, tag);
        }
        if let Some(loc) = body["meta"]["location"].as_str().and_then(|l| HeaderValue::from_str(l).ok()) {
            h.insert(LOCATION, loc);
        }
    }
    r
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        scim_response(status, &self.body(), None)
    }
}

fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ScimError> {
    match bearer_of(headers) {
        Some(t) if app.is_scim_credential(t) => Ok(()),
        _ => Err(ScimError::status(401, "the SCIM bearer credential is required")),
    }
}

fn body_json(b: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(b).map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ScimError> {
    match headers.get(IF_MATCH).and_then(|v| v.to_str().ok()) {
        None | Some("*") => Ok(None),
        Some(t) => etag_version(t)
            .map(Some)
            .ok_or_else(|| ScimError::status(412, "`If-Match` names no version of this resource")),
    }
}

fn kind_of(endpoint: &str) -> Result<Kind, ScimError> {
    match endpoint {
        "Users" => Ok(Kind::User),
        "Groups" => Ok(Kind::Group),
        _ => Err(ScimError::status(404, "no such endpoint")),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<u64>,
    count: Option<u64>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
    #[serde(rename = "sortBy")]
    sort_by: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(endpoint): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    if let Ok(what) = kind_of(&endpoint) {
        if q.sort_by.is_some() {
            return Err(ScimError::bad("invalidValue", "sorting is not supported"));
        }
        let (only, without) = (attr_list(q.attributes.as_deref()), attr_list(q.excluded_attributes.as_deref()));
        let v = app.scim_list(what, q.filter.as_deref(), q.start_index, q.count, &only, &without).await?;
        return Ok(scim_response(StatusCode::OK, &v, None));
    }
    Ok(scim_response(StatusCode::OK, &app.scim_discovery(&endpoint, None)?, None))
}

async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(endpoint): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    match endpoint.as_str() {
        ".search" => return Err(ScimError::status(501, "searching several resource types at once is not supported")),
        "ServiceProviderConfig" | "ResourceTypes" | "Schemas" => {
            return Err(ScimError::status(405, "discovery endpoints are read-only"));
        }
        _ => {}
    }
    let kind = kind_of(&endpoint)?;
    let (v, version) = app.scim_create(kind, &body_json(&body)?).await?;
    Ok(scim_response(StatusCode::CREATED, &v, Some(version)))
}

async fn read(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((endpoint, id)): Path<(String, String)>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    let Ok(kind) = kind_of(&endpoint) else {
        return Ok(scim_response(StatusCode::OK, &app.scim_discovery(&endpoint, Some(&id))?, None));
    };
    let (only, without) = (attr_list(q.attributes.as_deref()), attr_list(q.excluded_attributes.as_deref()));
    let (v, version) = app.scim_get(kind, &id, &only, &without).await?;
    Ok(scim_response(StatusCode::OK, &v, Some(version)))
}

async fn update(
    app: AppState,
    headers: HeaderMap,
    endpoint: String,
    id: String,
    body: Bytes,
    how: Update,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    let (v, version) = app.scim_update(kind_of(&endpoint)?, &id, &body_json(&body)?, if_match(&headers)?, how).await?;
    Ok(scim_response(StatusCode::OK, &v, Some(version)))
}

async fn replace(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((endpoint, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ScimError> {
    update(app, headers, endpoint, id, body, Update::Replace).await
}

async fn patch(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((endpoint, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ScimError> {
    update(app, headers, endpoint, id, body, Update::Patch).await
}

async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((endpoint, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    app.scim_delete(kind_of(&endpoint)?, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /<Users|Groups>/.search` (RFC 7644 §3.4.3).
async fn search(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(endpoint): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    authorize(&app, &headers)?;
    let kind = kind_of(&endpoint)?;
    let b = body_json(&body)?;
    if !b["schemas"].as_array().is_some_and(|s| s.iter().any(|x| x == SEARCH_SCHEMA)) {
        return Err(ScimError::bad("invalidSyntax", format!("a search names the schema `{SEARCH_SCHEMA}`")));
    }
    let names = |k: &str| -> Vec<String> {
        match &b[k] {
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Value::String(s) => attr_list(Some(s)),
            _ => vec![],
        }
    };
    let v = app
        .scim_list(
            kind,
            b["filter"].as_str(),
            b["startIndex"].as_u64(),
            b["count"].as_u64(),
            &names("attributes"),
            &names("excludedAttributes"),
        )
        .await?;
    Ok(scim_response(StatusCode::OK, &v, None))
}

async fn not_found() -> ScimError {
    ScimError::status(404, "no such SCIM endpoint")
}

/// The SCIM routes, nested under `/scim/v2` by the main router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{endpoint}", get(list).post(create))
        .route("/{endpoint}/.search", axum::routing::post(search))
        .route("/{endpoint}/{id}", get(read).put(replace).patch(patch).delete(delete))
        .fallback(not_found)
}
