//! From an attested process to an instance identity.
//!
//! Each attested process (pid and start time) that matches a registration entry gets an
//! instance of the entry's agent, created on its first call and reused by its later calls,
//! renewed while the process runs, and ended (through the kill switch, audited) when the
//! process exits. An instance ended any other way (killed, its agent disabled) leaves a
//! tombstone: that process is refused from then on and does not get a fresh identity by
//! asking again. Every attestation that creates an instance and every refusal is audited
//! with its selectors; the caller learns only that it was refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::ids::{EntryId, InstanceId, SpiffeId};
use remit_core::model::{Instance, InstanceState, Kill, KillTarget};
use remit_core::rules::{self, Liveness};
use remit_core::time::UnixMillis;
use remit_store::StoreError;

use super::attest::{self, Attested, Digests, Peer, ProcessKey};
use crate::app::App;
use crate::error::Error;

/// What a refused caller is told, whatever the reason.
pub const REFUSED: &str = "this workload is not entitled to an identity";
/// Attested processes tracked at once (live sessions and tombstones).
const MAX_SESSIONS: usize = 65_536;
/// Actor of the Workload API's own audit records.
pub const ACTOR: &str = "workload-api";

/// One attested process's identity.
#[derive(Debug)]
pub struct Session {
    pub key: ProcessKey,
    pub entry: EntryId,
    pub instance: InstanceId,
    pub spiffe_id: SpiffeId,
    pub hint: Option<String>,
    /// The instance's current expiry (renewed while the process lives).
    pub expires_at: Mutex<UnixMillis>,
}

enum Slot {
    Live(Arc<Session>),
    /// The process's instance ended while it ran: refused until it exits.
    Dead,
}

/// The attested processes.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<ProcessKey, Slot>>,
    digests: Digests,
}

/// A refusal, already audited.
#[derive(Debug)]
pub struct Refused;

impl Sessions {
    /// The session of the calling process, attesting it (and creating its instance) first
    /// if this is its first call.
    pub async fn identify(self: &Arc<Self>, app: &App, peer: Peer) -> Result<Arc<Session>, Refused> {
        let me = self.clone();
        let attested = match tokio::task::spawn_blocking(move || attest::attest(&peer, &me.digests)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::info!(pid = peer.pid, uid = peer.uid, error = %e, "workload attestation failed");
                refuse(app, &peer, None, &format!("the process could not be attested: {e}")).await;
                return Err(Refused);
            }
            Err(_) => return Err(Refused),
        };
        let existing = self.slots.lock().ok().and_then(|s| match s.get(&attested.key) {
            Some(Slot::Live(s)) => Some(Some(s.clone())),
            Some(Slot::Dead) => Some(None),
            None => None,
        });
        match existing {
            Some(None) => {
                refuse(app, &peer, Some(&attested), "its instance has ended").await;
                Err(Refused)
            }
            Some(Some(s)) => match self.keep_alive(app, &s).await {
                Ok(()) => Ok(s),
                Err(why) => {
                    refuse(app, &peer, Some(&attested), why).await;
                    Err(Refused)
                }
            },
            None => self.start(app, &peer, attested).await,
        }
    }

    async fn start(&self, app: &App, peer: &Peer, attested: Attested) -> Result<Arc<Session>, Refused> {
        let entries = match app.store.workload().entries().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "reading registration entries failed");
                return Err(Refused);
            }
        };
        let Some(entry) = remit_core::workload::select(&entries, &attested.selectors) else {
            refuse(app, peer, Some(&attested), "no registration entry matches").await;
            return Err(Refused);
        };
        let now = app.clock.now();
        let inst = Instance {
            id: InstanceId::from_random(app.random_id()),
            agent: entry.agent.clone(),
            state: InstanceState::Active,
            created_at: now,
            expires_at: now.plus_secs(app.cfg.limits.instance_ttl.as_secs()),
            revoked_at: None,
            revoke_reason: None,
            workflow: entry.workflow.clone(),
        };
        let spiffe_id = SpiffeId::instance(&app.trust_domain, &inst.agent, &inst.id);
        let ev = AuditEvent::new(now, ACTOR, AuditAction::WorkloadAttest).agent(&inst.agent).detail([
            ("entry", entry.id.as_str().into()),
            ("instance", inst.id.as_str().into()),
            ("spiffe_id", spiffe_id.as_str().into()),
        ]);
        let mut audit = attested_detail(ev, peer, Some(&attested));
        if let Some(w) = &inst.workflow {
            audit = audit.workflow(w);
        }
        match app.store.workload().attest_instance(inst.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                refuse(app, peer, Some(&attested), "its agent is not enabled").await;
                return Err(Refused);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording an attested instance failed");
                return Err(Refused);
            }
        }
        let s = Arc::new(Session {
            key: attested.key,
            entry: entry.id.clone(),
            instance: inst.id,
            spiffe_id,
            hint: entry.hint.clone(),
            expires_at: Mutex::new(inst.expires_at),
        });
        if let Ok(mut slots) = self.slots.lock() {
            if slots.len() >= MAX_SESSIONS {
                slots.retain(|k, _| attest::alive(*k));
            }
            slots.insert(s.key, Slot::Live(s.clone()));
        }
        Ok(s)
    }

    /// Checks the session's instance is live, renewing it past half its lifetime; on failure
    /// the process is tombstoned.
    pub async fn keep_alive(&self, app: &App, s: &Session) -> Result<(), &'static str> {
        match live(app, s).await {
            Ok(Liveness::Active) => {}
            Ok(Liveness::Inactive(why)) => {
                self.bury(s.key);
                return Err(why);
            }
            Err(_) => return Err("the store is unavailable"),
        }
        let now = app.clock.now();
        let expires = s.expires_at.lock().map(|e| *e).unwrap_or(now);
        let ttl = app.cfg.limits.instance_ttl.as_secs();
        if expires.0 - now.0 < (ttl as i64 * 1000) / 2 {
            let new = now.plus_secs(ttl);
            let audit = AuditEvent::new(now, ACTOR, AuditAction::InstanceRenew)
                .detail([("instance", s.instance.as_str().into()), ("reason", "its process still runs".into())]);
            match app.store.identity().renew_instance(&s.instance, new, audit).await {
                Ok(()) => {
                    if let Ok(mut e) = s.expires_at.lock() {
                        *e = new;
                    }
                }
                Err(StoreError::Conflict(_)) => {
                    self.bury(s.key);
                    return Err("its instance has ended");
                }
                Err(_) => return Err("the store is unavailable"),
            }
        }
        Ok(())
    }

    fn bury(&self, key: ProcessKey) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(key, Slot::Dead);
        }
    }

    /// Ends the instances of processes that exited (through the kill switch, audited) and
    /// forgets their tombstones. Returns how many instances it ended.
    pub async fn sweep(&self, app: &App) -> usize {
        let gone: Vec<(ProcessKey, Option<Arc<Session>>)> = match self.slots.lock() {
            Ok(mut slots) => {
                let keys: Vec<ProcessKey> = slots.keys().copied().filter(|k| !attest::alive(*k)).collect();
                keys.into_iter()
                    .filter_map(|k| {
                        slots.remove(&k).map(|s| match s {
                            Slot::Live(s) => (k, Some(s)),
                            Slot::Dead => (k, None),
                        })
                    })
                    .collect()
            }
            Err(_) => vec![],
        };
        let mut ended = 0;
        for s in gone.into_iter().filter_map(|(_, s)| s) {
            let kill = Kill {
                target: KillTarget::Instance(s.instance.clone()),
                actor: ACTOR.into(),
                reason: "its process exited".into(),
                at: app.clock.now(),
            };
            match app.store.identity().kill(kill).await {
                Ok(_) => ended += 1,
                Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, instance = %s.instance, "ending an exited process's instance failed")
                }
            }
        }
        ended
    }
}

/// The session's instance liveness, from the store.
pub async fn live(app: &App, s: &Session) -> Result<Liveness, Error> {
    let Some(i) = app.store.identity().instance(&s.instance).await? else {
        return Ok(Liveness::Inactive("unknown instance"));
    };
    let Some(a) = app.store.identity().agent(&i.agent).await? else {
        return Ok(Liveness::Inactive("unknown agent"));
    };
    Ok(rules::instance_liveness(&i, &a, app.clock.now()))
}

/// Adds the attested facts (pid and selectors, or only uid/gid when attestation failed).
fn attested_detail(ev: AuditEvent, peer: &Peer, attested: Option<&Attested>) -> AuditEvent {
    let selectors: Vec<String> = match attested {
        Some(a) => a.selectors.iter().map(|s| s.to_string()).collect(),
        None => vec![format!("unix:uid:{}", peer.uid), format!("unix:gid:{}", peer.gid)],
    };
    ev.with_detail_field("pid", peer.pid.into()).with_detail_field("selectors", selectors.into())
}

/// Audits a refusal with what was attested.
async fn refuse(app: &App, peer: &Peer, attested: Option<&Attested>, why: &str) {
    let ev = AuditEvent::new(app.clock.now(), ACTOR, AuditAction::WorkloadAttest).outcome(Outcome::Denied).reason(why);
    let ev = attested_detail(ev, peer, attested);
    if let Err(e) = app.store.audit().append(vec![ev]).await {
        tracing::warn!(error = %e, "auditing a refused attestation failed");
    }
}
