//! API errors and their mapping to HTTP, in one place.
//!
//! Every failure a handler can return becomes an [`ApiError`]; [`ApiError::status`] is the
//! only place a status code is chosen. Internal failures reach the client as an opaque
//! error id; the detail goes to the log under the same id. No message carries a token,
//! key or secret.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// A DPoP-bound token without a valid proof (401 with `WWW-Authenticate: DPoP`).
    #[error("{0}")]
    DpopRequired(String),
    /// An OAuth token endpoint error, answered in RFC 6749 §5.2's shape.
    #[error("{}", .0.description)]
    OAuth(crate::error::OAuthError),
}

/// The body of an OAuth token endpoint error (RFC 6749 §5.2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_target`, `invalid_scope`, `unsupported_grant_type`.
    #[schema(example = "invalid_target")]
    pub error: &'static str,
    pub error_description: String,
    /// The approval requests a human must decide before the scopes are granted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approval_ids: Vec<String>,
}

impl From<crate::error::OAuthError> for ApiError {
    fn from(e: crate::error::OAuthError) -> Self {
        match e.service {
            Some(s) => s.into(),
            None => ApiError::OAuth(e),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `bad_request`, `unauthenticated`, `denied`,
    /// `not_found`, `conflict`, `method_not_allowed`, `request_timeout`, `payload_too_large`,
    /// `uri_too_long`, `headers_too_large`, `unavailable`, `internal`, or `invalid_dpop_proof`
    /// (a DPoP-bound token without a valid proof, with `WWW-Authenticate: DPoP`).
    #[schema(example = "bad_request")]
    pub error: &'static str,
    /// What went wrong, for a human (a bad request names the field). Never carries a token,
    /// key or secret.
    pub message: String,
    /// For internal errors: the id under which the detail was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::DpopRequired(_) => StatusCode::UNAUTHORIZED,
            ApiError::OAuth(e) if e.code == "invalid_client" => StatusCode::UNAUTHORIZED,
            ApiError::OAuth(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Denied(_) => "denied",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Timeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::TooMany(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::DpopRequired(_) => "invalid_dpop_proof",
            ApiError::OAuth(e) => e.code,
        }
    }

    pub fn unauthenticated() -> Self {
        ApiError::Unauthenticated("a valid bearer credential is required".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::OAuth(e) = self {
            let body = OAuthErrorBody { error: e.code, error_description: e.description, approval_ids: e.approvals };
            return (status, [(axum::http::header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
        }
        let body = match &self {
            ApiError::Internal(detail) => {
                let id = hex_id();
                tracing::error!(error_id = %id, detail = %detail, "internal error");
                ErrorBody { error: self.code(), message: "internal error".into(), error_id: Some(id) }
            }
            other => ErrorBody { error: other.code(), message: other.to_string(), error_id: None },
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::DpopRequired(_) = &self {
            let v = r#"DPoP error="invalid_dpop_proof", algs="ES256 ES384 EdDSA RS256 PS256""#;
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static(v));
        } else if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

fn hex_id() -> String {
    hex::encode(remit_token::random::<8>())
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::Invalid(m) => ApiError::BadRequest(m),
            E::Unauthenticated(m) => ApiError::Unauthenticated(m),
            E::Denied(m) => ApiError::Denied(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::TooMany(m) => ApiError::TooMany(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
            E::Internal(m) => ApiError::Internal(m),
        }
    }
}
