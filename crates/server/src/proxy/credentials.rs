//! The proxy's credential endpoint: `POST /credentials/<tool>` makes a database login for the
//! bearer's task on the tool's engine and hands it over once (`Cache-Control: no-store`).
//!
//! The same checks as a proxied call: a live task token meant for Remit (or this tool's
//! per-tool credential holding the engine's scope), an active tool with an engine, and the
//! decision point's yes for action = the engine's scope on `Tool::"<tool>"` with context
//! `target` = `credential` (an approval-gated scope answers with the approval id; retry with
//! `Remit-Approval`). The login lives until the task ends (or the engine's `max_ttl_secs`),
//! and is removed then — see `service::leases`. `{"for_env": true}` asks for a login for a
//! child's environment (`remit exec`), which the workflow must allow for this tool.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use remit_core::ids::ToolName;
use remit_core::tool::ToolState;
use serde::Deserialize;
use serde_json::json;

use super::{Call, Proxy, bearer, decide, refuse, task_for};

/// Largest request body (a small JSON object).
const MAX_BODY: usize = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialRequest {
    /// The login goes into a child's environment (`remit exec`).
    #[serde(default)]
    for_env: bool,
}

pub(super) async fn issue(
    State(p): State<Proxy>,
    Path(tool): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<crate::listen::PeerAddr>>,
    body: Bytes,
) -> Response {
    let app = &p.app;
    let peer = peer.map(|axum::Extension(a)| a.0);
    let claims = match bearer(app, &method, &uri, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(name) = ToolName::parse(&tool) else {
        return refuse(StatusCode::NOT_FOUND, "not_found", "no such tool");
    };
    let tool = match app.store.tools().tool(&name).await {
        Ok(Some(t)) => t,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "not_found", format!("no tool `{name}`")),
        Err(e) => return refused(e.into()),
    };
    let Some(cfg) = tool.database.clone() else {
        return refuse(StatusCode::NOT_FOUND, "not_found", format!("tool `{name}` makes no database logins"));
    };
    if tool.state != ToolState::Active {
        return refuse(StatusCode::FORBIDDEN, "access_denied", format!("tool `{name}` is disabled"));
    }
    let presenter = crate::governance::sharing::Presenter::of(
        peer,
        &headers,
        &app.cfg.limits.trusted_proxies,
        claims.cnf.as_ref().map(|c| c.jkt.clone()),
    );
    let task = match task_for(app, &claims, &tool, &cfg.scope, &presenter).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if body.len() > MAX_BODY {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is over 4 KiB");
    }
    let req: CredentialRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CredentialRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_request", format!("body: {e}")),
        }
    };
    let approval = headers.get("remit-approval").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let snap = match decide(
        app,
        Call { task: &task, tool: &tool, scope: &cfg.scope, target: "credential".into() },
        approval,
        None,
        false,
    )
    .await
    {
        Ok(super::Decided::Allow(s)) => s,
        Ok(super::Decided::NeedsApproval) => {
            return refuse(StatusCode::FORBIDDEN, "approval_required", "a human must approve this login");
        }
        Err(r) => return r,
    };
    match app.issue_login(snap.as_ref(), &tool, &claims.sub, req.for_env).await {
        Ok(l) => {
            let body = json!({
                "lease": l.lease.id.as_str(),
                "tool": tool.name.as_str(),
                "engine": l.lease.engine.as_str(),
                "username": l.username,
                "password": l.password.as_str(),
                "url": l.url.as_str(),
                "env": l.env,
                "expires_at": crate::api::wire::rfc3339(l.lease.expires_at),
            });
            let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
            r.headers_mut().insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => refused(e),
    }
}

/// A service error in the proxy listener's error shape (`error`, `error_description`).
fn refused(e: crate::error::Error) -> Response {
    use crate::error::Error as E;
    match e {
        E::Invalid(m) => refuse(StatusCode::BAD_REQUEST, "invalid_request", m),
        E::Unauthenticated(m) => refuse(StatusCode::UNAUTHORIZED, "invalid_token", m),
        E::Denied(m) => refuse(StatusCode::FORBIDDEN, "access_denied", m),
        E::NotFound(m) => refuse(StatusCode::NOT_FOUND, "not_found", m),
        E::Conflict(m) => refuse(StatusCode::CONFLICT, "conflict", m),
        E::TooMany(m) => refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", m),
        E::Unavailable(m) => refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", m),
        E::Internal(m) => {
            tracing::error!(error = %m, "credential endpoint");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error")
        }
    }
}
