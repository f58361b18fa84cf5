//! Humans: signing in through an OpenID provider (the browser's code flow, and `remit login`'s
//! loopback hand-off), Remit's own sessions (who am I, refresh, sign out), and managing
//! humans and sessions (admin).

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use remit_core::human::HumanState;
use remit_core::ids::{HumanId, SessionId};
use serde::Deserialize;

use super::wire::*;
use super::{AppState, Auth, Body, Path, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};
use crate::service::signin::SessionTokens;
use crate::signin::flow::CliLogin;

/// The cookie binding a sign-in to the browser that began it.
const SIGNIN_COOKIE: &str = "remit_signin";
/// The cookie carrying a browser's session (read on `GET` only).
pub const SESSION_COOKIE: &str = "remit_session";

/// Reads one cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(app: &AppState, name: &str, value: &str, path: &str, max_age: u64, same_site: &str) -> HeaderValue {
    let secure = if app.cfg.public_url().starts_with("https://") { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn tokens_view(app: &AppState, t: SessionTokens) -> SessionTokensView {
    let now = app.clock.now();
    SessionTokensView {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: "Bearer".into(),
        expires_in: (t.expires_at.0 - now.0).max(0) / 1000,
        expires_at: rfc3339(t.expires_at),
        session: t.session.to_string(),
    }
}

/// The OpenID providers humans sign in through.
#[utoipa::path(get, path = "/v1/auth/providers", tag = "humans",
    responses((status = 200, body = Vec<ProviderView>, description = "the configured providers")))]
pub async fn providers(State(app): State<AppState>) -> Json<Vec<ProviderView>> {
    Json(
        app.providers
            .all()
            .iter()
            .map(|p| ProviderView {
                name: p.cfg.name.clone(),
                issuer: p.cfg.issuer.clone(),
                login: format!("/v1/auth/oidc/{}/login", p.cfg.name),
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LoginQuery {
    /// For `remit login`: its loopback URL (`http://127.0.0.1:PORT/…`).
    pub redirect_uri: Option<String>,
    /// For `remit login`: the S256 challenge of its own PKCE verifier.
    pub code_challenge: Option<String>,
    /// `S256` (the only method).
    pub code_challenge_method: Option<String>,
    /// For `remit login`: its `state`, echoed back.
    pub state: Option<String>,
}

/// Starts a sign-in: redirects the browser to the provider (code flow with PKCE, `state`
/// and `nonce`) and sets a cookie binding the sign-in to this browser.
#[utoipa::path(get, path = "/v1/auth/oidc/{provider}/login", tag = "humans", params(("provider" = String, Path, description = "provider name"), LoginQuery),
    responses((status = 303, description = "to the provider's authorization endpoint"),
              (status = 400, body = ErrorBody, description = "a bad loopback redirect or challenge"),
              (status = 404, body = ErrorBody, description = "no such provider"),
              (status = 503, body = ErrorBody, description = "the provider's discovery document could not be read")))]
pub async fn login(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let cli = match (q.redirect_uri, q.code_challenge, q.state) {
        (None, None, None) => None,
        (Some(redirect), Some(challenge), Some(state)) => {
            if q.code_challenge_method.as_deref().unwrap_or("S256") != "S256" {
                return Err(ApiError::BadRequest("`code_challenge_method` must be `S256`".into()));
            }
            Some(CliLogin { redirect, challenge, state })
        }
        _ => return Err(ApiError::BadRequest("`redirect_uri`, `code_challenge` and `state` go together".into())),
    };
    let started = app.begin_sign_in(&provider, cli).await?;
    let ttl = app.cfg.sessions.sign_in_timeout.as_secs();
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(LOCATION, HeaderValue::from_str(&started.authorize_url).map_err(|e| ApiError::Internal(e.to_string()))?);
    // Lax: the provider's redirect back is a top-level navigation from another site.
    h.insert(SET_COOKIE, set_cookie(&app, SIGNIN_COOKIE, &started.binding, "/v1/auth/oidc", ttl, "Lax"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The provider's error code, when it refused.
    pub error: Option<String>,
}

/// The provider's redirect back. For `remit login`: on to its loopback listener with a
/// one-time code; for a browser: a session cookie and a page saying who signed in.
#[utoipa::path(get, path = "/v1/auth/oidc/callback", tag = "humans", params(CallbackQuery),
    responses((status = 200, body = String, content_type = "text/html", description = "signed in (an HTML page; the session is in an HttpOnly cookie)"),
              (status = 303, description = "to `remit login`'s loopback listener"),
              (status = 400, body = ErrorBody, description = "a missing, altered, expired or foreign `state`"),
              (status = 401, body = ErrorBody, description = "the ID token was refused"),
              (status = 403, body = ErrorBody, description = "the provider or Remit refused this human"),
              (status = 503, body = ErrorBody, description = "the provider could not be reached")))]
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let state = q.state.ok_or_else(|| ApiError::BadRequest("`state` is required".into()))?;
    let binding = cookie(&headers, SIGNIN_COOKIE);
    let code = match (q.code, q.error) {
        (_, Some(e)) => {
            let e: String = e.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            app.refuse_provider_error(&state, binding, &e).await?;
            return Err(ApiError::Denied(format!("the identity provider refused the sign-in ({e})")));
        }
        (Some(c), None) => c,
        (None, None) => return Err(ApiError::BadRequest("`code` is required".into())),
    };
    let done = app.finish_sign_in(&code, &state, binding).await?;
    let clear = set_cookie(&app, SIGNIN_COOKIE, "", "/v1/auth/oidc", 0, "Lax");
    if let Some(to) = done.cli_redirect {
        let mut resp = StatusCode::SEE_OTHER.into_response();
        let h = resp.headers_mut();
        h.insert(LOCATION, HeaderValue::from_str(&to).map_err(|e| ApiError::Internal(e.to_string()))?);
        h.insert(SET_COOKIE, clear);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    let ttl = app.cfg.sessions.access_ttl.as_secs();
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Remit</title><p>Signed in to Remit as <b>{}</b>. You can close this window.",
        html_escape(&done.human.email)
    );
    let mut resp = Html(page).into_response();
    let h = resp.headers_mut();
    h.append(SET_COOKIE, clear);
    h.append(SET_COOKIE, set_cookie(&app, SESSION_COOKIE, &done.tokens.access_token, "/", ttl, "Strict"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `remit login`'s last step (the hand-off code and its PKCE verifier), or a refresh (the
/// refresh token, which works once: a second use revokes the session).
#[utoipa::path(post, path = "/v1/auth/token", tag = "humans", request_body = SessionTokenRequest,
    responses((status = 200, body = SessionTokensView, description = "the session's tokens"),
              (status = 400, body = ErrorBody, description = "a bad grant, code or verifier"),
              (status = 401, body = ErrorBody, description = "the refresh token is not valid, reused, or the session ended")))]
pub async fn token(State(app): State<AppState>, Body(r): Body<SessionTokenRequest>) -> Result<Response, ApiError> {
    let t = match r.grant_type.as_str() {
        "authorization_code" => {
            let (Some(code), Some(verifier)) = (r.code, r.code_verifier) else {
                return Err(ApiError::BadRequest("`code` and `code_verifier` are required".into()));
            };
            app.redeem_login(&code, &verifier)?
        }
        "refresh_token" => {
            let rt = r.refresh_token.ok_or_else(|| ApiError::BadRequest("`refresh_token` is required".into()))?;
            app.refresh_session(&rt).await?
        }
        g => {
            return Err(ApiError::BadRequest(format!(
                "unsupported `grant_type` `{}`",
                remit_core::ids::truncate_for_error(g)
            )));
        }
    };
    let mut resp = Json(tokens_view(&app, t)).into_response();
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The signed-in human and their session.
#[utoipa::path(get, path = "/v1/auth/session", tag = "humans",
    responses((status = 200, body = WhoAmI, description = "who is signed in"),
              (status = 401, body = ErrorBody, description = "no valid session"),
              (status = 403, body = ErrorBody, description = "the credential is not a human's session")),
    security(("bearer" = [])))]
pub async fn session(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<WhoAmI>, ApiError> {
    let (h, s) = app.whoami(&caller).await?;
    Ok(Json(WhoAmI { human: h.into(), session: s.into() }))
}

/// Signs out: revokes the caller's own session (and clears the browser's cookie).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "humans",
    responses((status = 200, body = SessionView, description = "the revoked session"),
              (status = 401, body = ErrorBody, description = "no valid session"),
              (status = 403, body = ErrorBody, description = "the credential is not a human's session")),
    security(("bearer" = [])))]
pub async fn logout(State(app): State<AppState>, Auth(caller): Auth) -> Result<Response, ApiError> {
    let s = app.sign_out(&caller).await?;
    let mut resp = Json(SessionView::from(s)).into_response();
    resp.headers_mut().insert(SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", "/", 0, "Strict"));
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HumansQuery {
    /// `unverified`, `active` or `deactivated`.
    pub state: Option<String>,
    /// Only humans whose email sorts after this (paging).
    pub after: Option<String>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

/// Humans known to Remit, by email.
#[utoipa::path(get, path = "/v1/humans", tag = "humans", params(HumansQuery),
    responses((status = 200, body = Vec<HumanView>, description = "humans, ordered by email"),
              (status = 400, body = ErrorBody, description = "unknown state"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<HumansQuery>,
) -> Result<Json<Vec<HumanView>>, ApiError> {
    let state =
        q.state.map(|s| s.parse::<HumanState>().map_err(|e| ApiError::BadRequest(e.to_string()))).transpose()?;
    let hs = app.list_humans(&caller, state, q.after, q.limit.unwrap_or(100)).await?;
    Ok(Json(hs.into_iter().map(HumanView::from).collect()))
}

/// One human and their sessions.
#[utoipa::path(get, path = "/v1/humans/{id}", tag = "humans", params(("id" = String, Path, description = "human id")),
    responses((status = 200, body = HumanDetail, description = "the human and their sessions"),
              (status = 400, body = ErrorBody, description = "not a human id"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such human")),
    security(("bearer" = [])))]
pub async fn get(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<HumanDetail>, ApiError> {
    let (h, sessions) = app.human(&caller, &parse_id(&id, HumanId::parse)?).await?;
    Ok(Json(HumanDetail { human: h.into(), sessions: sessions.into_iter().map(SessionView::from).collect() }))
}

/// Deactivates a human: their sessions are revoked and what they own is orphaned, in one
/// transaction; the record stays for the audit trail.
#[utoipa::path(post, path = "/v1/humans/{id}/deactivate", tag = "humans", request_body = Reason,
    params(("id" = String, Path, description = "human id")),
    responses((status = 200, body = DeactivationView, description = "what was revoked and orphaned"),
              (status = 400, body = ErrorBody, description = "not a human id, or no reason"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such human"),
              (status = 409, body = ErrorBody, description = "already deactivated")),
    security(("bearer" = [])))]
pub async fn deactivate(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<DeactivationView>, ApiError> {
    let d = app.deactivate_human(&caller, &parse_id(&id, HumanId::parse)?, &r.reason).await?;
    Ok(Json(DeactivationView {
        human: d.human.into(),
        sessions_revoked: d.sessions_revoked.iter().map(ToString::to_string).collect(),
        workflows_orphaned: d.workflows_orphaned.iter().map(ToString::to_string).collect(),
        agents_orphaned: d.agents_orphaned.iter().map(ToString::to_string).collect(),
    }))
}

/// Revokes one session.
#[utoipa::path(post, path = "/v1/sessions/{id}/revoke", tag = "humans", request_body = Reason,
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionView, description = "the revoked session"),
              (status = 400, body = ErrorBody, description = "not a session id, or no reason"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such session"),
              (status = 409, body = ErrorBody, description = "already revoked")),
    security(("bearer" = [])))]
pub async fn revoke_session(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Body(r): Body<Reason>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(app.revoke_session(&caller, &parse_id(&id, SessionId::parse)?, &r.reason).await?.into()))
}

/// Creates a local human (for setups without an identity provider) with a password.
#[utoipa::path(post, path = "/v1/humans", tag = "humans", request_body = CreateLocalHuman,
    responses((status = 201, body = HumanView, description = "the new human"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 409, body = ErrorBody, description = "a human with that email exists")),
    security(("bearer" = [])))]
pub async fn create_local(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(b): Body<CreateLocalHuman>,
) -> Result<(StatusCode, Json<HumanView>), ApiError> {
    let roles = b
        .roles
        .iter()
        .map(|r| r.parse().map_err(|e: remit_core::DomainError| ApiError::BadRequest(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let h = app.create_local_human(&caller, &b.email, &b.display_name, roles, &b.password).await?;
    Ok((StatusCode::CREATED, Json(h.into())))
}

/// A local human signs in with their password (and a code once a second factor is enrolled).
/// Every refusal reads the same; five in a row lock the account for 15 minutes.
#[utoipa::path(post, path = "/v1/auth/local", tag = "humans", request_body = LocalSignIn,
    responses((status = 200, body = SessionTokensView, description = "the session's tokens"),
              (status = 400, body = ErrorBody, description = "a malformed request"),
              (status = 401, body = ErrorBody, description = "wrong email, password or code, or the account is locked")))]
pub async fn local_sign_in(State(app): State<AppState>, Body(b): Body<LocalSignIn>) -> Result<Response, ApiError> {
    let (_, t) = app.local_sign_in(&b.email, &b.password, b.code.as_deref()).await?;
    let mut resp = Json(tokens_view(&app, t)).into_response();
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Starts enrolling a second factor (TOTP) for the signed-in local human.
#[utoipa::path(post, path = "/v1/auth/totp", tag = "humans",
    responses((status = 200, body = TotpEnrolmentView, description = "the secret, shown once"),
              (status = 401, body = ErrorBody, description = "no valid session"),
              (status = 403, body = ErrorBody, description = "not a human's session"),
              (status = 409, body = ErrorBody, description = "already enrolled, or not a local human")),
    security(("bearer" = [])))]
pub async fn enroll_totp(State(app): State<AppState>, Auth(caller): Auth) -> Result<Response, ApiError> {
    let e = app.enroll_totp(&caller).await?;
    let mut resp = Json(TotpEnrolmentView { secret: e.secret, uri: e.uri }).into_response();
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Confirms the second factor with a first code: from now on, signing in needs one.
#[utoipa::path(post, path = "/v1/auth/totp/confirm", tag = "humans", request_body = TotpCode,
    responses((status = 204, description = "enrolled"),
              (status = 400, body = ErrorBody, description = "the code does not match"),
              (status = 401, body = ErrorBody, description = "no valid session"),
              (status = 403, body = ErrorBody, description = "not a human's session"),
              (status = 409, body = ErrorBody, description = "no enrolment waiting")),
    security(("bearer" = [])))]
pub async fn confirm_totp(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(b): Body<TotpCode>,
) -> Result<StatusCode, ApiError> {
    app.confirm_totp(&caller, &b.code).await?;
    Ok(StatusCode::NO_CONTENT)
}
