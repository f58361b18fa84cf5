//! Audit log endpoints: list with filters, export as JSON Lines, verify, checkpoint. Admin.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use remit_core::audit::AuditRecord;
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::time::UnixMillis;
use remit_store::AuditFilter;
use serde::Deserialize;

use super::schema::{AuditRecordDoc, AuditVerification, CheckpointResult};
use super::{AppState, Auth, Query, parse_id};
use crate::api::error::{ApiError, ErrorBody};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records about this workflow.
    pub workflow: Option<String>,
    /// Only records about this task (id).
    pub task: Option<String>,
    /// Only records about this agent.
    pub agent: Option<String>,
    /// Only this action, e.g. `task.start`.
    pub action: Option<String>,
    /// From this time: RFC 3339 or milliseconds since the epoch.
    pub since: Option<String>,
    /// Before this time: RFC 3339 or milliseconds since the epoch.
    pub until: Option<String>,
    /// Only records after this sequence number (paging).
    pub after: Option<u64>,
    /// Default 100, at most 10000.
    pub limit: Option<u32>,
}

fn time(v: Option<&str>, what: &str) -> Result<Option<UnixMillis>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(UnixMillis(ms)));
    }
    let t = humantime::parse_rfc3339_weak(v)
        .map_err(|e| ApiError::BadRequest(format!("`{what}` must be RFC 3339 or epoch milliseconds: {e}")))?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Ok(Some(UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX))))
}

fn filter(q: AuditQuery, default_limit: u32) -> Result<AuditFilter, ApiError> {
    Ok(AuditFilter {
        since: time(q.since.as_deref(), "since")?,
        until: time(q.until.as_deref(), "until")?,
        workflow: q.workflow.as_deref().map(|w| parse_id(w, WorkflowName::parse)).transpose()?,
        task: q.task.as_deref().map(|t| parse_id(t, TaskId::parse)).transpose()?,
        agent: q.agent.as_deref().map(|a| parse_id(a, AgentName::parse)).transpose()?,
        action: q.action,
        after_seq: q.after.unwrap_or(0),
        limit: q.limit.unwrap_or(default_limit),
        newest_first: false,
    })
}

/// Lists audit records in sequence order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", operation_id = "list_audit", params(AuditQuery),
    responses((status = 200, body = [AuditRecordDoc], description = "matching records in sequence order"),
              (status = 400, body = ErrorBody, description = "invalid filter (the message names the parameter)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    Ok(Json(app.list_audit(&caller, filter(q, 100)?).await?))
}

/// Exports matching records as JSON Lines (one record per line, in order), streamed a page
/// at a time: memory stays flat however long the log. A store failure mid-way ends the
/// stream early (the client sees a truncated body, and the server log says why).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", operation_id = "export_audit", params(AuditQuery),
    responses((status = 200, content_type = "application/jsonl", body = AuditRecordDoc,
                  description = "JSON Lines: one record (this schema) per line, in sequence order"),
              (status = 400, body = ErrorBody, description = "invalid filter (the message names the parameter)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn export(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    app.allow(&caller, remit_policy::admin::AdminAction::AuditRead, remit_policy::admin::AdminTarget::Installation)
        .await?;
    let f = filter(q, remit_store::MAX_PAGE)?;
    let max = if f.limit == 0 { u32::MAX } else { f.limit };
    let pages = futures_util::stream::unfold(Some((app, caller, f, 0u32)), move |state| async move {
        let (app, caller, mut f, n) = state?;
        f.limit = (max - n).min(remit_store::MAX_PAGE);
        if f.limit == 0 {
            return None;
        }
        let page = match app.list_audit(&caller, f.clone()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "audit export stopped early");
                return Some((Err(std::io::Error::other("audit export failed")), None));
            }
        };
        let last = page.last()?.seq;
        let mut out = String::new();
        for r in &page {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
            out.push('\n');
        }
        let full = page.len() == remit_store::MAX_PAGE as usize;
        f.after_seq = last;
        let next = full.then(|| (app, caller, f, n + u32::try_from(page.len()).unwrap_or(u32::MAX)));
        Some((Ok::<_, std::io::Error>(out), next))
    });
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], axum::body::Body::from_stream(pages)))
}

/// Recomputes the whole chain and checks every signed checkpoint; names the first broken record.
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit", operation_id = "verify_audit",
    responses((status = 200, body = AuditVerification,
                  description = "`ok` true with a report, or false with the first break (a broken chain is still a 200)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn verify(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(match app.verify_audit(&caller).await? {
        Ok(report) => AuditVerification { ok: true, report: Some(report), error: None, brk: None },
        Err(brk) => {
            AuditVerification { ok: false, report: None, error: Some(brk.to_string()), brk: Some(format!("{brk:?}")) }
        }
    }))
}

/// Signs a checkpoint of the current chain head now (the server also does so periodically).
#[utoipa::path(post, path = "/v1/audit/checkpoint", tag = "audit", operation_id = "checkpoint_audit",
    responses((status = 200, body = CheckpointResult, description = "the checkpoint, or null when the head has not moved"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn checkpoint(State(app): State<AppState>, Auth(caller): Auth) -> Result<Json<CheckpointResult>, ApiError> {
    app.allow(
        &caller,
        remit_policy::admin::AdminAction::AuditCheckpoint,
        remit_policy::admin::AdminTarget::Installation,
    )
    .await?;
    Ok(Json(CheckpointResult { checkpoint: app.checkpoint_now().await? }))
}
