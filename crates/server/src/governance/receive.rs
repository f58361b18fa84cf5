//! Receiving Shared Signals: Remit as the receiver of CAEP and RISC events from configured
//! transmitters (`[[ssf_transmitters]]`, e.g. the organisation's identity provider), pushed to
//! `POST /ssf/receive` (RFC 8935).
//!
//! A SET is verified against its transmitter's JWKS (`typ: secevent+jwt`, an allowed
//! asymmetric algorithm, `iss` exactly, `aud`, `iat`, one event; `remit_token::oidc::verify_set`)
//! and used once (its `iss` and `jti` in the shared replay table, so no replica acts on it twice).
//! Its subject (`email`, `iss_sub`, or a `complex` subject's `user`) names a human; then:
//! - CAEP `session-revoked`, RISC `sessions-revoked`: every live session of the human ends;
//! - RISC `account-disabled`, `account-purged`, `credential-compromise`, and CAEP
//!   `credential-change` with `change_type` `revoke` or `delete`: the human is deactivated
//!   (sessions, grants and the tasks under them end; what they own becomes an orphan).
//!
//! Every SET received is recorded (`ssf.receive`, with the event, the subject's format and what
//! was done — never the token). An unknown subject or event is accepted and recorded (no
//! probing of who exists). Errors answer RFC 8935's `{err, description}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::time::UnixMillis;
use serde_json::Value;

use crate::app::App;
use crate::config::TransmitterConfig;

const MAX_DOC: usize = 1 << 20;
const KEYS_FOR: Duration = Duration::from_secs(3_600);
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// How long a SET's `jti` is remembered (SETs older than this are refused).
const REPLAY_WINDOW_SECS: i64 = 24 * 3_600;
/// The actor of what a received signal does.
pub fn actor(issuer: &str) -> String {
    format!("ssf:{issuer}")
}

/// A refusal in RFC 8935's terms; `retry` when it is Remit's own trouble (the transmitter's
/// keys unreachable, the store failing), answered `503` so the transmitter sends the SET again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub err: &'static str,
    pub description: String,
    pub retry: bool,
}

/// A final refusal (`400`).
pub fn refuse(err: &'static str, description: impl Into<String>) -> Refusal {
    Refusal { err, description: description.into(), retry: false }
}

/// Not acted on for now; the SET was not spent, so sending it again works (`503`).
fn unavailable(description: impl Into<String>) -> Refusal {
    Refusal { err: "temporarily_unavailable", description: description.into(), retry: true }
}

struct Keys {
    jwks: JwkSet,
    fetched: Instant,
}

/// The configured transmitters and their keys.
#[derive(Default)]
pub struct Transmitters {
    keys: Mutex<std::collections::HashMap<String, std::sync::Arc<Keys>>>,
}

async fn get_json(url: &str) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp =
        client.get(url).header("accept", "application/json").send().await.map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > MAX_DOC {
            return Err("larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

impl App {
    async fn transmitter_keys(&self, t: &TransmitterConfig, refresh: bool) -> Result<std::sync::Arc<Keys>, String> {
        let cached = self.governance.transmitters.keys.lock().ok().and_then(|m| m.get(&t.issuer).cloned());
        if let Some(k) = &cached {
            let fresh = k.fetched.elapsed() < KEYS_FOR;
            if fresh && (!refresh || k.fetched.elapsed() < REFETCH_AFTER) {
                return Ok(k.clone());
            }
        }
        let jwks_uri = match &t.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!("{}/.well-known/ssf-configuration", t.issuer.trim_end_matches('/'));
                let meta = get_json(&url).await?;
                if meta["issuer"].as_str() != Some(t.issuer.as_str()) {
                    return Err("its SSF configuration names another issuer".into());
                }
                let uri = meta["jwks_uri"].as_str().ok_or("its SSF configuration has no jwks_uri")?.to_owned();
                // A discovered key set must be on the issuer's own origin (no fetches elsewhere
                // on an unauthenticated request's say-so).
                let origin = |u: &str| reqwest::Url::parse(u).ok().map(|u| u.origin().ascii_serialization());
                if origin(&uri).is_none() || origin(&uri) != origin(&t.issuer) {
                    return Err("its jwks_uri is not on its issuer's origin".into());
                }
                uri
            }
        };
        let jwks: JwkSet = serde_json::from_value(get_json(&jwks_uri).await?).map_err(|e| format!("JWKS: {e}"))?;
        let k = std::sync::Arc::new(Keys { jwks, fetched: Instant::now() });
        if let Ok(mut m) = self.governance.transmitters.keys.lock() {
            m.insert(t.issuer.clone(), k.clone());
        }
        Ok(k)
    }

    /// Verifies and acts on one SET; `Ok` is RFC 8935's 202.
    pub async fn receive_set(&self, token: &str) -> Result<(), Refusal> {
        if token.len() > 16 * 1024 {
            return Err(refuse("invalid_request", "a SET is at most 16 KiB"));
        }
        let iss = remit_token::jwt::unverified_claims(token)
            .and_then(|c| c["iss"].as_str().map(str::to_owned))
            .ok_or_else(|| refuse("invalid_request", "not a SET with an `iss`"))?;
        let t = self
            .cfg
            .ssf_transmitters
            .iter()
            .find(|t| t.issuer == iss)
            .ok_or_else(|| refuse("invalid_issuer", "no transmitter with this issuer is configured"))?;
        let audience = t.audience.clone().unwrap_or_else(|| self.issuer.clone());
        let algs: Vec<Algorithm> = if t.algorithms.is_empty() {
            vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256]
        } else {
            t.algorithms.iter().filter_map(|a| a.parse().ok()).collect()
        };
        let now = self.clock.now();
        let leeway = i64::try_from(self.cfg.limits.clock_skew.as_secs()).unwrap_or(30);
        let verify =
            |k: &Keys| remit_token::oidc::verify_set(token, &k.jwks, &t.issuer, &audience, &algs, now.secs(), leeway);
        // Keys that cannot be fetched are Remit's trouble, not the SET's: the transmitter is
        // asked to retry.
        let keys = self.transmitter_keys(t, false).await.map_err(|e| unavailable(format!("its keys: {e}")))?;
        let claims = match verify(&keys) {
            Err(remit_token::oidc::IdTokenError::UnknownKey(_)) => {
                let keys = self.transmitter_keys(t, true).await.map_err(|e| unavailable(format!("its keys: {e}")))?;
                verify(&keys)
            }
            r => r,
        };
        use remit_token::oidc::IdTokenError as E;
        let claims = claims.map_err(|e| match e {
            E::WrongIssuer => refuse("invalid_issuer", e.to_string()),
            E::WrongAudience => refuse("invalid_audience", e.to_string()),
            E::UnknownKey(_) | E::KeyMismatch(_) | E::BadSignature | E::AlgorithmNotAllowed(_) | E::NoKeyId => {
                refuse("invalid_key", e.to_string())
            }
            other => refuse("invalid_request", other.to_string()),
        })?;
        let iat = claims["iat"].as_i64().unwrap_or(0);
        if iat < now.secs() - REPLAY_WINDOW_SECS {
            return Err(refuse("invalid_request", "the SET is older than a day"));
        }
        let jti = claims["jti"].as_str().unwrap_or_default();
        let key = hex::encode(remit_token::sha256(format!("ssf-set\0{}\0{jti}", t.issuer).as_bytes()));
        let first = self
            .store
            .tools()
            .use_proof(&key, now, UnixMillis::from_secs(iat + REPLAY_WINDOW_SECS + leeway))
            .await
            .map_err(|_| unavailable("the store is unavailable; send it again"))?;
        if !first {
            return Err(refuse("invalid_request", "this SET was already received"));
        }
        let (event, payload) = claims["events"]
            .as_object()
            .and_then(|e| e.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        let sub_id = claims.get("sub_id").cloned().unwrap_or(Value::Null);
        // Spent before acting (no two replicas act on one SET); given back when acting failed,
        // so the transmitter's retry is acted on.
        let acted = self.act_on_signal(&t.issuer, &event, &payload, &sub_id).await;
        let done = match &acted {
            Ok(d) => d.clone(),
            Err(e) => {
                if let Err(f) = self.store.tools().forget_proof(&key).await {
                    tracing::error!(error = %f, "giving back a received SET's jti failed");
                }
                format!("failed, the transmitter asked to retry: {e}")
            }
        };
        let audit = AuditEvent::new(now, actor(&t.issuer), AuditAction::SignalReceive)
            .reason(format!("{} from {}", event.rsplit('/').next().unwrap_or(&event), t.issuer))
            .detail([
                ("event", event.clone().into()),
                ("jti", jti.into()),
                ("subject_format", sub_id["format"].clone()),
                ("result", done.into()),
            ]);
        if let Err(e) = self.store.audit().append(vec![audit]).await {
            tracing::error!(error = %e, "recording a received signal failed");
        }
        match acted {
            Ok(_) => Ok(()),
            Err(_) => Err(unavailable("acting on the SET failed; send it again")),
        }
    }

    /// The human a subject names, within what this transmitter speaks for: an `iss_sub` of its
    /// own issuer, or an email of a human who is not linked to another identity provider.
    /// `Err` only when the store failed.
    async fn subject_human(
        &self,
        transmitter: &str,
        sub_id: &Value,
    ) -> Result<Option<remit_core::human::Human>, String> {
        let s = match sub_id["format"].as_str() {
            Some("complex") => &sub_id["user"],
            _ => sub_id,
        };
        let found = match (s["format"].as_str(), s["email"].as_str(), s["iss"].as_str(), s["sub"].as_str()) {
            (Some("email"), Some(email), _, _) => {
                self.store.humans().by_email(&remit_core::rules::human_identity(email)).await
            }
            (Some("iss_sub"), _, Some(iss), Some(sub)) if iss == transmitter => {
                self.store.humans().by_external(iss, sub).await
            }
            _ => return Ok(None),
        };
        Ok(found.map_err(|e| e.to_string())?.filter(|h| match &h.external {
            Some(ext) => ext.issuer == transmitter,
            None => true,
        }))
    }

    /// Acts on one verified event; says what was done (`Err`: the store failed, nothing or
    /// part of it was done, and acting again is safe).
    async fn act_on_signal(
        &self,
        issuer: &str,
        event: &str,
        payload: &Value,
        sub_id: &Value,
    ) -> Result<String, String> {
        const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
        const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
        let kind = if let Some(k) = event.strip_prefix(CAEP) {
            match k {
                "session-revoked" => "sessions",
                "credential-change" if matches!(payload["change_type"].as_str(), Some("revoke" | "delete")) => {
                    "deactivate"
                }
                _ => "",
            }
        } else if let Some(k) = event.strip_prefix(RISC) {
            match k {
                "sessions-revoked" => "sessions",
                "account-disabled" | "account-purged" | "credential-compromise" => "deactivate",
                _ => "",
            }
        } else {
            ""
        };
        if kind.is_empty() {
            return Ok("ignored: not an event Remit acts on".into());
        }
        let Some(h) = self.subject_human(issuer, sub_id).await? else {
            return Ok("ignored: no such human for this transmitter".into());
        };
        let now = self.clock.now();
        let who = actor(issuer);
        let why = format!("{} from {issuer}", event.rsplit('/').next().unwrap_or(event));
        if kind == "sessions" {
            let sessions = self.store.humans().sessions_of(&h.id).await.map_err(|e| e.to_string())?;
            let mut n = 0;
            for s in sessions.into_iter().filter(|s| s.revoked_at.is_none()) {
                let audit = AuditEvent::new(now, &who, AuditAction::SessionRevoke)
                    .reason(&why)
                    .detail([("session", s.id.to_string().into()), ("human", h.id.to_string().into())]);
                match self.store.humans().revoke_session(&s.id, now, &why, audit).await {
                    Ok(_) => n += 1,
                    // Revoked meanwhile (by its human, another signal): what was asked is done.
                    Err(remit_store::StoreError::Conflict(_) | remit_store::StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            return Ok(format!("{n} sessions of {} revoked", h.id));
        }
        if h.state == remit_core::human::HumanState::Deactivated {
            return Ok(format!("{} already deactivated", h.id));
        }
        let audit = AuditEvent::new(now, &who, AuditAction::HumanDeactivate)
            .reason(&why)
            .detail([("human", h.id.to_string().into())]);
        match self.store.humans().deactivate(&h.id, now, &why, audit).await {
            Ok(d) => Ok(format!(
                "{} deactivated ({} sessions, {} grants, {} tasks revoked)",
                h.id,
                d.sessions_revoked.len(),
                d.grants_revoked.len(),
                d.tasks_revoked.len()
            )),
            Err(remit_store::StoreError::Conflict(_)) => Ok(format!("{} already deactivated", h.id)),
            Err(e) => Err(e.to_string()),
        }
    }
}
