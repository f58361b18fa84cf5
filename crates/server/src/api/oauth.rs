//! RFC 7662 token introspection, RFC 7009 token revocation and the RFC 8693 token exchange
//! at the token endpoint.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::schema::{Introspection, Revoked, TokenResponse};
use super::{AppState, Form, OPERATOR_HEADER, bearer_of};
use crate::api::error::{ApiError, ErrorBody, OAuthErrorBody};
use crate::error::OAuthError;
use crate::service::Caller;
use crate::service::exchange::{ExchangeRequest, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS};
use crate::service::federation::GRANT_JWT_BEARER;
use crate::service::tools::TOOL_SECRET_PREFIX;
use remit_token::SvidKind;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// The token (a Remit-issued JWT-SVID).
    pub token: String,
    /// Accepted and ignored.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Introspects a Remit-issued token. Callers authenticate with the admin credential, a live
/// instance token (not a task token), or a tool's own secret (`remit_tool.…`, from `remit tool
/// create`), which sees only credentials issued for that tool. Inactive tokens (expired,
/// revoked, unknown, of a suspended workflow or disabled agent, a credential of an ended task
/// or a disabled tool) answer `{"active": false}` and nothing else.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "OAuth", operation_id = "introspect_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = Introspection, description = "RFC 7662 introspection response"),
              (status = 400, body = ErrorBody, description = "malformed form (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token may not introspect")),
    security(("bearer" = [])))]
pub async fn introspect(
    State(app): State<AppState>,
    IntrospectAuth(tool): IntrospectAuth,
    Form(form): Form<TokenForm>,
) -> Result<impl IntoResponse, ApiError> {
    let r = app.introspect(&form.token, tool.as_ref()).await?;
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    let Some(c) = r.claims else {
        tracing::debug!(reason = r.inactive_reason, "introspection: inactive");
        return Ok((no_store, Json(Introspection { active: false, ..Default::default() })));
    };
    let svid = c.remit.kind != SvidKind::Tool;
    let token_type = match (svid, c.cnf.is_some()) {
        (true, _) => "jwt-svid",
        (false, true) => "DPoP",
        (false, false) => "Bearer",
    };
    Ok((
        no_store,
        Json(Introspection {
            active: true,
            iss: Some(c.iss),
            spiffe_id: svid.then(|| c.sub.clone()),
            sub: Some(c.sub),
            aud: Some(c.aud),
            exp: Some(c.exp),
            iat: Some(c.iat),
            jti: Some(c.jti),
            token_type: Some(token_type.into()),
            scope: c.scope,
            act: c.act.map(|a| serde_json::to_value(a).unwrap_or_default()),
            cnf: c.cnf.map(|x| serde_json::json!({"jkt": x.jkt})),
            remit: Some(c.remit),
        }),
    ))
}

/// Who may introspect, established before the body is read: a tool by its own secret (it
/// then sees only its own credentials), or a caller that is neither a task nor a human.
pub struct IntrospectAuth(Option<remit_core::tool::Tool>);

impl axum::extract::FromRequestParts<AppState> for IntrospectAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &AppState) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let bearer = bearer_of(headers).ok_or_else(ApiError::unauthenticated)?;
        if bearer.starts_with(TOOL_SECRET_PREFIX) {
            let t = app.tool_by_secret(bearer).await?;
            return Ok(IntrospectAuth(Some(
                t.ok_or_else(|| ApiError::Unauthenticated("the tool credential is not valid".into()))?,
            )));
        }
        let operator = headers.get(OPERATOR_HEADER).and_then(|v| v.to_str().ok());
        let caller = app.authenticate(bearer, operator).await?;
        if let Caller::Admin { .. } = caller {
            app.break_glass_used(&caller, "POST", "/oauth2/introspect").await;
        }
        // A resource server introspects; a task token does not look at other tokens.
        caller.require_not_task()?;
        Ok(IntrospectAuth(None))
    }
}

/// The OAuth 2.0 token endpoint; the one grant is RFC 8693 token exchange
/// (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`): a task's token
/// (`subject_token`, `subject_token_type` `…:jwt` or `…:access_token`) for a credential for
/// one registered tool (`audience`: its name or audience URI, or `resource`: its audience
/// URI), with the `scope`s the policy grants (each decided as the Cedar action of the same
/// name on `Tool::"<name>"`). Optional: `actor_token` (the instance token running the task),
/// `requested_token_type`, and Remit's `approval` (repeatable; an approved request for a scope
/// that needed one). No client authentication: the subject token is the authority. With a
/// `DPoP` proof header (RFC 9449) the credential is bound to the proof's key (`token_type:
/// DPoP`, `cnf.jkt`); a DPoP-bound subject token needs a proof from its own key
/// (`invalid_dpop_proof` otherwise). Errors
/// follow RFC 6749 §5.2 (`invalid_request`, `invalid_target`, `invalid_scope`,
/// `unsupported_grant_type`).
#[utoipa::path(post, path = "/oauth2/token", tag = "OAuth", operation_id = "token_exchange",
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse, description = "the issued credential (`Cache-Control: no-store`)"),
              (status = 400, body = OAuthErrorBody, description = "RFC 6749 §5.2 error")))]
pub async fn token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(OAuthError::new("invalid_request", "the body must be `application/x-www-form-urlencoded`").into());
    }
    let mut req = match parse_token_form(&body)? {
        TokenRequest::Exchange(r) => *r,
        TokenRequest::JwtBearer { assertion } => {
            let f = app.jwt_bearer(&assertion).await?;
            let body = TokenResponse {
                access_token: f.token,
                issued_token_type: "urn:ietf:params:oauth:token-type:jwt".into(),
                token_type: "Bearer".into(),
                expires_in: i64::try_from(f.expires_in).unwrap_or(i64::MAX),
                scope: None,
                spiffe_id: Some(f.spiffe_id),
            };
            return Ok(
                ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
            );
        }
    };
    req.dpop_proof = super::dpop_header(&headers)
        .map_err(|e| OAuthError::new("invalid_dpop_proof", e.to_string()))?
        .map(str::to_owned);
    let issued = app.exchange(req).await?;
    let body = TokenResponse {
        access_token: issued.token,
        issued_token_type: TOKEN_TYPE_ACCESS.into(),
        token_type: if issued.bound { "DPoP" } else { "Bearer" }.into(),
        expires_in: issued.expires_in,
        scope: Some(issued.scope),
        spiffe_id: None,
    };
    Ok(([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response())
}

/// A parsed token request: one of the two grants.
enum TokenRequest {
    Exchange(Box<ExchangeRequest>),
    /// RFC 7523: a platform's token attesting a workload (`[[workload_issuers]]`).
    JwtBearer {
        assertion: String,
    },
}

/// The form of a token request, described for the OpenAPI document (parsed by hand so a
/// repeated parameter is caught).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    grant_type: String,
    /// A task token.
    subject_token: String,
    /// `urn:ietf:params:oauth:token-type:jwt` or `urn:ietf:params:oauth:token-type:access_token`.
    subject_token_type: String,
    /// The tool: its name or audience URI (repeatable, all naming the same tool).
    audience: Option<String>,
    /// The tool's audience URI (repeatable).
    resource: Option<String>,
    /// Space-separated scopes; all the tool's scopes when absent.
    scope: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    requested_token_type: Option<String>,
    /// An approved approval request for one of the scopes (repeatable).
    approval: Option<String>,
}

/// Parses the form; a parameter other than `audience`, `resource` and `approval` may appear
/// once (RFC 6749 §3.2), and an unknown one is ignored (RFC 6749 §3.2).
fn parse_token_form(body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let mut req = ExchangeRequest::default();
    let mut grant: Option<String> = None;
    let mut assertion: Option<String> = None;
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        let (k, v) = (k.into_owned(), v.into_owned());
        let repeatable = matches!(k.as_str(), "audience" | "resource" | "approval");
        if !repeatable && !seen.insert(k.clone()) {
            return Err(OAuthError::new("invalid_request", format!("`{k}` appears more than once")));
        }
        match k.as_str() {
            "grant_type" => grant = Some(v),
            "subject_token" => req.subject_token = Some(v),
            "subject_token_type" => req.subject_token_type = Some(v),
            "actor_token" => req.actor_token = Some(v),
            "actor_token_type" => req.actor_token_type = Some(v),
            "scope" => req.scope = Some(v),
            "requested_token_type" => req.requested_token_type = Some(v),
            "audience" => req.audience.push(v),
            "resource" => req.resource.push(v),
            "approval" => req.approvals.push(v),
            "assertion" => assertion = Some(v),
            _ => {}
        }
    }
    if req.audience.len() + req.resource.len() > 16 || req.approvals.len() > 16 {
        return Err(OAuthError::new("invalid_request", "at most 16 `audience`/`resource` and 16 `approval` values"));
    }
    match grant.as_deref() {
        None => Err(OAuthError::new("invalid_request", "`grant_type` is required")),
        Some(GRANT_TOKEN_EXCHANGE) => Ok(TokenRequest::Exchange(Box::new(req))),
        Some(GRANT_JWT_BEARER) => Ok(TokenRequest::JwtBearer {
            assertion: assertion.ok_or_else(|| OAuthError::new("invalid_request", "`assertion` is required"))?,
        }),
        Some(_) => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("the grants are `{GRANT_TOKEN_EXCHANGE}` and `{GRANT_JWT_BEARER}`"),
        )),
    }
}

/// Revokes the task or instance identity behind a token. Possession is the authority; per
/// RFC 7009 the answer is 200 whether or not the token was valid.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "OAuth", operation_id = "revoke_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = Revoked, description = "revoked (or nothing to revoke): `{}`"),
              (status = 400, body = ErrorBody, description = "malformed form (the message names the field)")))]
pub async fn revoke(
    State(app): State<AppState>,
    _h: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Json<Revoked>, ApiError> {
    app.revoke_token(&form.token).await?;
    Ok(Json(Revoked {}))
}
