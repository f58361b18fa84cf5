//! The HTTP API: the router, the middleware stack, the extractors every handler shares,
//! and wire types. One file per API area; each handler authenticates, calls one `App`
//! method and shapes the answer.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod authzen;
pub mod discovery;
pub mod entries;
pub mod error;
pub mod governance;
pub mod grants;
pub mod humans;
pub mod leases;
pub mod oauth;
pub mod policy;
pub mod schema;
pub mod scim;
pub mod secrets;
pub mod ssf;
pub mod tasks;
pub mod tools;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::error::ApiError;
use crate::app::App;
use crate::metrics::{HttpLabels, RouteLabel};
use crate::service::Caller;

pub type AppState = Arc<App>;

/// Header naming the human operator behind an admin call (recorded in the audit log).
pub const OPERATOR_HEADER: &str = "x-remit-operator";

/// The authenticated caller of a request (admin credential or live instance token).
pub struct Auth(pub Caller);

/// Reads `Authorization: Bearer …`, if present.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// [`bearer`] from a header map: the token of `Authorization: Bearer …` or `DPoP …`.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    credential_of(headers).map(|(_, t)| t)
}

/// The token of the `Authorization` header and whether its scheme is `DPoP` (RFC 9449 §7.1).
pub fn credential_of(headers: &axum::http::HeaderMap) -> Option<(bool, &str)> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    (dpop || scheme.eq_ignore_ascii_case("bearer")).then(|| (dpop, token.trim())).filter(|(_, t)| !t.is_empty())
}

/// The request's one `DPoP` proof header, if any; more than one is an error.
pub fn dpop_header(headers: &axum::http::HeaderMap) -> Result<Option<&str>, remit_token::dpop::DpopError> {
    let mut all = headers.get_all("dpop").iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(remit_token::dpop::DpopError::Malformed("more than one DPoP header"));
    }
    first.map(|v| v.to_str().map_err(|_| remit_token::dpop::DpopError::Malformed("not ASCII"))).transpose()
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        // A browser's session cookie counts only on reads (no state change rides on a cookie).
        let safe = matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD);
        let token =
            bearer(parts).or_else(|| safe.then(|| humans::cookie(&parts.headers, humans::SESSION_COOKIE)).flatten());
        // Without a bearer credential, the X.509-SVID the TLS connection was authenticated
        // with (mutual TLS) is the instance's credential.
        let Some(token) = token else {
            let svid = parts.extensions.get::<crate::tls::PeerSvid>().ok_or_else(ApiError::unauthenticated)?;
            let caller = app.authenticate_svid(&svid.id).await?;
            note_svid(app, parts, svid, &caller).await;
            return Ok(Auth(caller));
        };
        let operator = parts.headers.get(OPERATOR_HEADER).and_then(|v| v.to_str().ok());
        let caller = app.authenticate(token, operator).await?;
        // A sender-constrained task token: the DPoP scheme and a fresh proof from its key.
        if let Caller::Task { binding: Some(b), spiffe_id, .. } = &caller {
            let bad = |m: String| ApiError::DpopRequired(m);
            if !credential_of(&parts.headers).is_some_and(|(dpop, _)| dpop) {
                return Err(bad("this token is DPoP-bound: send it as `Authorization: DPoP …` with a proof".into()));
            }
            let proof = dpop_header(&parts.headers)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("this token is DPoP-bound: a `DPoP` proof header is required".into()))?;
            let p = app
                .dpop_proof(proof, parts.method.as_str(), parts.uri.path(), Some(token))
                .await
                .map_err(|e| bad(e.to_string()))?;
            let bound = crate::service::dpop::Bound { jti: &b.jti, jkt: &b.jkt, audience: "remit", subject: spiffe_id };
            app.check_binding(&bound, &p).await.map_err(|e| match e {
                crate::error::Error::Unauthenticated(m) => bad(m),
                other => other.into(),
            })?;
        }
        if let Caller::Admin { .. } = caller {
            let route = parts.extensions.get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
            app.break_glass_used(&caller, method_label(&parts.method), route).await;
        }
        // A task or instance token as the bearer: who presents it is noted (a second presenter
        // is a sharing event). Its claims were verified by `authenticate`.
        note_bearer(app, parts, token, &caller).await;
        Ok(Auth(caller))
    }
}

/// Notes the presenter of an instance's X.509-SVID (mutual TLS), by its serial number: the
/// same certificate from a second place is one instance identity used by two processes.
async fn note_svid(app: &AppState, parts: &Parts, svid: &crate::tls::PeerSvid, caller: &Caller) {
    use crate::governance::sharing::{Presented, Presenter};
    let Caller::Instance { agent, spiffe_id, .. } = caller else { return };
    let peer = parts.extensions.get::<crate::listen::PeerAddr>().map(|p| p.0);
    let jti = format!("x509:{}", svid.serial);
    let presented = Presented {
        jti: &jti,
        task: None,
        workflow: None,
        agent,
        subject: spiffe_id,
        expires: svid.not_after,
        via: "mtls",
    };
    let presenter = Presenter::of(peer, &parts.headers, &app.cfg.limits.trusted_proxies, None);
    app.note_bearer(presented, &presenter).await;
}

/// Notes the presenter of a task or instance token (`governance::sharing`).
async fn note_bearer(app: &AppState, parts: &Parts, token: &str, caller: &Caller) {
    use crate::governance::sharing::{Presented, Presenter};
    let Some(c) = remit_token::jwt::unverified_claims(token) else { return };
    let (Some(jti), Some(exp)) = (c["jti"].as_str(), c["exp"].as_i64()) else { return };
    let peer = parts.extensions.get::<crate::listen::PeerAddr>().map(|p| p.0);
    let expires = remit_core::time::UnixMillis::from_secs(exp);
    let (presented, jkt) = match caller {
        Caller::Task { id, spiffe_id, snapshot, binding } => (
            Presented {
                jti,
                task: Some(id),
                workflow: Some(&snapshot.task.workflow),
                agent: &snapshot.task.agent,
                subject: spiffe_id,
                expires,
                via: "api",
            },
            binding.as_ref().map(|b| b.jkt.clone()),
        ),
        Caller::Instance { agent, spiffe_id, .. } => {
            (Presented { jti, task: None, workflow: None, agent, subject: spiffe_id, expires, via: "api" }, None)
        }
        _ => return,
    };
    let presenter = Presenter::of(peer, &parts.headers, &app.cfg.limits.trusted_proxies, jkt);
    app.note_bearer(presented, &presenter).await;
}

/// A JSON body whose rejections become [`ApiError`]s with a clear message.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => Err(rejection(rej.status(), rej.body_text(), &rej)),
        }
    }
}

/// A form body (the OAuth endpoints), with the same error mapping.
pub struct Form<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Form(v)),
            Err(rej) => Err(rejection(rej.status(), rej.body_text(), &rej)),
        }
    }
}

/// Query parameters, with the same error mapping.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(rejection(rej.status(), rej.body_text(), &rej)),
        }
    }
}

fn rejection(status: StatusCode, text: String, rej: &(dyn std::error::Error + 'static)) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge("request body is too large".into());
    }
    // The body-read timeout surfaces as a failed body read somewhere down the error chain.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(rej);
    while let Some(e) = cur {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::Timeout("the request body was not received in time".into());
        }
        cur = e.source();
    }
    ApiError::BadRequest(text)
}

/// Path parameters, with the same error mapping (a segment that is not valid UTF-8 after
/// percent-decoding is a JSON 400, not axum's plain text).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej) => Err(ApiError::BadRequest(format!("invalid path: {}", rej.body_text()))),
        }
    }
}

/// Parses a path segment into a typed id, or answers 400.
pub fn parse_id<T>(s: &str, parse: impl FnOnce(&str) -> Result<T, remit_core::DomainError>) -> Result<T, ApiError> {
    parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = hex::encode(remit_token::random::<12>());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// A metric label for a request method, from a closed set (any other method is `other`), so
/// made-up methods cannot grow the metric families.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn record_metrics(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // Route templates are a closed set (the router's); anything unmatched is one label.
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method()).to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    app.metrics.http_requests.get_or_create(&HttpLabels { route: route.clone(), method, status }).inc();
    app.metrics.http_seconds.get_or_create(&RouteLabel { route }).observe(start.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this endpoint does not accept that method".into())
}

/// Remit's own limits on the request target and headers, below hyper's, so an oversized
/// request gets the usual JSON error (414, 431) rather than hyper's bare one.
async fn head_limits(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let l = &app.cfg.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > l.max_uri_bytes {
        return ApiError::UriTooLong(format!("the request target is longer than {} bytes", l.max_uri_bytes))
            .into_response();
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > l.max_header_bytes {
        return ApiError::HeadersTooLarge(format!("request headers exceed {} bytes", l.max_header_bytes))
            .into_response();
    }
    next.run(req).await
}

/// The whole HTTP surface.
pub fn router(app: AppState) -> Router {
    let max_body = app.cfg.limits.max_body_bytes;
    let max_in_flight = app.cfg.limits.max_in_flight;
    let body_timeout = app.cfg.limits.body_read_timeout;
    let api = Router::new()
        .route("/healthz", get(discovery::healthz))
        .route("/readyz", get(discovery::readyz))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/.well-known/spiffe-bundle", get(discovery::spiffe_bundle))
        .route("/trust-domains/{trust_domain}/jwks.json", get(discovery::trust_domain_jwks))
        .route("/trust-domains/{trust_domain}/spiffe-bundle", get(discovery::trust_domain_bundle))
        .route("/openapi.json", get(discovery::openapi))
        .route("/metrics", get(discovery::metrics))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/token", post(oauth::token))
        .route("/.well-known/oauth-authorization-server", get(discovery::authorization_server))
        .route("/v1/entries", get(entries::list).post(entries::create))
        .route("/v1/entries/{id}", delete(entries::delete))
        .route("/v1/tools", get(tools::list).post(tools::create))
        .route("/v1/tools/{name}", get(tools::get))
        .route("/v1/tools/{name}/disable", post(tools::disable))
        .route("/v1/tools/{name}/owner", put(tools::set_owner))
        .route("/v1/tools/{tool}/secrets", get(secrets::list))
        .route("/v1/tools/{tool}/secrets/{name}", put(secrets::set).delete(secrets::delete))
        .route("/v1/leak-scan", post(secrets::scan))
        .route("/v1/leases", get(leases::list))
        .route("/v1/leases/{id}", get(leases::get))
        .route("/v1/leases/{id}/revoke", post(leases::revoke))
        .route("/v1/grants", get(grants::list).post(grants::propose))
        .route("/v1/grants/{id}", get(grants::get))
        .route("/v1/grants/{id}/confirm", post(grants::confirm))
        .route("/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/v1/join", post(tasks::join))
        .route("/v1/instances/renew", post(tasks::renew_instance))
        .route("/v1/instances/{id}/revoke", post(admin::revoke_instance))
        .route("/v1/workflows", get(admin::list_workflows).post(admin::create_workflow))
        .route("/v1/workflows/{name}", get(admin::get_workflow))
        .route("/v1/workflows/{name}/suspend", post(admin::suspend_workflow))
        .route("/v1/workflows/{name}/resume", post(admin::resume_workflow))
        .route("/v1/workflows/{name}/tools", put(admin::set_workflow_tools))
        .route("/v1/workflows/{name}/trust", put(admin::set_workflow_trust))
        .route("/v1/workflows/{name}/owner", put(admin::set_workflow_owner))
        .route("/v1/workflows/{name}/governance", get(governance::get).put(governance::set))
        .route("/v1/signals/risk", post(governance::risk))
        .route("/v1/recertifications", get(governance::due).post(governance::recertify))
        .route("/v1/governance/report", get(governance::report))
        .route("/v1/reuse", get(governance::reuse))
        .route("/v1/agents/{name}/reuse", post(governance::accept_reuse))
        .route("/v1/workflows/{name}/usage", get(governance::usage))
        .route("/v1/workflows/{name}/usage/accept", post(governance::accept))
        .route("/v1/agents/{name}/owner", put(admin::set_agent_owner))
        .route("/v1/orphans", get(admin::orphans))
        .route("/v1/agents", get(admin::list_agents).post(admin::create_agent))
        .route("/v1/agents/{name}", get(admin::get_agent))
        .route("/v1/agents/{name}/disable", post(admin::disable_agent))
        .route("/v1/agents/{name}/enable", post(admin::enable_agent))
        .route("/v1/agents/{name}/join-tokens", post(admin::create_join_token))
        .route("/v1/tasks", get(tasks::list_tasks).post(tasks::start_task))
        .route("/v1/tasks/{id}", get(tasks::get_task))
        .route("/v1/tasks/{id}/complete", post(tasks::complete_task))
        .route("/v1/tasks/{id}/renew", post(tasks::renew_task))
        .route("/v1/tasks/{id}/revoke", post(tasks::revoke_task))
        .route("/v1/tasks/{id}/events", get(tasks::watch_task))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/verify", post(audit::verify))
        .route("/v1/audit/checkpoint", post(audit::checkpoint))
        .route("/v1/keys/rotate", post(admin::rotate_keys))
        .route("/v1/status", get(admin::status))
        .route("/v1/policies", get(policy::active).put(policy::push))
        .route("/v1/entities", post(policy::push_entities))
        .route("/v1/decisions", post(authzen::decide_task))
        .route("/v1/decisions/explain", post(authzen::explain))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/events", get(approvals::watch))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/auth/providers", get(humans::providers))
        .route("/v1/auth/oidc/{provider}/login", get(humans::login))
        .route("/v1/auth/oidc/callback", get(humans::callback))
        .route("/v1/auth/token", post(humans::token))
        .route("/v1/auth/session", get(humans::session))
        .route("/v1/auth/logout", post(humans::logout))
        .route("/v1/humans", get(humans::list).post(humans::create_local))
        .route("/v1/auth/local", post(humans::local_sign_in))
        .route("/v1/auth/totp", post(humans::enroll_totp))
        .route("/v1/auth/totp/confirm", post(humans::confirm_totp))
        .route("/v1/humans/{id}", get(humans::get))
        .route("/v1/humans/{id}/deactivate", post(humans::deactivate))
        .route("/v1/sessions/{id}/revoke", post(humans::revoke_session))
        .route("/access/v1/evaluation", post(authzen::evaluation_one))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/access/v1/search/subject", post(authzen::search_subject))
        .route("/access/v1/search/resource", post(authzen::search_resource))
        .route("/access/v1/search/action", post(authzen::search_action))
        .route("/.well-known/authzen-configuration", get(authzen::configuration))
        .route("/.well-known/ssf-configuration", get(ssf::configuration))
        .route("/ssf/streams", get(ssf::read).post(ssf::create).patch(ssf::update))
        .route("/ssf/streams", put(ssf::replace).delete(ssf::delete))
        .route("/ssf/status", get(ssf::status).post(ssf::set_status))
        .route("/ssf/verify", post(ssf::verify))
        .route("/ssf/poll/{stream_id}", post(ssf::poll))
        .route("/ssf/receive", post(ssf::receive))
        .nest("/scim/v2", scim::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(app.clone(), head_limits))
        .layer(axum::middleware::from_fn_with_state(app.clone(), record_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(app);
    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
            // Body size is enforced by `DefaultBodyLimit` in the extractors, whose rejection
            // becomes the usual JSON error (413) in one place.
            .layer(tower::limit::ConcurrencyLimitLayer::new(max_in_flight)),
    )
}
