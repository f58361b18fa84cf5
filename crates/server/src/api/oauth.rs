//! RFC 7662 token introspection and RFC 7009 token revocation.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;

use super::schema::{Introspection, Revoked};
use super::{AppState, Auth, Form};
use crate::api::error::{ApiError, ErrorBody};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    /// The token (a Remit-issued JWT-SVID).
    pub token: String,
    /// Accepted and ignored.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Introspects a Remit-issued token. Callers authenticate with the admin credential or a
/// live instance token (not a task token). Inactive tokens (expired, revoked, unknown, or of
/// a suspended workflow or disabled agent) answer `{"active": false}` and nothing else.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "OAuth", operation_id = "introspect_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = Introspection, description = "RFC 7662 introspection response"),
              (status = 400, body = ErrorBody, description = "malformed form (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token may not introspect")),
    security(("bearer" = [])))]
pub async fn introspect(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Form(form): Form<TokenForm>,
) -> Result<Json<Introspection>, ApiError> {
    // A resource server introspects; a task token does not look at other tokens.
    caller.require_not_task()?;
    let r = app.introspect(&form.token).await?;
    let Some(c) = r.claims else {
        tracing::debug!(reason = r.inactive_reason, "introspection: inactive");
        return Ok(Json(Introspection { active: false, ..Default::default() }));
    };
    Ok(Json(Introspection {
        active: true,
        iss: Some(c.iss),
        spiffe_id: Some(c.sub.clone()),
        sub: Some(c.sub),
        aud: Some(c.aud),
        exp: Some(c.exp),
        iat: Some(c.iat),
        jti: Some(c.jti),
        token_type: Some("jwt-svid".into()),
        remit: Some(c.remit),
    }))
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
