//! Credential sharing at runtime: the same task, per-tool or instance token — or an instance's
//! X.509-SVID over mutual TLS, by its serial number — presented *as the bearer* from somewhere
//! else than where it was first presented (for an instance: one instance identity used from
//! two places at once).
//!
//! A presenter is the client address (behind `[limits] trusted_proxies`, the forwarded address
//! of `X-Forwarded-For`: the rightmost entry that is not itself a trusted proxy), the X.509-SVID
//! of a mutual-TLS connection (an instance), and the DPoP key a bound token was proven with.
//! The first presenter of a token (by `jti`, never its bytes) is kept in the store, so every
//! replica compares against the same one; each replica remembers what it has seen so the usual
//! request costs no store access. A different presenter is a `security.token_sharing` record
//! with both presenters as evidence (once per token and presenter per replica), which the
//! containment rules act on. A gateway that asks about a task on its behalf presents its own
//! credential, with the task's token in the body: the task is the subject there, not the
//! bearer, and nothing here sees it.
//!
//! A live token presented to a party it was not issued for (a tool introspecting another
//! audience's credential; another tool's credential, or a task token handed to another party,
//! at the tool proxy) is a sharing event too ([`App::note_misdirected`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::time::UnixMillis;

use crate::app::App;

/// Tokens (and sharing reports) a replica remembers before starting over.
const MAX_REMEMBERED: usize = 100_000;

/// Where a bearer token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presenter {
    pub addr: Option<IpAddr>,
    /// The SPIFFE ID of the mutual-TLS client certificate, if any.
    pub svid: Option<String>,
    /// The thumbprint of the DPoP key the presentation was proven with, if any.
    pub jkt: Option<String>,
}

impl Presenter {
    /// A presenter from its connection: the client address (see [`Presenter::client_addr`]) and
    /// the DPoP key it proved, if any. The mTLS identity is not part of it: the proxy listener
    /// has none, and one agent using both must not look like two presenters.
    pub fn of(peer: Option<IpAddr>, headers: &axum::http::HeaderMap, trusted: &[IpAddr], jkt: Option<String>) -> Self {
        Presenter { addr: Self::client_addr(peer, headers, trusted), svid: None, jkt }
    }

    /// The client's address: the peer's, or — when the peer is a trusted proxy — the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy itself.
    pub fn client_addr(peer: Option<IpAddr>, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
        let peer = peer?;
        if !trusted.contains(&peer) {
            return Some(peer);
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(s) = v.to_str() else { return Some(peer) };
            for part in s.split(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(a) => hops.push(a),
                    // An unreadable chain says nothing trustworthy: the proxy is the client.
                    Err(_) => return Some(peer),
                }
            }
        }
        Some(hops.into_iter().rev().find(|a| !trusted.contains(a)).unwrap_or(peer))
    }

    /// The stored form: `addr=…;svid=…;jkt=…` (absent parts left out).
    pub fn key(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.addr {
            parts.push(format!("addr={a}"));
        }
        if let Some(s) = &self.svid {
            parts.push(format!("svid={s}"));
        }
        if let Some(j) = &self.jkt {
            parts.push(format!("jkt={j}"));
        }
        if parts.is_empty() { "unknown".into() } else { parts.join(";") }
    }

    /// The presenter as audit evidence (`{"addr": …, "jkt": …}`).
    pub fn as_evidence(&self) -> serde_json::Value {
        Self::evidence(&self.key())
    }

    fn evidence(key: &str) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        for part in key.split(';') {
            if let Some((k, v)) = part.split_once('=') {
                o.insert(k.to_owned(), v.into());
            }
        }
        o.into()
    }
}

/// What a replica remembers.
#[derive(Default)]
pub struct Bearers {
    first: Mutex<HashMap<String, String>>,
    reported: Mutex<HashSet<(String, String)>>,
}

/// The token whose bearer is being noted.
pub struct Presented<'a> {
    pub jti: &'a str,
    /// The task, for a task's token (`None`: an instance's token).
    pub task: Option<&'a remit_core::ids::TaskId>,
    pub workflow: Option<&'a remit_core::ids::WorkflowName>,
    pub agent: &'a remit_core::ids::AgentName,
    pub subject: &'a str,
    pub expires: UnixMillis,
    /// `api` or `proxy`.
    pub via: &'static str,
}

impl App {
    /// Notes who presented a token; records a sharing event when it is not its first presenter.
    /// Never fails the request: a store error here is logged.
    pub async fn note_bearer(&self, t: Presented<'_>, p: &Presenter) {
        let key = p.key();
        let known = self.governance.bearers.first.lock().ok().and_then(|m| m.get(t.jti).cloned());
        let first = match known {
            Some(f) => f,
            None => {
                let owner = t.task.map_or_else(|| t.subject.to_owned(), |x| x.to_string());
                let r = self.store.governance().bearer(t.jti, &owner, &key, self.clock.now(), t.expires).await;
                match r {
                    Ok(f) => {
                        if let Ok(mut m) = self.governance.bearers.first.lock() {
                            if m.len() >= MAX_REMEMBERED {
                                m.clear();
                            }
                            m.insert(t.jti.to_owned(), f.clone());
                        }
                        f
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "recording a token's first presenter failed");
                        return;
                    }
                }
            }
        };
        if first == key {
            return;
        }
        {
            let Ok(mut seen) = self.governance.bearers.reported.lock() else { return };
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            if !seen.insert((t.jti.to_owned(), key.clone())) {
                return;
            }
        }
        let audit = AuditEvent::new(self.clock.now(), t.subject, AuditAction::TokenSharing)
            .task_opt(t.task.map(|x| x.as_str()))
            .workflow_opt(t.workflow.map(|w| w.as_str()))
            .agent(t.agent)
            .reason("a token was presented by another presenter than its first")
            .detail([
                ("jti", t.jti.into()),
                ("first", Presenter::evidence(&first)),
                ("now", Presenter::evidence(&key)),
                ("via", t.via.into()),
            ]);
        tracing::warn!(subject = %t.subject, via = t.via, "a token was presented from a second place");
        if let Err(e) = self.store.audit().append(vec![audit]).await {
            tracing::error!(error = %e, "recording a sharing event failed");
            // Not recorded: the next presentation tries again.
            if let Ok(mut seen) = self.governance.bearers.reported.lock() {
                seen.remove(&(t.jti.to_owned(), key));
            }
        }
    }
}

impl App {
    /// Notes a live token presented to a party it was not issued for — a tool introspecting a
    /// credential of another audience, a credential for one tool (or a task token handed to
    /// another party) at the tool proxy: whoever holds it got it from the agent. A
    /// `security.token_sharing` record naming the task, who presented it (`by`) and to whom; the
    /// containment signal `misdirected` (whose default only alerts: the presenter may be a tool
    /// that received the token legitimately). Once per token and party per replica. Never fails
    /// the request.
    pub async fn note_misdirected(
        &self,
        c: &remit_token::Claims,
        presented_to: &str,
        by: serde_json::Value,
        via: &'static str,
    ) {
        let mark = (c.jti.clone(), format!("to={presented_to}"));
        {
            let Ok(mut seen) = self.governance.bearers.reported.lock() else { return };
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            if !seen.insert(mark.clone()) {
                return;
            }
        }
        let audit = AuditEvent::new(self.clock.now(), &c.sub, AuditAction::TokenSharing)
            .task_opt(c.remit.task.as_deref())
            .workflow_opt(c.remit.workflow.as_deref())
            .agent(&c.remit.agent)
            .reason("a token was presented to a party it was not issued for")
            .detail([
                ("jti", c.jti.clone().into()),
                ("audience", c.aud.clone().into()),
                ("presented_to", presented_to.into()),
                ("by", by),
                ("via", via.into()),
            ]);
        tracing::warn!(subject = %c.sub, via, "a token was presented to a party it was not issued for");
        if let Err(e) = self.store.audit().append(vec![audit]).await {
            tracing::error!(error = %e, "recording a sharing event failed");
            // Not recorded: the next presentation tries again.
            if let Ok(mut seen) = self.governance.bearers.reported.lock() {
                seen.remove(&mark);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwards() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        // An untrusted peer's forwarded header is ignored.
        assert_eq!(Presenter::client_addr(Some(other), &h, &[proxy]), Some(other));
        // Through two trusted proxies: the first untrusted hop from the right.
        assert_eq!(Presenter::client_addr(Some(proxy), &h, &[proxy, inner]), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(Presenter::client_addr(Some(proxy), &h, &[proxy]), Some(inner));
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(Presenter::client_addr(Some(proxy), &h, &[proxy]), Some(proxy));
        let p = Presenter { addr: Some(other), svid: None, jkt: Some("abc".into()) };
        assert_eq!(p.key(), "addr=198.51.100.7;jkt=abc");
        assert_eq!(Presenter::evidence(&p.key()), json!({"addr": "198.51.100.7", "jkt": "abc"}));
    }
}
