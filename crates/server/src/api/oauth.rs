//! RFC 7662 token introspection and RFC 7009 token revocation.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Auth, Form};
use crate::api::error::ApiError;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    pub token: String,
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Introspects a Remit-issued token. Callers authenticate with the admin credential or a
/// live instance token (not a task token). Inactive tokens (expired, revoked, unknown, or of
/// a suspended workflow or disabled agent) answer `{"active": false}` and nothing else.
#[utoipa::path(post, path = "/oauth2/introspect", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "RFC 7662 introspection response"), (status = 401, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn introspect(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Form(form): Form<TokenForm>,
) -> Result<Json<Value>, ApiError> {
    // A resource server introspects; a task token does not look at other tokens.
    caller.require_not_task()?;
    let r = app.introspect(&form.token).await?;
    let Some(c) = r.claims else {
        tracing::debug!(reason = r.inactive_reason, "introspection: inactive");
        return Ok(Json(json!({"active": false})));
    };
    Ok(Json(json!({
        "active": true,
        "iss": c.iss,
        "sub": c.sub,
        "aud": c.aud,
        "exp": c.exp,
        "iat": c.iat,
        "jti": c.jti,
        "token_type": "jwt-svid",
        "spiffe_id": c.sub,
        (remit_token::jwt::REMIT_CLAIM): c.remit,
    })))
}

/// Revokes the task or instance identity behind a token. Possession is the authority; per
/// RFC 7009 the answer is 200 whether or not the token was valid.
#[utoipa::path(post, path = "/oauth2/revoke", request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "revoked (or nothing to revoke)")))]
pub async fn revoke(
    State(app): State<AppState>,
    _h: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Json<Value>, ApiError> {
    app.revoke_token(&form.token).await?;
    Ok(Json(json!({})))
}
