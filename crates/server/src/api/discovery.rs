//! Anonymous endpoints (health, JWKS, discovery, the SPIFFE bundle, the OpenAPI document)
//! and `/metrics` (admin).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::AppState;
use crate::api::error::ApiError;

/// How often bundle consumers should re-fetch (seconds).
const BUNDLE_REFRESH_HINT_SECS: u64 = 300;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "store unavailable")))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.ready().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// The JWK Set of keys that sign JWT-SVIDs (current and still-valid retired keys).
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "RFC 7517 JWK Set")))]
pub async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(app.keyring().jwks()))
}

/// The SPIFFE trust bundle (JWKs with `use: jwt-svid`, `spiffe_sequence`, `spiffe_refresh_hint`).
#[utoipa::path(get, path = "/.well-known/spiffe-bundle", responses((status = 200, description = "SPIFFE bundle")))]
pub async fn spiffe_bundle(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let seq = app.bundle_sequence().await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(app.keyring().spiffe_bundle(seq, BUNDLE_REFRESH_HINT_SECS)),
    ))
}

/// OpenID-style discovery of the issuer, its keys and its token endpoints.
#[utoipa::path(get, path = "/.well-known/openid-configuration", responses((status = 200, description = "discovery document")))]
pub async fn openid_configuration(State(app): State<AppState>) -> Json<Value> {
    let iss = app.issuer.clone();
    Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "spiffe_trust_domain": app.trust_domain.as_str(),
        "spiffe_bundle_endpoint": format!("{iss}/.well-known/spiffe-bundle"),
    }))
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Prometheus metrics: the read-only scrape credential (`metrics-token` in the data
/// directory, or `REMIT_METRICS_TOKEN`) or the admin credential. The scrape credential opens
/// nothing else.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format"), (status = 401, body = crate::api::error::ErrorBody), (status = 403, body = crate::api::error::ErrorBody)), security(("bearer" = [])))]
pub async fn metrics(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let token = super::bearer_of(&headers).ok_or_else(ApiError::unauthenticated)?;
    if !app.is_metrics_credential(token) {
        app.authenticate(token, None).await?.require_admin()?;
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()))
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Remit", description = "Identity and authorization control plane for AI agents"),
    modifiers(&BearerAuth),
    paths(
        healthz, readyz, jwks, spiffe_bundle, openid_configuration, openapi, metrics,
        super::oauth::introspect, super::oauth::revoke,
        super::tasks::join, super::tasks::renew_instance, super::tasks::start_task, super::tasks::list_tasks,
        super::tasks::get_task, super::tasks::complete_task, super::tasks::revoke_task, super::tasks::watch_task,
        super::admin::create_workflow, super::admin::list_workflows, super::admin::get_workflow,
        super::admin::suspend_workflow, super::admin::resume_workflow,
        super::admin::create_agent, super::admin::list_agents, super::admin::get_agent,
        super::admin::disable_agent, super::admin::enable_agent, super::admin::create_join_token,
        super::admin::revoke_instance, super::admin::rotate_keys, super::admin::status,
        super::audit::list, super::audit::export, super::audit::verify, super::audit::checkpoint,
        super::policy::push, super::policy::active, super::policy::push_entities,
        super::authzen::evaluation_one, super::authzen::evaluations, super::authzen::configuration,
        super::authzen::explain, super::approvals::list, super::approvals::get, super::approvals::approve,
        super::approvals::deny, super::approvals::watch, super::authzen::search_subject, super::authzen::search_resource,
        super::authzen::search_action, super::authzen::decide_task,
    )
)]
pub struct ApiDoc;
