//! The Shared Signals Framework transmitter (OpenID SSF 1.0): discovery, the stream management
//! API, the Security Event Tokens Remit sends, and poll delivery (RFC 8936).
//!
//! Receivers are tools (by their own `remit_tool.…` secret; the stream's `aud` is the tool's
//! audience and it hears only of tasks, agents and credentials of workflows that list it) or
//! Remit's administrators (`signals.manage`; such streams hear of everything). A receiver sees
//! and changes only its own streams: another's id is a 404.
//!
//! What a stream carries is derived from the audit log (see [`super::tail`]): a revoked or
//! completed task, a revoked instance or grant → CAEP `session-revoked`; a per-tool credential
//! revoked → CAEP `credential-change` (`change_type: revoke`); a disabled agent or deactivated
//! human → RISC `account-disabled` (and `account-enabled` back). Subjects are RFC 9493 / SSF
//! subject identifiers: SPIFFE IDs as `uri`, credentials as `jwt_id`, humans as `email`,
//! grants as `opaque`. Every SET is signed with the installation's JWT key (`typ:
//! secevent+jwt`, no `sub`, no `exp`) when it is delivered — the outbox keeps its claims — so
//! receivers verify it by the JWKS (a key rotated meanwhile included) and no verifier of
//! Remit's accepts it as a token.
//!
//! A push stream's `authorization_header` is sealed at rest under a key derived from the KEK
//! and never shown again.

use std::collections::BTreeMap;
use std::time::Duration;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_store::{OutboxRow, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::sets::{is_stream_update, set_for, signed};
use crate::app::App;
use crate::caller::Caller;
use crate::error::Error;

pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
pub const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";
/// The event types a stream may ask for.
pub const SUPPORTED: [&str; 4] = [SESSION_REVOKED, CREDENTIAL_CHANGE, ACCOUNT_DISABLED, ACCOUNT_ENABLED];

/// Streams one receiver may hold.
pub const MAX_STREAMS_PER_RECEIVER: usize = 8;
/// Seconds between verification requests a receiver may make per stream.
pub const MIN_VERIFICATION_INTERVAL: u64 = 5;
/// Longest a long poll waits for a SET.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// Most SETs one poll answers with.
pub const MAX_POLL_EVENTS: u32 = 1_000;
const MAX_DESCRIPTION: usize = 256;
const MAX_URL: usize = 2_048;
const MAX_AUTH_HEADER: usize = 4_096;
const SEAL_PURPOSE: &str = "ssf-push-authorization";

/// Who manages a stream: a tool, or Remit's administrators.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// `tool:<name>` or `admin`.
    pub owner: String,
    /// The tool whose audience the stream's SETs name.
    pub tool: Option<remit_core::tool::Tool>,
    /// How the caller appears in audit records.
    pub actor: String,
}

impl Receiver {
    pub fn of_tool(t: remit_core::tool::Tool) -> Self {
        Receiver { owner: format!("tool:{}", t.name), actor: format!("tool:{}", t.name), tool: Some(t) }
    }
}

/// A stream's delivery (SSF §6.1). The push `authorization_header` is accepted, sealed, and
/// never returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Delivery {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing)]
    pub authorization_header: Option<String>,
}

/// The stream configuration (SSF §8.1.1) as served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StreamConfig {
    pub stream_id: String,
    pub iss: String,
    pub aud: String,
    pub events_supported: Vec<String>,
    #[serde(default)]
    pub events_requested: Vec<String>,
    pub events_delivered: Vec<String>,
    pub delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub min_verification_interval: u64,
}

/// What is stored: the configuration and the sealed push authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    config: StreamConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authorization_sealed: Option<String>,
}

/// A create, update or replace request: the receiver's properties, and the transmitter's,
/// which must match when present.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct StreamRequest {
    #[serde(default)]
    pub stream_id: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    /// Transmitter-supplied; on create only an administrator may name it.
    #[serde(default)]
    pub aud: Option<Value>,
    #[serde(default)]
    pub events_requested: Option<Vec<String>>,
    #[serde(default)]
    pub events_delivered: Option<Vec<String>>,
    #[serde(default)]
    pub delivery: Option<Delivery>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A stream's status (SSF §8.1.2).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamStatus {
    pub stream_id: String,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An RFC 8936 poll.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    #[serde(default)]
    pub max_events: Option<u32>,
    #[serde(default)]
    pub return_immediately: Option<bool>,
    #[serde(default)]
    pub ack: Vec<String>,
    #[serde(default)]
    pub set_errs: BTreeMap<String, Value>,
}

/// An RFC 8936 poll response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    pub sets: BTreeMap<String, String>,
    pub more_available: bool,
}

pub(crate) fn parse_stored(s: &Stream) -> Result<StreamConfig, Error> {
    serde_json::from_str::<Stored>(&s.config)
        .map(|st| st.config)
        .map_err(|e| Error::Internal(format!("stream `{}` configuration is corrupt: {e}", s.id)))
}

/// The push authorization of a stored stream, opened.
pub(crate) fn push_authorization(app: &App, s: &Stream) -> Result<Option<String>, Error> {
    let st: Stored = serde_json::from_str(&s.config).map_err(|e| Error::Internal(format!("stream config: {e}")))?;
    let Some(sealed) = st.authorization_sealed else { return Ok(None) };
    let bytes = remit_token::b64d(&sealed).ok_or_else(|| Error::Internal("sealed authorization".into()))?;
    let kek = app.kek().derive(SEAL_PURPOSE).map_err(|e| Error::Internal(e.to_string()))?;
    let open = kek.open(&s.id, &bytes).map_err(|e| Error::Internal(format!("push authorization: {e}")))?;
    String::from_utf8(open).map(Some).map_err(|_| Error::Internal("push authorization".into()))
}

/// Whether a stream's receiver may get SETs now (a tool must exist and be active).
pub(crate) async fn receiver_active(app: &App, owner: &str) -> Result<bool, Error> {
    let Some(tool) = owner.strip_prefix("tool:") else { return Ok(owner == "admin") };
    let Ok(name) = remit_core::ids::ToolName::parse(tool) else { return Ok(false) };
    Ok(app.store.tools().tool(&name).await?.is_some_and(|t| t.state == remit_core::tool::ToolState::Active))
}

/// Whether `host` is in `[governance] push_allow`.
fn push_allowed(allow: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == a.trim_start_matches('[').trim_end_matches(']'),
        }
    })
}

fn check_url(u: &str, field: &str) -> Result<(), Error> {
    if u.len() > MAX_URL {
        return Err(Error::Invalid(format!("`{field}` is longer than {MAX_URL} bytes")));
    }
    let url = reqwest::Url::parse(u).map_err(|e| Error::Invalid(format!("`{field}`: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(Error::Invalid(format!("`{field}` must be an https:// URL (http:// only on loopback)"))),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(Error::Invalid(format!("`{field}` may not carry credentials or a fragment")));
    }
    Ok(())
}

impl App {
    fn base_url(&self) -> String {
        self.cfg.public_url.clone().unwrap_or_else(|| self.issuer.clone()).trim_end_matches('/').to_owned()
    }

    /// The transmitter configuration metadata (SSF §7.1).
    pub fn ssf_configuration(&self) -> Value {
        let b = self.base_url();
        json!({
            "spec_version": "1_0",
            "issuer": self.issuer,
            "jwks_uri": format!("{b}/.well-known/jwks.json"),
            "delivery_methods_supported": [PUSH, POLL],
            "configuration_endpoint": format!("{b}/ssf/streams"),
            "status_endpoint": format!("{b}/ssf/status"),
            "verification_endpoint": format!("{b}/ssf/verify"),
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
            "default_subjects": "ALL",
        })
    }

    /// The receiver a management caller is: an administrator with `signals.manage`.
    pub async fn ssf_admin_receiver(&self, caller: &Caller) -> Result<Receiver, Error> {
        caller.require_human_or_admin()?;
        self.allow(
            caller,
            remit_policy::admin::AdminAction::SignalsManage,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        Ok(Receiver { owner: "admin".into(), tool: None, actor: caller.actor() })
    }

    async fn own_stream(&self, r: &Receiver, id: &str) -> Result<(Stream, StreamConfig), Error> {
        let s = self.store.governance().stream(id).await?;
        match s {
            Some(s) if s.owner == r.owner => {
                let c = parse_stored(&s)?;
                Ok((s, c))
            }
            _ => Err(Error::NotFound(format!(
                "no stream `{}` for this receiver",
                remit_core::ids::truncate_for_error(id)
            ))),
        }
    }

    fn seal_authorization(&self, id: &str, v: &str) -> Result<String, Error> {
        if v.is_empty() || v.len() > MAX_AUTH_HEADER || v.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid(format!(
                "`delivery.authorization_header` must be 1..{MAX_AUTH_HEADER} printable characters"
            )));
        }
        let kek = self.kek().derive(SEAL_PURPOSE).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(remit_token::b64e(&kek.seal(id, v.as_bytes())))
    }

    /// Applies a request's receiver-supplied properties (`replace`: absent ones are cleared).
    fn apply(
        &self,
        r: &Receiver,
        id: &str,
        cfg: &mut StreamConfig,
        sealed: &mut Option<String>,
        req: StreamRequest,
        replace: bool,
    ) -> Result<(), Error> {
        let mismatch = |f: &str| Error::Invalid(format!("`{f}` is the transmitter's and does not match"));
        if req.iss.as_ref().is_some_and(|i| *i != cfg.iss) {
            return Err(mismatch("iss"));
        }
        if req.aud.as_ref().is_some_and(|a| a.as_str() != Some(cfg.aud.as_str()) && *a != json!([cfg.aud])) {
            return Err(mismatch("aud"));
        }
        if req.events_delivered.as_ref().is_some_and(|e| *e != cfg.events_delivered) {
            return Err(mismatch("events_delivered"));
        }
        match req.events_requested {
            Some(ev) => {
                if ev.len() > 64 || ev.iter().any(|e| e.len() > 256) {
                    return Err(Error::Invalid("`events_requested` lists at most 64 URIs".into()));
                }
                cfg.events_requested = ev;
            }
            None if replace => cfg.events_requested = vec![],
            None => {}
        }
        cfg.events_delivered = SUPPORTED
            .iter()
            .filter(|e| cfg.events_requested.iter().any(|r| r == *e))
            .map(|e| (*e).to_owned())
            .collect();
        match req.description {
            Some(d) if d.len() > MAX_DESCRIPTION => {
                return Err(Error::Invalid(format!("`description` is longer than {MAX_DESCRIPTION} bytes")));
            }
            Some(d) => cfg.description = Some(d),
            None if replace => cfg.description = None,
            None => {}
        }
        let delivery = match req.delivery {
            Some(d) => Some(d),
            None if replace => Some(Delivery { method: POLL.into(), endpoint_url: None, authorization_header: None }),
            None => None,
        };
        if let Some(d) = delivery {
            match d.method.as_str() {
                PUSH => {
                    let url =
                        d.endpoint_url.ok_or_else(|| Error::Invalid("push delivery needs `endpoint_url`".into()))?;
                    check_url(&url, "delivery.endpoint_url")?;
                    if r.tool.is_some() {
                        let host = reqwest::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned));
                        if !host.is_some_and(|h| push_allowed(&self.cfg.governance.push_allow, &h)) {
                            return Err(Error::Denied(
                                "a tool's push endpoint must be on a host in [governance] push_allow (or use poll)"
                                    .into(),
                            ));
                        }
                    }
                    // The same endpoint without a new authorization keeps the one it had (the
                    // header is never shown, so a read-modify-write cannot repeat it).
                    let same =
                        cfg.delivery.method == PUSH && cfg.delivery.endpoint_url.as_deref() == Some(url.as_str());
                    *sealed = match d.authorization_header {
                        Some(h) => Some(self.seal_authorization(id, &h)?),
                        None if same => sealed.take(),
                        None => None,
                    };
                    cfg.delivery =
                        Delivery { method: PUSH.into(), endpoint_url: Some(url), authorization_header: None };
                }
                POLL => {
                    *sealed = None;
                    let url = format!("{}/ssf/poll/{id}", self.base_url());
                    cfg.delivery =
                        Delivery { method: POLL.into(), endpoint_url: Some(url), authorization_header: None };
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "delivery method `{}` is not supported ({PUSH}, {POLL})",
                        remit_core::ids::truncate_for_error(other)
                    )));
                }
            }
        }
        Ok(())
    }

    async fn store_stream(
        &self,
        r: &Receiver,
        cfg: &StreamConfig,
        sealed: Option<String>,
        status: (&str, Option<String>),
        prev: Option<&Stream>,
        action: AuditAction,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let config = serde_json::to_string(&Stored { config: cfg.clone(), authorization_sealed: sealed })
            .map_err(|e| Error::Internal(e.to_string()))?;
        let audit = AuditEvent::new(now, &r.actor, action).detail([
            ("stream", cfg.stream_id.clone().into()),
            ("owner", r.owner.clone().into()),
            ("method", cfg.delivery.method.clone().into()),
            ("events", cfg.events_delivered.clone().into()),
            ("status", status.0.into()),
        ]);
        let s = Stream {
            id: cfg.stream_id.clone(),
            owner: r.owner.clone(),
            config,
            status: status.0.into(),
            reason: status.1,
            created_at: prev.map_or(now, |p| p.created_at),
            updated_at: now,
            version: prev.map_or(0, |p| p.version),
        };
        // Compare-and-set on the version read: a concurrent change (the receiver's, or the
        // transmitter disabling a full stream) is a 409, never silently overwritten.
        self.store.governance().put_stream(s, vec![], Some(audit)).await.map_err(|e| match e {
            remit_store::StoreError::Conflict(_) => {
                Error::Conflict("the stream changed meanwhile; read it and retry".into())
            }
            e => e.into(),
        })?;
        Ok(())
    }

    /// Creates a stream (SSF §8.1.1.1); no `delivery` means poll.
    pub async fn create_stream(&self, r: &Receiver, req: StreamRequest) -> Result<StreamConfig, Error> {
        if self.store.governance().streams(Some(&r.owner)).await?.len() >= MAX_STREAMS_PER_RECEIVER {
            return Err(Error::Conflict(format!("a receiver holds at most {MAX_STREAMS_PER_RECEIVER} streams")));
        }
        if req.stream_id.is_some() || req.events_delivered.is_some() {
            return Err(Error::Invalid("`stream_id` and `events_delivered` are the transmitter's".into()));
        }
        if req.aud.is_some() {
            return Err(Error::Invalid("`aud` is the transmitter's".into()));
        }
        let id = hex::encode(self.random.bytes16());
        // Each stream's own audience, never a tool's access-token audience: a verifier that
        // forgets to check `typ` still cannot take a SET for an access token (RFC 8417 §4).
        let aud = format!("{}/ssf/receivers/{id}", self.base_url());
        let mut cfg = StreamConfig {
            stream_id: id.clone(),
            iss: self.issuer.clone(),
            aud,
            events_supported: SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
            events_requested: vec![],
            events_delivered: vec![],
            delivery: Delivery { method: POLL.into(), endpoint_url: None, authorization_header: None },
            description: None,
            min_verification_interval: MIN_VERIFICATION_INTERVAL,
        };
        let mut sealed = None;
        let req = StreamRequest {
            aud: None,
            delivery: req.delivery.clone().or(Some(Delivery {
                method: POLL.into(),
                endpoint_url: None,
                authorization_header: None,
            })),
            ..req
        };
        self.apply(r, &id, &mut cfg, &mut sealed, req, false)?;
        self.store_stream(r, &cfg, sealed, ("enabled", None), None, AuditAction::SsfStreamCreate).await?;
        Ok(cfg)
    }

    /// One stream, or all of the receiver's.
    pub async fn read_streams(&self, r: &Receiver, id: Option<&str>) -> Result<Vec<StreamConfig>, Error> {
        match id {
            Some(id) => Ok(vec![self.own_stream(r, id).await?.1]),
            None => {
                let all = self.store.governance().streams(Some(&r.owner)).await?;
                all.iter().map(parse_stored).collect()
            }
        }
    }

    /// PATCH (`replace` false) or PUT (`replace` true) a stream.
    pub async fn update_stream(&self, r: &Receiver, req: StreamRequest, replace: bool) -> Result<StreamConfig, Error> {
        let id = req.stream_id.clone().ok_or_else(|| Error::Invalid("`stream_id` is required".into()))?;
        let (s, mut cfg) = self.own_stream(r, &id).await?;
        let st: Stored = serde_json::from_str(&s.config).map_err(|e| Error::Internal(e.to_string()))?;
        let mut sealed = st.authorization_sealed;
        self.apply(r, &id, &mut cfg, &mut sealed, req, replace)?;
        self.store_stream(r, &cfg, sealed, (&s.status, s.reason.clone()), Some(&s), AuditAction::SsfStreamUpdate)
            .await?;
        Ok(cfg)
    }

    pub async fn delete_stream(&self, r: &Receiver, id: &str) -> Result<(), Error> {
        let (s, _) = self.own_stream(r, id).await?;
        let audit = AuditEvent::new(self.clock.now(), &r.actor, AuditAction::SsfStreamDelete)
            .detail([("stream", s.id.clone().into()), ("owner", s.owner.clone().into())]);
        self.store.governance().delete_stream(&s.id, audit).await?;
        Ok(())
    }

    pub async fn stream_status(&self, r: &Receiver, id: &str) -> Result<StreamStatus, Error> {
        let (s, _) = self.own_stream(r, id).await?;
        Ok(StreamStatus { stream_id: s.id, status: s.status, reason: s.reason })
    }

    /// Sets a stream's status at its receiver's request; `disabled` drops what was queued (in
    /// the same transaction).
    pub async fn set_stream_status(&self, r: &Receiver, want: StreamStatus) -> Result<StreamStatus, Error> {
        let (s, cfg) = self.own_stream(r, &want.stream_id).await?;
        if !remit_store::governance::STREAM_STATUSES.contains(&want.status.as_str()) {
            return Err(Error::Invalid("`status` must be `enabled`, `paused` or `disabled`".into()));
        }
        if want.reason.as_ref().is_some_and(|x| x.len() > MAX_DESCRIPTION) {
            return Err(Error::Invalid(format!("`reason` is longer than {MAX_DESCRIPTION} bytes")));
        }
        let st: Stored = serde_json::from_str(&s.config).map_err(|e| Error::Internal(e.to_string()))?;
        // Leaving `disabled`: the notice that Remit disabled it is stale now (nothing else is
        // queued while disabled, so the queue is dropped before the status changes).
        if s.status == "disabled" && want.status != "disabled" {
            let g = self.store.governance();
            let queued = g.outbox(&s.id, remit_core::time::UnixMillis(i64::MAX), MAX_POLL_EVENTS).await?;
            let stale: Vec<String> = queued.into_iter().filter(is_stream_update).map(|r| r.jti).collect();
            if !stale.is_empty() {
                g.acknowledge(&s.id, stale).await?;
            }
        }
        self.store_stream(
            r,
            &cfg,
            st.authorization_sealed,
            (&want.status, want.reason.clone()),
            Some(&s),
            AuditAction::SsfStreamUpdate,
        )
        .await?;
        Ok(StreamStatus { stream_id: s.id, status: want.status, reason: want.reason })
    }

    /// Queues a verification event (SSF §8.1.4) echoing `state`; at most one per
    /// [`MIN_VERIFICATION_INTERVAL`] per stream.
    pub async fn verify_stream(&self, r: &Receiver, id: &str, state: Option<String>) -> Result<(), Error> {
        let (s, cfg) = self.own_stream(r, id).await?;
        if state.as_ref().is_some_and(|x| x.len() > 1_024) {
            return Err(Error::Invalid("`state` is longer than 1024 bytes".into()));
        }
        // A disabled stream delivers nothing: a 204 would promise an event that never comes.
        if s.status == "disabled" {
            return Err(Error::Invalid("the stream is disabled: enable it first (POST /ssf/status)".into()));
        }
        let now = self.clock.now();
        // One per interval per stream across every replica: an entry in the shared replay table
        // that lives for the interval.
        let key = hex::encode(remit_token::sha256(format!("ssf-verify\0{}", s.id).as_bytes()));
        let until =
            remit_core::time::UnixMillis(now.0 + i64::try_from(MIN_VERIFICATION_INTERVAL * 1000).unwrap_or(i64::MAX));
        if !self.store.tools().use_proof(&key, now, until).await? {
            return Err(Error::TooMany(format!(
                "one verification per {MIN_VERIFICATION_INTERVAL} s per stream (min_verification_interval)"
            )));
        }
        let payload = match state {
            Some(st) => json!({ "state": st }),
            None => json!({}),
        };
        let sub = json!({"format": "opaque", "id": s.id});
        let (jti, set) = set_for(self, &cfg, VERIFICATION, &sub, &payload, &format!("verify:{}", s.id));
        let (seq, _) = self.store.audit().head().await?;
        let row =
            OutboxRow { stream: s.id, jti, seq, set, created_at: now, attempts: 0, next_at: now, last_error: None };
        self.store.governance().enqueue(vec![row]).await?;
        Ok(())
    }

    /// Queued rows signed for delivery, by `jti`; a row whose MAC does not hold is dropped
    /// unsigned (logged without its content).
    async fn deliverable(
        &self,
        stream: &str,
        rows: impl Iterator<Item = OutboxRow>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut sets = BTreeMap::new();
        let mut bad = Vec::new();
        for r in rows {
            match signed(self, &r) {
                Ok(set) => {
                    sets.insert(r.jti, set);
                }
                Err(why) => {
                    tracing::error!(stream = %stream, why, "a queued SET is not Remit's; dropped unsigned");
                    bad.push(r.jti);
                }
            }
        }
        if !bad.is_empty() {
            self.store.governance().acknowledge(stream, bad).await?;
        }
        Ok(sets)
    }

    /// RFC 8936 poll: acknowledgements first, then the queued SETs (waiting up to
    /// [`LONG_POLL`] for one unless `returnImmediately`).
    pub async fn poll_stream(&self, r: &Receiver, id: &str, req: PollRequest) -> Result<PollResponse, Error> {
        let (s, cfg) = self.own_stream(r, id).await?;
        if cfg.delivery.method != POLL {
            return Err(Error::Invalid("this stream is delivered by push, not poll".into()));
        }
        if req.ack.len() > MAX_POLL_EVENTS as usize || req.set_errs.len() > MAX_POLL_EVENTS as usize {
            return Err(Error::Invalid(format!("at most {MAX_POLL_EVENTS} acknowledgements per poll")));
        }
        let g = self.store.governance();
        let mut done: Vec<String> = req.ack;
        for (jti, err) in &req.set_errs {
            // A receiver that could not take a SET will not take it again: dropped, logged
            // with the receiver's error code only.
            tracing::warn!(stream = %s.id, jti = %remit_core::ids::truncate_for_error(jti),
                err = %remit_core::ids::truncate_for_error(err["err"].as_str().unwrap_or("")), "a receiver refused a SET");
            done.push(jti.clone());
        }
        if !done.is_empty() {
            g.acknowledge(&s.id, done).await?;
        }
        let max = req.max_events.unwrap_or(100).min(MAX_POLL_EVENTS);
        if max == 0 || s.status == "paused" {
            return Ok(PollResponse { sets: BTreeMap::new(), more_available: false });
        }
        // Disabled: only the notice saying so (Remit disabled it), at once.
        if s.status != "enabled" {
            let rows = g.outbox(&s.id, remit_core::time::UnixMillis(i64::MAX), max).await?;
            let sets = self.deliverable(&s.id, rows.into_iter().filter(is_stream_update)).await?;
            return Ok(PollResponse { sets, more_available: false });
        }
        let _slot = PollSlot::take(self, &s.id)?;
        let mut changes = self.store.subscribe();
        let mut stopping = self.stopping.subscribe();
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            let rows = g.outbox(&s.id, remit_core::time::UnixMillis(i64::MAX), max + 1).await?;
            if !rows.is_empty() || req.return_immediately.unwrap_or(false) {
                let more = rows.len() > max as usize;
                let sets = self.deliverable(&s.id, rows.into_iter().take(max as usize)).await?;
                return Ok(PollResponse { sets, more_available: more });
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(PollResponse { sets: BTreeMap::new(), more_available: false });
                }
                _ = stopping.changed() => return Ok(PollResponse { sets: BTreeMap::new(), more_available: false }),
                closed = queued(&mut changes) => if closed {
                    return Err(Error::Unavailable("shutting down".into()));
                },
                // A missed notification (the feed down) costs at most a second.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Waits until SETs may have been queued (or the feed resynced); `true` if the feed closed.
async fn queued(changes: &mut tokio::sync::broadcast::Receiver<remit_store::Change>) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match changes.recv().await {
            Ok(remit_store::Change::Outbox | remit_store::Change::Resync) | Err(RecvError::Lagged(_)) => return false,
            Ok(_) => {}
            Err(RecvError::Closed) => return true,
        }
    }
}

/// Long polls waiting on one stream, per process.
const MAX_POLLS_PER_STREAM: usize = 2;

struct PollSlot<'a> {
    app: &'a App,
    id: String,
}

impl<'a> PollSlot<'a> {
    fn take(app: &'a App, id: &str) -> Result<Self, Error> {
        let mut m = app.governance.polls.lock().map_err(|_| Error::Internal("lock".into()))?;
        let n = m.entry(id.to_owned()).or_insert(0);
        if *n >= MAX_POLLS_PER_STREAM {
            return Err(Error::TooMany(format!("at most {MAX_POLLS_PER_STREAM} polls at once per stream")));
        }
        *n += 1;
        Ok(PollSlot { app, id: id.to_owned() })
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.app.governance.polls.lock()
            && let Some(n) = m.get_mut(&self.id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hosts_must_be_allowed() {
        let allow = vec!["receiver.example.com".to_owned(), "*.corp.example".to_owned(), "127.0.0.1".to_owned()];
        assert!(push_allowed(&allow, "receiver.example.com"));
        assert!(push_allowed(&allow, "a.b.corp.example"));
        assert!(!push_allowed(&allow, "corp.example"));
        assert!(!push_allowed(&allow, "evil-receiver.example.com"));
        assert!(push_allowed(&allow, "127.0.0.1"));
        assert!(!push_allowed(&allow, "169.254.169.254"));
        assert!(!push_allowed(&[], "receiver.example.com"));
    }
}
