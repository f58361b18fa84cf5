//! The Shared Signals Framework transmitter's HTTP surface (OpenID SSF 1.0): discovery at
//! `/.well-known/ssf-configuration`, the stream management API under `/ssf/…` and RFC 8936 poll
//! delivery. Receivers authenticate with a tool's own secret (`remit_tool.…`) or as an
//! administrator with `signals.manage`; a task, an instance or a SET is never a receiver.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{AppState, Body, OPERATOR_HEADER, Query, bearer_of};
use crate::api::error::{ApiError, ErrorBody};
use crate::governance::ssf::{PollRequest, PollResponse, Receiver, StreamConfig, StreamRequest, StreamStatus};
use crate::service::tools::TOOL_SECRET_PREFIX;

/// The authenticated receiver.
pub struct SsfAuth(pub Receiver);

impl FromRequestParts<AppState> for SsfAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let bearer = bearer_of(&parts.headers).ok_or_else(ApiError::unauthenticated)?;
        if bearer.starts_with(TOOL_SECRET_PREFIX) {
            let t = app.tool_by_secret(bearer).await?;
            let t = t.ok_or_else(|| ApiError::Unauthenticated("the tool credential is not valid".into()))?;
            return Ok(SsfAuth(Receiver::of_tool(t)));
        }
        let operator = parts.headers.get(OPERATOR_HEADER).and_then(|v| v.to_str().ok());
        let caller = app.authenticate(bearer, operator).await?;
        if let crate::caller::Caller::Admin { .. } = caller {
            app.break_glass_used(&caller, super::method_label(&parts.method), "/ssf").await;
        }
        Ok(SsfAuth(app.ssf_admin_receiver(&caller).await?))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The stream (omitted: every stream of this receiver).
    pub stream_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    pub stream_id: String,
    /// Echoed in the verification event.
    #[serde(default)]
    pub state: Option<String>,
}

/// One stream (asked for by `stream_id`) or every stream of the receiver.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StreamRead {
    One(Box<StreamConfig>),
    All(Vec<StreamConfig>),
}

fn no_store<T: IntoResponse>(status: StatusCode, body: T) -> axum::response::Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    r
}

/// The transmitter configuration metadata (SSF 1.0 §7.1). Anonymous.
#[utoipa::path(get, path = "/.well-known/ssf-configuration", tag = "shared signals", operation_id = "ssf_configuration",
    responses((status = 200, body = Object, description = "SSF transmitter metadata")))]
pub async fn configuration(State(app): State<AppState>) -> impl IntoResponse {
    Json(app.ssf_configuration())
}

/// Creates a stream (SSF §8.1.1.1). No `delivery` means poll; push needs `endpoint_url`
/// (https, or http on loopback) and may carry `authorization_header`, sent with every push and
/// never shown again.
#[utoipa::path(post, path = "/ssf/streams", tag = "shared signals", operation_id = "ssf_create_stream",
    request_body = StreamRequest,
    responses((status = 201, body = StreamConfig, description = "the stream"),
              (status = 400, body = ErrorBody, description = "invalid configuration"),
              (status = 401, body = ErrorBody, description = "no valid receiver credential"),
              (status = 409, body = ErrorBody, description = "this receiver holds its maximum of streams")),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Body(req): Body<StreamRequest>,
) -> Result<axum::response::Response, ApiError> {
    Ok(no_store(StatusCode::CREATED, Json(app.create_stream(&r, req).await?)))
}

/// Reads one stream, or (without `stream_id`) all of this receiver's as an array.
#[utoipa::path(get, path = "/ssf/streams", tag = "shared signals", operation_id = "ssf_read_streams",
    params(StreamQuery),
    responses((status = 200, body = StreamRead, description = "the stream, or an array of streams"),
              (status = 401, body = ErrorBody, description = "no valid receiver credential"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver")),
    security(("bearer" = [])))]
pub async fn read(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Query(q): Query<StreamQuery>,
) -> Result<axum::response::Response, ApiError> {
    let mut all = app.read_streams(&r, q.stream_id.as_deref()).await?;
    Ok(match q.stream_id {
        Some(_) => no_store(StatusCode::OK, Json(StreamRead::One(Box::new(all.remove(0))))),
        None => no_store(StatusCode::OK, Json(StreamRead::All(all))),
    })
}

/// Updates a stream's receiver-supplied properties (SSF §8.1.1.3); absent ones stay.
#[utoipa::path(patch, path = "/ssf/streams", tag = "shared signals", operation_id = "ssf_update_stream",
    request_body = StreamRequest,
    responses((status = 200, body = StreamConfig, description = "the updated stream"),
              (status = 400, body = ErrorBody, description = "invalid, or a transmitter property differs"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver"),
              (status = 409, body = ErrorBody, description = "the stream changed meanwhile (read it and retry)")),
    security(("bearer" = [])))]
pub async fn update(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Body(req): Body<StreamRequest>,
) -> Result<axum::response::Response, ApiError> {
    Ok(no_store(StatusCode::OK, Json(app.update_stream(&r, req, false).await?)))
}

/// Replaces a stream's receiver-supplied properties (SSF §8.1.1.4); absent ones are cleared.
#[utoipa::path(put, path = "/ssf/streams", tag = "shared signals", operation_id = "ssf_replace_stream",
    request_body = StreamRequest,
    responses((status = 200, body = StreamConfig, description = "the replaced stream"),
              (status = 400, body = ErrorBody, description = "invalid, or a transmitter property differs"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver"),
              (status = 409, body = ErrorBody, description = "the stream changed meanwhile (read it and retry)")),
    security(("bearer" = [])))]
pub async fn replace(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Body(req): Body<StreamRequest>,
) -> Result<axum::response::Response, ApiError> {
    Ok(no_store(StatusCode::OK, Json(app.update_stream(&r, req, true).await?)))
}

/// Deletes a stream and what was queued for it.
#[utoipa::path(delete, path = "/ssf/streams", tag = "shared signals", operation_id = "ssf_delete_stream",
    params(StreamQuery),
    responses((status = 204, description = "deleted"),
              (status = 400, body = ErrorBody, description = "`stream_id` missing"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver")),
    security(("bearer" = [])))]
pub async fn delete(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Query(q): Query<StreamQuery>,
) -> Result<StatusCode, ApiError> {
    let id = q.stream_id.ok_or_else(|| ApiError::BadRequest("`stream_id` is required".into()))?;
    app.delete_stream(&r, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A stream's status (SSF §8.1.2.1).
#[utoipa::path(get, path = "/ssf/status", tag = "shared signals", operation_id = "ssf_read_status",
    params(StreamQuery),
    responses((status = 200, body = StreamStatus, description = "the status"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver")),
    security(("bearer" = [])))]
pub async fn status(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Query(q): Query<StreamQuery>,
) -> Result<Json<StreamStatus>, ApiError> {
    let id = q.stream_id.ok_or_else(|| ApiError::BadRequest("`stream_id` is required".into()))?;
    Ok(Json(app.stream_status(&r, &id).await?))
}

/// Sets a stream's status (SSF §8.1.2.2): `paused` holds SETs, `disabled` drops them.
#[utoipa::path(post, path = "/ssf/status", tag = "shared signals", operation_id = "ssf_update_status",
    request_body = StreamStatus,
    responses((status = 200, body = StreamStatus, description = "the new status"),
              (status = 400, body = ErrorBody, description = "not a status"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver"),
              (status = 409, body = ErrorBody, description = "the stream changed meanwhile (read it and retry)")),
    security(("bearer" = [])))]
pub async fn set_status(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Body(req): Body<StreamStatus>,
) -> Result<Json<StreamStatus>, ApiError> {
    Ok(Json(app.set_stream_status(&r, req).await?))
}

/// Asks for a verification event (SSF §8.1.4), delivered like any other SET.
#[utoipa::path(post, path = "/ssf/verify", tag = "shared signals", operation_id = "ssf_verify",
    request_body = VerifyRequest,
    responses((status = 204, description = "the verification event is queued"),
              (status = 400, body = ErrorBody, description = "invalid, or the stream is disabled (nothing would be delivered)"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver"),
              (status = 429, body = ErrorBody, description = "sooner than min_verification_interval")),
    security(("bearer" = [])))]
pub async fn verify(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    Body(req): Body<VerifyRequest>,
) -> Result<StatusCode, ApiError> {
    app.verify_stream(&r, &req.stream_id, req.state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// RFC 8936 poll delivery: acknowledges `ack` (and `setErrs`), then answers the queued SETs,
/// waiting up to 20 s for one unless `returnImmediately`.
#[utoipa::path(post, path = "/ssf/poll/{stream_id}", tag = "shared signals", operation_id = "ssf_poll",
    params(("stream_id" = String, Path, description = "the stream")),
    request_body = PollRequest,
    responses((status = 200, body = PollResponse, description = "`sets` by jti, `moreAvailable`"),
              (status = 400, body = ErrorBody, description = "invalid poll, or a push stream"),
              (status = 404, body = ErrorBody, description = "no such stream for this receiver")),
    security(("bearer" = [])))]
pub async fn poll(
    State(app): State<AppState>,
    SsfAuth(r): SsfAuth,
    super::Path(id): super::Path<String>,
    Body(req): Body<PollRequest>,
) -> Result<axum::response::Response, ApiError> {
    Ok(no_store(StatusCode::OK, Json(app.poll_stream(&r, &id, req).await?)))
}

/// RFC 8935 push delivery *to* Remit: a Security Event Token from a configured transmitter
/// (`[[ssf_transmitters]]`), verified by its JWKS and acted on (CAEP `session-revoked`: the
/// human's sessions end; RISC `account-disabled`, `credential-compromise`…: the human is
/// deactivated). The SET is its own authentication. `202` when accepted; `400` with `{err,
/// description}` when refused.
#[utoipa::path(post, path = "/ssf/receive", tag = "shared signals", operation_id = "ssf_receive",
    request_body(content = String, content_type = "application/secevent+jwt"),
    responses((status = 202, description = "accepted"),
              (status = 400, body = SetError, description = "refused (RFC 8935 error)"),
              (status = 503, body = SetError, description = "not acted on for now (`temporarily_unavailable`: the transmitter's keys unreachable, the store failing); the SET was not spent: send it again after `Retry-After`")))]
pub async fn receive(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let answer = if !ct.starts_with("application/secevent+jwt") {
        Err(crate::governance::receive::refuse("invalid_request", "Content-Type must be application/secevent+jwt"))
    } else {
        match std::str::from_utf8(&body) {
            Ok(t) => app.receive_set(t.trim()).await,
            Err(_) => Err(crate::governance::receive::refuse("invalid_request", "not UTF-8")),
        }
    };
    match answer {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(r) => {
            let status = if r.retry { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
            let mut resp = (status, Json(SetError { err: r.err, description: r.description })).into_response();
            let h = resp.headers_mut();
            h.insert(axum::http::header::CONTENT_LANGUAGE, axum::http::HeaderValue::from_static("en"));
            if r.retry {
                h.insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            }
            resp
        }
    }
}

/// RFC 8935 §2.3 error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SetError {
    /// `invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience` (400);
    /// `temporarily_unavailable` (503, with `Retry-After`: send the SET again).
    pub err: &'static str,
    pub description: String,
}
