//! The injecting tool proxy: `/tools/<tool>/<path>` on its own listener forwards an agent's
//! call to the tool's upstream with the upstream credential put on the wire here — the agent
//! holds only its task token or its per-tool credential, never the secret.
//!
//! For each request, in order: the request-target must be a plain path (no absolute form);
//! the tool must be registered, active and proxied; the path below `/tools/<tool>` is
//! normalised (`remit_core::proxy::normalize`: no `.`/`..`/empty segments in any encoding, no
//! encoded separators) and must match a declared route (method + template); the bearer must be
//! a live task token or a live per-tool credential for this tool holding the route's scope
//! (introspected against the store on every call, so a kill or a disabled tool stops the
//! next call; a DPoP-bound one only with a fresh proof from its key for this request); the decision point is asked (action = the route's scope, resource =
//! `Tool::"<tool>"`, context `target` = the normalised path, plus every fact Remit vouches
//! for); the secret's current version is opened and injected (bearer, header, query
//! parameter or basic auth). The agent's `Authorization`, `DPoP`, cookies, forwarding and
//! hop-by-hop headers never reach the upstream; the upstream's scheme, host and port come from
//! the tool only; redirects are passed back, never followed. Bodies stream both ways, cut at
//! the tool's limits. Each call is audited (`tool.call`: method, host, route template,
//! status, bytes both ways, duration, the secret version's fingerprint) — never bodies or
//! credentials.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::ids::{SecretName, SpiffeId, TaskId, ToolName};
use remit_core::proxy::{self, HOP_BY_HOP, Injection, ProxyConfig, Route};
use remit_core::tool::{Tool, ToolState};
use remit_token::SvidKind;
use serde_json::json;

use crate::app::App;
use crate::pdp::{ActionRef, Party, TaskCall, Verdict};
use crate::service::Caller;

mod credentials;

/// The proxy's shared state: the app and one HTTP client for every upstream.
#[derive(Clone)]
pub struct Proxy {
    app: Arc<App>,
    client: reqwest::Client,
    /// OAuth access tokens obtained for tools (client credentials), by tool: the client
    /// secret's fingerprint they were obtained with, the token, and when to stop using it.
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, CachedToken>>>,
    /// One token request per tool at a time: concurrent first calls wait for it.
    fetching: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// An access token the proxy obtained for a tool.
struct CachedToken {
    fingerprint: String,
    token: zeroize::Zeroizing<String>,
    until: Instant,
}

/// Longest a token is cached, whatever its `expires_in`; and how long before its expiry it is
/// replaced.
const MAX_TOKEN_CACHE: std::time::Duration = std::time::Duration::from_secs(3600);
const TOKEN_EXPIRY_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);
/// A token request's whole time, and the largest answer read.
const TOKEN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

impl Proxy {
    /// An access token for `tool` from its authorization server (client credentials,
    /// `client_secret_basic`), from the cache while it is fresh and was obtained with the
    /// current client secret. The token's text never reaches a log or an error.
    async fn access_token(
        &self,
        tool: &str,
        fingerprint: &str,
        inject: &Injection,
        secret: &str,
    ) -> Result<zeroize::Zeroizing<String>, Response> {
        let Injection::OAuth { token_url, client_id, scope, .. } = inject else {
            return Err(refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", "not an OAuth tool"));
        };
        let cached = || {
            let cache = self.tokens.lock().ok()?;
            let t = cache.get(tool)?;
            (t.fingerprint == fingerprint && Instant::now() < t.until).then(|| t.token.clone())
        };
        if let Some(t) = cached() {
            return Ok(t);
        }
        // Single flight: whoever waited here takes the token the first one fetched.
        let gate = match self.fetching.lock() {
            Ok(mut m) => m.entry(tool.to_owned()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        let _turn = gate.lock().await;
        if let Some(t) = cached() {
            return Ok(t);
        }
        let failed = |why: &str| {
            tracing::warn!(tool, why, "tool proxy: obtaining an access token failed");
            refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the tool's authorization server refused the proxy")
        };
        // RFC 6749 §2.3.1: the client id and secret form-urlencoded, then basic auth.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(s) = scope {
            form.push(("scope", s.clone()));
        }
        let mut sent = self
            .client
            .post(token_url)
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .basic_auth(enc(client_id), Some(zeroize::Zeroizing::new(enc(secret)).as_str()))
            .header(axum::http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|_| failed("unreachable"))?;
        if !sent.status().is_success() {
            return Err(failed(&format!("status {}", sent.status().as_u16())));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            token_type: String,
            /// A number, or (some providers) a numeric string.
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let mut body = zeroize::Zeroizing::new(Vec::new());
        while let Some(chunk) = sent.chunk().await.map_err(|_| failed("the answer broke off"))? {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(failed("the answer is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| failed("not a token response"))?;
        let access = zeroize::Zeroizing::new(t.access_token);
        // RFC 6750 §2.1 b64token: what can go in an `Authorization` header.
        let b64token = !access.is_empty()
            && access.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if !t.token_type.eq_ignore_ascii_case("bearer") || !b64token {
            return Err(failed("not a usable bearer token"));
        }
        let secs = match &t.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let life = std::time::Duration::from_secs(secs.unwrap_or(60)).min(MAX_TOKEN_CACHE);
        let until = Instant::now() + life.saturating_sub(TOKEN_EXPIRY_MARGIN).max(life / 2);
        if let Ok(mut cache) = self.tokens.lock() {
            cache.insert(
                tool.to_owned(),
                CachedToken { fingerprint: fingerprint.to_owned(), token: access.clone(), until },
            );
        }
        Ok(access)
    }

    /// Forgets `tool`'s token `sent` (the upstream refused it) — not a newer one another call
    /// has fetched meanwhile.
    fn forget_token(&self, tool: &str, sent: &str) {
        if let Ok(mut cache) = self.tokens.lock()
            && cache.get(tool).is_some_and(|t| t.token.as_str() == sent)
        {
            cache.remove(tool);
        }
    }
}

/// The proxy's router: everything goes to [`handle`].
pub fn router(app: Arc<App>) -> Result<axum::Router, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(app.cfg.proxy.upstream_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(60));
    if let Some(ca) = &app.cfg.proxy.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("proxy CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("proxy CA file: {e}"))?;
        b = b.tls_certs_only(certs);
    }
    let client = b.build().map_err(|e| e.to_string())?;
    Ok(axum::Router::new()
        .route("/credentials/{tool}", axum::routing::post(credentials::issue))
        .fallback(handle)
        .with_state(Proxy { app, client, tokens: Default::default(), fetching: Default::default() }))
}

/// A refusal in the proxy's error shape; a 401 says which schemes it takes (RFC 6750 §3,
/// RFC 9449 §7.1).
pub(crate) fn refuse(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut r = (status, axum::Json(json!({"error": error, "error_description": description.into()}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if error == "invalid_dpop_proof" {
            format!("DPoP error=\"{error}\", algs=\"ES256\"")
        } else {
            format!("Bearer error=\"{error}\", DPoP algs=\"ES256\"")
        };
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// A request to the proxy, checked up to the point of forwarding.
struct Checked {
    tool: Tool,
    cfg: ProxyConfig,
    route: Route,
    segments: Vec<String>,
    task: TaskId,
    actor: String,
}

async fn handle(State(p): State<Proxy>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<crate::listen::PeerAddr>().map(|a| a.0);
    let checked = match check(&p.app, &parts.method, &parts.uri, &parts.headers, peer).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    forward(&p, checked, parts, body, started).await
}

async fn check(
    app: &App,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Checked, Response> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid_request", "absolute-form request targets are refused"));
    }
    let path = uri.path();
    let rest = path
        .strip_prefix("/tools/")
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "not_found", "the proxy serves /tools/<tool>/<path>"))?;
    let (name, below) = rest.split_once('/').map_or((rest, ""), |(n, b)| (n, b));
    let name = ToolName::parse(name).map_err(|e| refuse(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    let internal = |e: crate::error::Error| {
        tracing::error!(error = %e, "tool proxy");
        refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again")
    };
    let claims = bearer(app, method, uri, headers).await?;
    let tool = app
        .store
        .tools()
        .tool(&name)
        .await
        .map_err(|e| internal(e.into()))?
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "not_found", format!("no tool `{name}`")))?;
    let cfg = tool.proxy.clone().ok_or_else(|| {
        refuse(StatusCode::NOT_FOUND, "not_found", format!("tool `{name}` is not callable through the proxy"))
    })?;
    if tool.state != ToolState::Active {
        return Err(refuse(StatusCode::FORBIDDEN, "access_denied", format!("tool `{name}` is disabled")));
    }
    let segments =
        proxy::normalize(below).map_err(|e| refuse(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let route = cfg.route(method.as_str(), &segments).cloned().ok_or_else(|| {
        refuse(StatusCode::FORBIDDEN, "access_denied", format!("no route of tool `{name}` matches this call"))
    })?;
    // Who presents the token (a second presenter is a sharing event).
    use crate::governance::sharing::{Presented, Presenter};
    let jkt = claims.cnf.as_ref().map(|c| c.jkt.clone());
    let presenter = Presenter::of(peer, headers, &app.cfg.limits.trusted_proxies, jkt);
    let task = task_for(app, &claims, &tool, &route.scope, &presenter).await?;
    let wf = claims.remit.workflow.as_deref().and_then(|w| remit_core::ids::WorkflowName::parse(w).ok());
    if let (Some(w), Ok(a)) = (wf, remit_core::ids::AgentName::parse(&claims.remit.agent)) {
        let presented = Presented {
            jti: &claims.jti,
            task: Some(&task),
            workflow: Some(&w),
            agent: &a,
            subject: &claims.sub,
            expires: remit_core::time::UnixMillis::from_secs(claims.exp),
            via: "proxy",
        };
        app.note_bearer(presented, &presenter).await;
    }
    Ok(Checked { tool, cfg, route, segments, task, actor: claims.sub })
}

/// The caller's claims, once its token is found live (introspected against the store: a
/// kill, an expiry or a disabled tool shows at once). A DPoP-bound token (RFC 9449) must come
/// as `Authorization: DPoP …` with a fresh proof from its key for this request (`htu` =
/// `[proxy] public_url` and the path, never the client's `Host`; replays refused on every replica; another key is a
/// security event); a bearer token as `Authorization: Bearer …`.
pub(crate) async fn bearer(
    app: &App,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<remit_token::Claims, Response> {
    let internal = |e: crate::error::Error| {
        tracing::error!(error = %e, "tool proxy");
        refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again")
    };
    let (dpop, token) = crate::api::credential_of(headers)
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "invalid_token", "a bearer token is required"))?;
    let seen = app.introspect(token, None).await.map_err(internal)?;
    let claims =
        seen.claims.ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "invalid_token", "the token is not active"))?;
    let bad = |m: String| refuse(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", m);
    match (&claims.cnf, dpop) {
        (None, false) => {}
        (None, true) => return Err(bad("this token is not DPoP-bound: send it as `Authorization: Bearer …`".into())),
        (Some(_), false) => {
            return Err(bad("this token is DPoP-bound: send it as `Authorization: DPoP …` with a proof".into()));
        }
        (Some(cnf), true) => {
            let proof = crate::api::dpop_header(headers)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("this token is DPoP-bound: a `DPoP` proof header is required".into()))?;
            // The URL the proof must name is the proxy's own, from the configuration: never the
            // client's `Host` (a proof made for another server must not replay here).
            let Some(base) = app.cfg.proxy.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned()) else {
                return Err(bad(
                    "this proxy takes DPoP-bound tokens only once `[proxy] public_url` says where agents reach it"
                        .into(),
                ));
            };
            let url = format!("{base}{}", uri.path());
            let p =
                app.dpop_proof_at(proof, method.as_str(), &url, Some(token)).await.map_err(|e| bad(e.to_string()))?;
            let bound = crate::service::dpop::Bound {
                jti: &claims.jti,
                jkt: &cnf.jkt,
                audience: "proxy",
                subject: &claims.sub,
            };
            app.check_binding(&bound, &p).await.map_err(|e| match e {
                crate::error::Error::Unauthenticated(m) => bad(m),
                other => internal(other),
            })?;
        }
    }
    Ok(claims)
}

/// The task the bearer acts for at `tool` needing `scope`: a task token meant for Remit (not
/// one handed to another party for its audience), or a credential for this very tool holding
/// `scope`. A live token issued for another party (another tool's credential, a task token
/// for another audience) is refused and noted as a sharing event.
// The refusal is the handler's answer as is; boxing it would only move the allocation.
#[allow(clippy::result_large_err)]
pub(crate) async fn task_for(
    app: &App,
    claims: &remit_token::Claims,
    tool: &Tool,
    scope: &str,
    presenter: &crate::governance::sharing::Presenter,
) -> Result<TaskId, Response> {
    let misdirected = match claims.remit.kind {
        SvidKind::Task => !claims.aud.contains(&app.cfg.audience) && !claims.aud.contains(&tool.audience),
        SvidKind::Tool => !claims.aud.contains(&tool.audience),
        _ => false,
    };
    if misdirected {
        app.note_misdirected(claims, &format!("tool:{}", tool.name), presenter.as_evidence(), "proxy").await;
    }
    match claims.remit.kind {
        SvidKind::Task if claims.aud.contains(&app.cfg.audience) => {}
        SvidKind::Tool
            if claims.aud.contains(&tool.audience)
                && claims.remit.tool.as_deref() == Some(tool.name.as_str())
                && claims.scope.as_deref().is_some_and(|s| s.split(' ').any(|x| x == scope)) => {}
        SvidKind::Tool => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the credential is not for tool `{}` with scope `{scope}`", tool.name),
            ));
        }
        _ => return Err(refuse(StatusCode::UNAUTHORIZED, "invalid_token", "a task token or a per-tool credential")),
    }
    claims
        .remit
        .task
        .as_deref()
        .and_then(|t| TaskId::parse(t).ok())
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "invalid_token", "the token names no task"))
}

/// What the decision point said about a call that may go on.
pub(crate) enum Decided {
    Allow(Box<remit_store::TaskSnapshot>),
    /// A human must approve it, and no request was opened yet (`probe`).
    NeedsApproval,
}

/// Asks the decision point about the call for the task. `bind`: what else an approval is
/// bound to (the request's method, query and body digest). `probe`: an approval-gated call
/// answers [`Decided::NeedsApproval`] without opening a request (the proxy first reads the
/// body the request will be bound to).
/// One call to decide: the task, the tool, the scope (the action) and the target.
pub(crate) struct Call<'a> {
    pub task: &'a TaskId,
    pub tool: &'a Tool,
    pub scope: &'a str,
    pub target: String,
}

pub(crate) async fn decide(
    app: &App,
    c: Call<'_>,
    approval: Option<String>,
    bind: Option<serde_json::Value>,
    probe: bool,
) -> Result<Decided, Response> {
    let internal = |e: crate::error::Error| {
        tracing::error!(error = %e, "tool proxy decision");
        refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again")
    };
    let snap = app
        .store
        .identity()
        .task_snapshot(c.task)
        .await
        .map_err(|e| internal(e.into()))?
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "invalid_token", "unknown task"))?;
    let spiffe_id = SpiffeId::task(&app.trust_domain, &snap.task.workflow, &snap.task.id).to_string();
    let caller = Caller::Task {
        id: c.task.clone(),
        spiffe_id: spiffe_id.clone(),
        snapshot: Box::new(snap.clone()),
        binding: None,
    };
    let call = TaskCall {
        action: ActionRef { name: Some(c.scope.to_owned()), properties: None },
        resource: Party {
            etype: Some("Tool".into()),
            id: Some(c.tool.name.to_string()),
            properties: Default::default(),
        },
        context: json!({ "target": c.target }),
        approval,
        no_approval_request: probe,
        issuing: Some((c.tool.class, app.class_trust_domain(c.tool.class).to_string())),
        bind,
    };
    let answer = app.pdp.decide_task(&caller, call, Some((snap.clone(), spiffe_id))).await.map_err(internal)?;
    match answer.verdict() {
        Verdict::Allow => Ok(Decided::Allow(Box::new(snap))),
        Verdict::ApprovalRequired | Verdict::Pending if answer.approval.is_none() && probe => {
            Ok(Decided::NeedsApproval)
        }
        Verdict::ApprovalRequired | Verdict::Pending => {
            let id = answer.approval.map(|a| a.id).unwrap_or_default();
            Err((
                StatusCode::FORBIDDEN,
                axum::Json(json!({"error": "approval_required", "approval": id,
                                  "error_description": "a human must approve this call; retry with the `Remit-Approval` header"})),
            )
                .into_response())
        }
        Verdict::Deny => {
            let why = answer.decision.errors.first().cloned().unwrap_or_else(|| "denied by policy".into());
            Err(refuse(StatusCode::FORBIDDEN, "access_denied", why))
        }
    }
}

/// Largest body an approval-gated call may carry (it is read whole before the decision).
const MAX_APPROVAL_BODY: u64 = 1024 * 1024;

/// A request body read whole, up to `limit` bytes (an approval-gated call's, which its
/// approval is bound to).
async fn read_body(body: Body, limit: u64) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).await.map_err(|_| {
        refuse(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is over the tool's limit")
    })
}

/// What an approval of a proxied call is bound to besides the call: the method, the query,
/// the body's content type, encoding, length and SHA-256.
fn request_binding(parts: &axum::http::request::Parts, body: &[u8]) -> serde_json::Value {
    use sha2::Digest;
    let header = |h: axum::http::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    json!({"method": parts.method.as_str(), "query": parts.uri.query().unwrap_or(""),
           "content_type": header(axum::http::header::CONTENT_TYPE),
           "content_encoding": header(axum::http::header::CONTENT_ENCODING),
           "body_bytes": body.len(), "body_sha256": hex::encode(sha2::Sha256::digest(body))})
}

async fn forward(p: &Proxy, c: Checked, parts: axum::http::request::Parts, body: Body, started: Instant) -> Response {
    let app = &p.app;
    let approval = parts.headers.get("remit-approval").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let target = format!("/{}", c.segments.join("/"));
    if let Some(len) = parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok())
        && len.parse::<u64>().map_or(true, |n| n > c.cfg.max_request_bytes)
    {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "the request body is over the tool's limit");
    }
    // The secret's current version, opened here and nowhere else.
    let secret_name = match SecretName::parse(c.cfg.inject.secret()) {
        Ok(n) => n,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", e.to_string()),
    };
    let now = app.clock.now();
    let versions = match app.store.secrets().secret_versions(&c.tool.name, &secret_name).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "tool proxy: reading the secret");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again");
        }
    };
    let Some(version) = remit_core::secret::current(&versions, now) else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("tool `{}` has no usable secret `{secret_name}`", c.tool.name),
        );
    };
    let value = match app.open_secret(version) {
        Ok(v) => v,
        Err(_) => return refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the tool's secret cannot be opened"),
    };
    let Ok(secret) = std::str::from_utf8(&value) else {
        return refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the tool's secret is not text");
    };
    // An OAuth tool's access token, obtained (or taken from the cache) with the secret.
    let access = match &c.cfg.inject {
        Injection::OAuth { .. } => {
            match p.access_token(c.tool.name.as_str(), &version.fingerprint, &c.cfg.inject, secret).await {
                Ok(t) => Some(t),
                Err(r) => return r,
            }
        }
        _ => None,
    };
    // Decided only now, with the secret in hand: an approval is spent only on a call that
    // can go out. An ordinary call streams its body. An approval-gated one (found by a probe
    // that opens no request) has its body read whole — at most `MAX_APPROVAL_BODY` — and its
    // approval is bound to that body, its method, query, content type and encoding: the retry
    // carrying the approval goes through once, and only with that request.
    let scope = &c.route.scope;
    let mut body = Some(body);
    let buffered: Option<Bytes> =
        match decide(app, Call { task: &c.task, tool: &c.tool, scope, target: target.clone() }, None, None, true).await
        {
            Ok(Decided::Allow(_)) => None,
            Ok(Decided::NeedsApproval) => {
                let limit = c.cfg.max_request_bytes.min(MAX_APPROVAL_BODY);
                let bytes = match read_body(body.take().unwrap_or_default(), limit).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let bind = Some(request_binding(&parts, &bytes));
                // With `Remit-Approval`: consumes it if it matches; without: opens the request.
                match decide(app, Call { task: &c.task, tool: &c.tool, scope, target }, approval, bind, false).await {
                    Ok(Decided::Allow(_)) => Some(bytes),
                    Ok(Decided::NeedsApproval) => {
                        return refuse(StatusCode::FORBIDDEN, "approval_required", "not approved");
                    }
                    Err(r) => return r,
                }
            }
            Err(r) => return r,
        };
    let body = match buffered {
        Some(b) => Err(b),
        None => Ok(body.take().unwrap_or_default()),
    };
    // The URL: the tool's upstream, the normalised path, the agent's query (minus an injected
    // parameter of the same name).
    let mut url = c.cfg.upstream.trim_end_matches('/').to_owned();
    for s in &c.segments {
        url.push('/');
        url.push_str(&proxy::encode_segment(s));
    }
    let mut query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    // Method overrides would make the upstream run another route than the one decided.
    query.retain(|(k, _)| !proxy::METHOD_OVERRIDE_PARAMS.contains(&k.to_ascii_lowercase().as_str()));
    let mut headers = HeaderMap::new();
    let dropped: Vec<String> = parts
        .headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|h| h.trim().to_ascii_lowercase()))
        .collect();
    for (k, v) in &parts.headers {
        let n = k.as_str();
        if proxy::FORWARDED.contains(&n) && !HOP_BY_HOP.contains(&n) && !dropped.iter().any(|d| d == n) {
            headers.append(k.clone(), v.clone());
        }
    }
    // A body only when the agent sent one, framed as the agent framed it.
    let has_body = parts.headers.contains_key(axum::http::header::CONTENT_LENGTH)
        || parts.headers.contains_key(axum::http::header::TRANSFER_ENCODING);
    if let Some(len) = parts.headers.get(axum::http::header::CONTENT_LENGTH) {
        headers.insert(axum::http::header::CONTENT_LENGTH, len.clone());
    }
    let set = |headers: &mut HeaderMap, name: &str, value: String| -> Result<(), &'static str> {
        let mut v = HeaderValue::from_str(&value).map_err(|_| "the secret cannot go in a header")?;
        v.set_sensitive(true);
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "bad header name")?;
        headers.remove(&n);
        headers.insert(n, v);
        Ok(())
    };
    let injected = match &c.cfg.inject {
        Injection::Bearer { .. } => set(&mut headers, "authorization", format!("Bearer {secret}")),
        Injection::Header { name, prefix, .. } => {
            set(&mut headers, name, format!("{}{secret}", prefix.as_deref().unwrap_or("")))
        }
        Injection::Basic { username, .. } => {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
            set(&mut headers, "authorization", format!("Basic {b}"))
        }
        Injection::Query { name, .. } => {
            query.retain(|(k, _)| k != name);
            query.push((name.clone(), secret.to_owned()));
            Ok(())
        }
        Injection::OAuth { .. } => {
            set(&mut headers, "authorization", format!("Bearer {}", access.as_deref().map_or("", |t| t.as_str())))
        }
    };
    if let Err(why) = injected {
        return refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", why);
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish());
    }
    drop(query);
    let host = proxy::split_upstream(&c.cfg.upstream).map(|(_, h, _)| h.to_owned()).unwrap_or_default();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let limit = c.cfg.max_request_bytes;
    let counter = sent.clone();
    let streamed = match body {
        Ok(b) => b,
        // Read whole already (an approved call): sent as read.
        Err(bytes) => Body::from(bytes),
    };
    let upload = streamed.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        let total = counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed) + chunk.len() as u64;
        if total > limit {
            return Err(std::io::Error::other("the request body is over the tool's limit"));
        }
        Ok::<Bytes, std::io::Error>(chunk)
    });
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = p.client.request(method, &url).headers(headers);
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(upload));
    }
    let sent_req = request.send().await;
    drop(url);
    let record = CallRecord {
        app: p.app.clone(),
        task: c.task.clone(),
        actor: c.actor.clone(),
        tool: c.tool.name.to_string(),
        method: parts.method.to_string(),
        host,
        route: format!("{} {}", c.route.method, c.route.path),
        secret: version.reference(),
        fingerprint: version.fingerprint.clone(),
        started,
        sent,
    };
    let upstream = match sent_req {
        Ok(r) => r,
        Err(e) => {
            let status = if e.is_timeout() { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            // Never the URL: it may carry the injected query parameter.
            let why = if e.is_body() { "the request body was refused" } else { "the upstream did not answer" };
            record.finish(status.as_u16(), 0, Outcome::Denied);
            return refuse(status, "upstream_unavailable", why);
        }
    };
    let status = upstream.status();
    let mut out = Response::builder().status(status.as_u16());
    // The forms the secret could come back in: as sent, percent-encoded, base64 (alone and as
    // basic auth). An upstream reflecting one, in a header or the body, does not hand it over.
    let mut forms = reflected_forms(&c.cfg.inject, secret);
    if let Some(t) = &access {
        forms.extend(reflected_forms(&Injection::Bearer { secret: String::new() }, t));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The upstream no longer takes the token: the next call gets a fresh one.
            p.forget_token(c.tool.name.as_str(), t);
        }
    }
    for (k, v) in upstream.headers() {
        let n = k.as_str();
        let reflects = forms.iter().any(|f| contains(v.as_bytes(), f));
        if !HOP_BY_HOP.contains(&n) && n != "set-cookie" && !reflects {
            out = out.header(n, v.as_bytes());
        }
    }
    let stream = Metered {
        inner: Box::pin(upstream.bytes_stream()),
        tail: Vec::new(),
        forms,
        seen: 0,
        limit: c.cfg.max_response_bytes,
        status: status.as_u16(),
        record: Some(record),
    };
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "upstream_unavailable", "bad upstream response"))
}

/// What a call's audit record says, written when its response body ends.
struct CallRecord {
    app: Arc<App>,
    task: TaskId,
    actor: String,
    tool: String,
    method: String,
    host: String,
    route: String,
    secret: String,
    fingerprint: String,
    started: Instant,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl CallRecord {
    fn finish(self, status: u16, received: u64, outcome: Outcome) {
        let audit = AuditEvent::new(self.app.clock.now(), self.actor, AuditAction::ToolCall)
            .task(&self.task)
            .outcome(outcome)
            .detail([
                ("tool", self.tool.into()),
                ("method", self.method.into()),
                ("host", self.host.into()),
                ("route", self.route.into()),
                ("status", status.into()),
                ("bytes_sent", self.sent.load(std::sync::atomic::Ordering::Relaxed).into()),
                ("bytes_received", received.into()),
                ("duration_ms", (self.started.elapsed().as_millis() as u64).into()),
                ("secret", self.secret.into()),
                ("fingerprint", self.fingerprint.into()),
            ]);
        let app = self.app;
        tokio::spawn(async move {
            if let Err(e) = app.store.audit().append(vec![audit]).await {
                tracing::error!(error = %e, "tool proxy: auditing a call failed");
            }
        });
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The forms in which an injected secret could be reflected back.
fn reflected_forms(inject: &Injection, secret: &str) -> Vec<zeroize::Zeroizing<Vec<u8>>> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s).into_bytes();
    let mut forms = vec![secret.as_bytes().to_vec(), b64(secret)];
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(encoded.into_bytes());
    forms.push(proxy::encode_segment(secret).into_bytes());
    if let Injection::Basic { username, .. } = inject {
        forms.push(b64(&format!("{username}:{secret}")));
    }
    forms.sort();
    forms.dedup();
    forms.into_iter().filter(|f| f.len() >= 4).map(zeroize::Zeroizing::new).collect()
}

/// The upstream's body, counted and cut at the limit, and cut where it would reflect the
/// secret; the call is audited when it ends.
struct Metered {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// The last bytes seen (one shorter than the longest form), for a form across chunks.
    tail: Vec<u8>,
    forms: Vec<zeroize::Zeroizing<Vec<u8>>>,
    seen: u64,
    limit: u64,
    status: u16,
    record: Option<CallRecord>,
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if self.seen > self.limit {
                    self.end(Outcome::Denied);
                    return Poll::Ready(Some(Err(std::io::Error::other("the response is over the tool's limit"))));
                }
                let keep = self.forms.iter().map(|f| f.len()).max().unwrap_or(1).saturating_sub(1);
                let mut window = std::mem::take(&mut self.tail);
                window.extend_from_slice(&b);
                if self.forms.iter().any(|f| contains(&window, f)) {
                    tracing::warn!("tool proxy: the upstream reflected the injected credential; response cut");
                    self.end(Outcome::Denied);
                    return Poll::Ready(Some(Err(std::io::Error::other("the response would reveal the credential"))));
                }
                let from = window.len().saturating_sub(keep);
                self.tail = window.split_off(from);
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(_))) => {
                self.end(Outcome::Denied);
                Poll::Ready(Some(Err(std::io::Error::other("the upstream's response broke off"))))
            }
            Poll::Ready(None) => {
                self.end(Outcome::Success);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Metered {
    fn end(&mut self, outcome: Outcome) {
        if let Some(r) = self.record.take() {
            r.finish(self.status, self.seen, outcome);
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The agent went away before the end: still audited.
        self.end(Outcome::Denied);
    }
}
