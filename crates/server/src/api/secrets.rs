//! Upstream secrets (write-only): set or rotate, list metadata, delete — and the leak guard's
//! scan. No route returns a secret's value.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::SecretVersion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::wire::rfc3339;
use super::{AppState, Auth, Body, Path, parse_id};
use crate::api::error::{ApiError, ErrorBody};

/// A secret's new value. Never logged: its `Debug` form is redacted.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The value as text (exactly one of `value` and `value_base64`).
    #[serde(default)]
    pub value: Option<String>,
    /// The value as standard base64, for binary values.
    #[serde(default)]
    pub value_base64: Option<String>,
    /// How long the previous version stays usable after this one (seconds, at most a week;
    /// default 0: replaced at once).
    #[serde(default)]
    pub overlap_seconds: Option<u64>,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetSecret(redacted, overlap {:?})", self.overlap_seconds)
    }
}

/// One stored version of a secret: metadata only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub tool: String,
    pub name: String,
    pub version: u32,
    /// The keyed fingerprint (`fp_…`): identifies the value without revealing it.
    pub fingerprint: String,
    /// The value's length, bytes.
    pub length: u32,
    /// RFC 3339.
    pub created_at: String,
    pub created_by: String,
    /// RFC 3339: when a newer version replaced it, the end of its overlap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_after: Option<String>,
}

impl From<SecretVersion> for SecretView {
    fn from(v: SecretVersion) -> Self {
        SecretView {
            tool: v.tool.to_string(),
            name: v.name.to_string(),
            version: v.version,
            fingerprint: v.fingerprint,
            length: v.length,
            created_at: rfc3339(v.created_at),
            created_by: v.created_by,
            retire_after: v.retire_after.map(rfc3339),
        }
    }
}

/// Sets a tool's secret, or rotates it: the value becomes the next version; the previous one
/// stays usable for `overlap_seconds`. Needs `secret.write` (an admin). Write-only: the
/// answer carries the fingerprint, never the value.
#[utoipa::path(put, path = "/v1/tools/{tool}/secrets/{name}", tag = "secrets", operation_id = "set_secret",
    request_body = SetSecret,
    params(("tool" = String, Path, description = "the tool's name"),
           ("name" = String, Path, description = "the secret's name within the tool (e.g. `api-key`)")),
    responses((status = 201, body = SecretView, description = "the new version"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such tool"),
              (status = 409, body = ErrorBody, description = "too many secrets, or a concurrent write; retry")),
    security(("bearer" = [])))]
pub async fn set(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path((tool, name)): Path<(String, String)>,
    Body(req): Body<SetSecret>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    caller.require_human_or_admin()?;
    let tool = parse_id(&tool, ToolName::parse)?;
    let name = parse_id(&name, SecretName::parse)?;
    let value = match (req.value, req.value_base64) {
        (Some(v), None) => Zeroizing::new(v.into_bytes()),
        (None, Some(b)) => {
            use base64::Engine;
            let b = Zeroizing::new(b);
            Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|_| ApiError::BadRequest("value_base64: not standard base64".into()))?,
            )
        }
        _ => return Err(ApiError::BadRequest("exactly one of `value` and `value_base64` is required".into())),
    };
    let v = app.set_secret(&caller, &tool, &name, value, req.overlap_seconds.unwrap_or(0)).await?;
    Ok((StatusCode::CREATED, Json(v.into())))
}

/// Lists a tool's secrets: every stored version's metadata, never a value. Needs
/// `secret.read`.
#[utoipa::path(get, path = "/v1/tools/{tool}/secrets", tag = "secrets", operation_id = "list_secrets",
    params(("tool" = String, Path, description = "the tool's name")),
    responses((status = 200, body = [SecretView], description = "by name, then version"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such tool")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(tool): Path<String>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    caller.require_human_or_admin()?;
    let tool = parse_id(&tool, ToolName::parse)?;
    Ok(Json(app.list_secrets(&caller, &tool).await?.into_iter().map(Into::into).collect()))
}

/// Why a secret is deleted.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Recorded in the audit log.
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedSecret {
    pub deleted_versions: u32,
}

/// Deletes every version of a secret. Needs `secret.write`.
#[utoipa::path(delete, path = "/v1/tools/{tool}/secrets/{name}", tag = "secrets", operation_id = "delete_secret",
    params(("tool" = String, Path, description = "the tool's name"),
           ("name" = String, Path, description = "the secret's name"), DeleteQuery),
    responses((status = 200, body = DeletedSecret, description = "how many versions were deleted"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed"),
              (status = 404, body = ErrorBody, description = "no such secret")),
    security(("bearer" = [])))]
pub async fn delete(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path((tool, name)): Path<(String, String)>,
    super::Query(q): super::Query<DeleteQuery>,
) -> Result<Json<DeletedSecret>, ApiError> {
    caller.require_human_or_admin()?;
    let tool = parse_id(&tool, ToolName::parse)?;
    let name = parse_id(&name, SecretName::parse)?;
    let n = app.delete_secret(&caller, &tool, &name, &q.reason).await?;
    Ok(Json(DeletedSecret { deleted_versions: n }))
}

/// A text to scan.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// The text (a prompt, a tool's output, a log line); up to the body limit per request.
    pub text: String,
    /// The task whose text this is (its prompt, its tool's output): a hit is then recorded
    /// against the task, and the containment rules act on it.
    #[serde(default)]
    pub task: Option<String>,
}

impl std::fmt::Debug for ScanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanRequest({} bytes)", self.text.len())
    }
}

/// Where something was found; never what.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    /// Byte offset in the text.
    pub offset: usize,
    pub length: usize,
    /// `stored_secret`, or a credential format: `aws_access_key_id`, `github_token`,
    /// `gitlab_token`, `slack_token`, `google_api_key`, `stripe_key`, `openai_key`,
    /// `anthropic_key`, `private_key`, `remit_credential`, `jwt`.
    pub kind: String,
    /// A stored secret's reference (`tool/name@version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Whether the whole stored value is there (else a part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScanResult {
    pub findings: Vec<FindingView>,
}

/// The leak guard: scans a text for stored secrets (by keyed window hashes, never values) and
/// common credential formats; says where, never what. Needs `leak.scan` (an admin: a scan
/// confirms whether a guessed value is stored).
#[utoipa::path(post, path = "/v1/leak-scan", tag = "secrets", operation_id = "leak_scan", request_body = ScanRequest,
    responses((status = 200, body = ScanResult, description = "the findings, in text order"),
              (status = 400, body = ErrorBody, description = "invalid request"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not allowed")),
    security(("bearer" = [])))]
pub async fn scan(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<ScanRequest>,
) -> Result<Json<ScanResult>, ApiError> {
    caller.require_human_or_admin()?;
    let text = Zeroizing::new(req.text);
    let task = req.task.as_deref().map(|t| parse_id(t, remit_core::ids::TaskId::parse)).transpose()?;
    let findings = app.leak_scan(&caller, text.as_bytes(), task.as_ref()).await?;
    let findings = findings
        .into_iter()
        .map(|f| FindingView {
            offset: f.offset,
            length: f.length,
            kind: f.kind,
            secret: f.secret,
            fingerprint: f.fingerprint,
            complete: f.complete,
        })
        .collect();
    Ok(Json(ScanResult { findings }))
}
