//! Anonymous endpoints (health, JWKS, discovery, the SPIFFE bundle, the OpenAPI document)
//! and `/metrics` (admin).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::AppState;
use super::schema::{HealthStatus, JwkSetDoc, OpenIdConfiguration, SpiffeBundleDoc};
use crate::api::error::{ApiError, ErrorBody};

/// How often bundle consumers should re-fetch (seconds).
pub(crate) const BUNDLE_REFRESH_HINT_SECS: u64 = 300;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = HealthStatus, description = "alive: `{\"status\": \"ok\"}`")))]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok".into() })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = HealthStatus, description = "ready: `{\"status\": \"ready\"}`"),
              (status = 503, body = ErrorBody, description = "the store does not answer (with `Retry-After`)")))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    app.ready().await?;
    Ok(Json(HealthStatus { status: "ready".into() }))
}

/// The JWK Set of keys that sign JWT-SVIDs (current and still-valid retired keys).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, body = JwkSetDoc, description = "RFC 7517 JWK Set (cacheable for 60 s)")))]
pub async fn jwks(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(app.keyring().jwks()))
}

/// The SPIFFE trust bundle: JWKs with `use: jwt-svid` (the JWT-SVID keys) and `use: x509-svid`
/// (the X.509 CA certificates, in `x5c`), `spiffe_sequence`, `spiffe_refresh_hint`. Served
/// over HTTPS when TLS is configured: the SPIFFE bundle endpoint's `https_web` profile.
#[utoipa::path(get, path = "/.well-known/spiffe-bundle", tag = "discovery",
    responses((status = 200, body = SpiffeBundleDoc, description = "SPIFFE bundle (cacheable for 60 s)"),
              (status = 503, body = ErrorBody, description = "the store does not answer")))]
pub async fn spiffe_bundle(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let seq = app.bundle_sequence().await?;
    let mut doc = app.keyring().spiffe_bundle(seq, BUNDLE_REFRESH_HINT_SECS);
    if let (Ok(ca), Some(keys)) = (app.x509_authority(), doc["keys"].as_array_mut()) {
        for root in &ca.roots {
            // A self-signed CA keeps its key's kid; an upstream root is named by its digest.
            let kid = ca.self_signed(root).map(|c| c.key.kid());
            // Upstream roots were checked when loaded; one with no JWK form is left out.
            if let Ok(jwk) = remit_token::x509::anchor_jwk(root, kid) {
                keys.push(jwk);
            }
        }
    }
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(doc)))
}

/// The keyring of trust domain `td`: the installation's, or a tool class's own.
fn ring_of(app: &AppState, td: &str) -> Result<std::sync::Arc<remit_token::Keyring>, ApiError> {
    if td == app.trust_domain.as_str() {
        return Ok(app.keyring());
    }
    let class = app.class_of_trust_domain(td).ok_or_else(|| {
        ApiError::NotFound(format!(
            "`{}` is not a trust domain of this installation",
            remit_core::ids::truncate_for_error(td)
        ))
    })?;
    Ok(app.credential_keyring(class)?)
}

/// The JWK Set of one of this installation's trust domains: the installation's own (as
/// `/.well-known/jwks.json`), or a tool class's (`[trust_domains]`), whose keys sign only
/// that class's per-tool credentials and are published nowhere else.
#[utoipa::path(get, path = "/trust-domains/{trust_domain}/jwks.json", tag = "discovery",
    params(("trust_domain" = String, Path, description = "e.g. `data.example.org`")),
    responses((status = 200, body = JwkSetDoc, description = "RFC 7517 JWK Set (cacheable for 60 s)"),
              (status = 404, body = ErrorBody, description = "not a trust domain of this installation")))]
pub async fn trust_domain_jwks(
    State(app): State<AppState>,
    super::Path(td): super::Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ring = ring_of(&app, &td)?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(ring.jwks())))
}

/// The SPIFFE bundle of one of this installation's trust domains: the installation's own
/// (as `/.well-known/spiffe-bundle`, with its X.509 CA), or a tool class's (JWT keys only).
#[utoipa::path(get, path = "/trust-domains/{trust_domain}/spiffe-bundle", tag = "discovery",
    params(("trust_domain" = String, Path, description = "e.g. `data.example.org`")),
    responses((status = 200, body = SpiffeBundleDoc, description = "SPIFFE bundle (cacheable for 60 s)"),
              (status = 404, body = ErrorBody, description = "not a trust domain of this installation"),
              (status = 503, body = ErrorBody, description = "the store does not answer")))]
pub async fn trust_domain_bundle(
    State(app): State<AppState>,
    super::Path(td): super::Path<String>,
) -> Result<axum::response::Response, ApiError> {
    if td == app.trust_domain.as_str() {
        return Ok(spiffe_bundle(State(app)).await?.into_response());
    }
    let ring = ring_of(&app, &td)?;
    let seq = app.bundle_sequence().await?;
    let doc = ring.spiffe_bundle(seq, BUNDLE_REFRESH_HINT_SECS);
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], Json(doc)).into_response())
}

/// OpenID-style discovery of the issuer, its keys and its token endpoints.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, body = OpenIdConfiguration, description = "discovery document")))]
pub async fn openid_configuration(State(app): State<AppState>) -> Json<OpenIdConfiguration> {
    Json(metadata(&app))
}

/// RFC 8414 authorization server metadata: the same document as the OpenID-style one (its
/// `issuer` is the issuer of every token), naming the token endpoint and its one grant.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery",
    responses((status = 200, body = OpenIdConfiguration, description = "RFC 8414 metadata")))]
pub async fn authorization_server(State(app): State<AppState>) -> Json<OpenIdConfiguration> {
    Json(metadata(&app))
}

fn metadata(app: &AppState) -> OpenIdConfiguration {
    let iss = app.issuer.clone();
    let one = |s: &str| vec![s.to_owned()];
    OpenIdConfiguration {
        token_endpoint: format!("{iss}/oauth2/token"),
        grant_types_supported: vec![
            crate::service::exchange::GRANT_TOKEN_EXCHANGE.to_owned(),
            crate::service::federation::GRANT_JWT_BEARER.to_owned(),
        ],
        token_endpoint_auth_methods_supported: one("none"),
        dpop_signing_alg_values_supported: remit_token::dpop::ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
        jwks_uri: format!("{iss}/.well-known/jwks.json"),
        introspection_endpoint: format!("{iss}/oauth2/introspect"),
        revocation_endpoint: format!("{iss}/oauth2/revoke"),
        introspection_endpoint_auth_methods_supported: one("bearer"),
        revocation_endpoint_auth_methods_supported: one("none"),
        id_token_signing_alg_values_supported: one("ES256"),
        subject_types_supported: one("public"),
        response_types_supported: one("id_token"),
        spiffe_trust_domain: app.trust_domain.as_str().to_owned(),
        spiffe_bundle_endpoint: format!("{iss}/.well-known/spiffe-bundle"),
        issuer: iss,
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "discovery", operation_id = "openapi_document",
    responses((status = 200, body = Object, description = "OpenAPI 3.1 document (this one)")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Prometheus metrics: the read-only scrape credential (`metrics-token` in the data
/// directory, or `REMIT_METRICS_TOKEN`) or the admin credential. The scrape credential opens
/// nothing else.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String,
                  description = "Prometheus text exposition format (version 0.0.4)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "neither the scrape credential nor the admin")),
    security(("bearer" = [])))]
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

/// The OpenAPI document: every route of [`super::router`] (a test checks they match), one tag
/// per area.
#[derive(OpenApi)]
#[openapi(
    info(title = "Remit", description = "Identity and authorization control plane for AI agents"),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Liveness, readiness, metrics, the server's status and key rotation."),
        (name = "discovery", description = "Anonymous documents: the JWK Set, the SPIFFE bundle, OpenID-style discovery and this OpenAPI document."),
        (name = "OAuth", description = "RFC 8693 token exchange for per-tool credentials, RFC 7662 token introspection and RFC 7009 token revocation."),
        (name = "tools", description = "Registered tools: the APIs tasks obtain per-tool credentials for."),
        (name = "secrets", description = "Tools' upstream secrets, write-only (set, rotate, list metadata, delete), and the leak guard. Admin."),
        (name = "leases", description = "Database logins made per task by a tool's engine (obtained on the proxy listener), revoked with their task. Admin."),
        (name = "grants", description = "Human → agent grants: proposed, confirmed in a second step, revoked with every task under them."),
        (name = "workflows and agents", description = "Workflows, agents and their join tokens, with their kill switches. Admin."),
        (name = "instances", description = "Agent instances: joining with a join token, renewing, revoking."),
        (name = "tasks", description = "The task lifecycle: start, list, show, complete, revoke, watch."),
        (name = "audit", description = "The hash-chained audit log: list, export, verify, checkpoint. Admin."),
        (name = "workloads", description = "SPIFFE workload registration entries: attested selectors that name an agent. Admin."),
        (name = "policies", description = "Cedar policy bundles and the attribute store's entities. Admin."),
        (name = "decisions", description = "Decisions on an agent task's actions, and explained decisions."),
        (name = "approvals", description = "Approval requests opened by `@approval` policies, decided by a named human."),
        (name = "humans", description = "Humans: signing in through an OpenID provider, Remit's own sessions, and managing humans and sessions."),
        (name = "governance", description = "Governance: per-workflow containment rules and recertification period, external risk signals."),
        (name = "shared signals", description = "OpenID Shared Signals Framework 1.0 transmitter: streams, verification, RFC 8936 poll; SETs (CAEP, RISC) on revocations."),
        (name = "AuthZEN", description = "OpenID AuthZEN Authorization API 1.0: evaluations, search and PDP metadata."),
    ),
    paths(
        healthz, readyz, jwks, spiffe_bundle, trust_domain_jwks, trust_domain_bundle, openid_configuration, openapi, metrics,
        super::oauth::introspect, super::oauth::revoke,
        super::tasks::join, super::tasks::renew_instance, super::tasks::start_task, super::tasks::list_tasks,
        super::tasks::get_task, super::tasks::complete_task, super::tasks::renew_task, super::tasks::revoke_task, super::tasks::watch_task,
        super::admin::create_workflow, super::admin::list_workflows, super::admin::get_workflow,
        super::admin::suspend_workflow, super::admin::resume_workflow, super::admin::set_workflow_tools, super::admin::set_workflow_trust,
        super::admin::create_agent, super::admin::list_agents, super::admin::get_agent,
        super::admin::disable_agent, super::admin::enable_agent, super::admin::create_join_token,
        super::admin::revoke_instance, super::admin::rotate_keys, super::admin::status,
        super::audit::list, super::audit::export, super::audit::verify, super::audit::checkpoint,
        super::policy::push, super::policy::active, super::policy::push_entities,
        super::authzen::evaluation_one, super::authzen::evaluations, super::authzen::configuration,
        super::authzen::explain, super::approvals::list, super::approvals::get, super::approvals::approve,
        super::approvals::deny, super::approvals::watch, super::authzen::search_subject, super::authzen::search_resource,
        super::authzen::search_action, super::authzen::decide_task,
        super::humans::providers, super::humans::login, super::humans::callback, super::humans::token,
        super::humans::session, super::humans::logout, super::humans::list, super::humans::get,
        super::humans::deactivate, super::humans::revoke_session,
        super::admin::set_workflow_owner, super::admin::set_agent_owner, super::admin::orphans,
        super::humans::create_local, super::humans::local_sign_in, super::humans::enroll_totp, super::humans::confirm_totp,
        super::oauth::token, authorization_server, super::tools::create, super::tools::list, super::tools::get,
        super::tools::disable, super::tools::set_owner, super::grants::propose, super::grants::confirm, super::grants::revoke,
        super::grants::list, super::grants::get, super::entries::create, super::entries::list, super::entries::delete,
        super::secrets::set, super::secrets::list, super::secrets::delete, super::secrets::scan,
        super::leases::list, super::leases::get, super::leases::revoke,
        super::ssf::configuration, super::ssf::create, super::ssf::read, super::ssf::update, super::ssf::replace,
        super::governance::get, super::governance::set, super::governance::risk,
        super::governance::due, super::governance::recertify, super::governance::report,
        super::governance::usage, super::governance::accept, super::governance::reuse, super::governance::accept_reuse,
        super::ssf::delete, super::ssf::status, super::ssf::set_status, super::ssf::verify, super::ssf::poll, super::ssf::receive,
    )
)]
pub struct ApiDoc;
