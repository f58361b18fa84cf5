//! From an attested process to an instance identity.
//!
//! A connection is attested when it is accepted (before any of its bytes are read), and its
//! calls use that attestation. Each attested process (pid and start time) that matches a
//! registration entry gets an instance of the entry's agent, created on its first call (one
//! at a time, so concurrent first calls share it) and reused by its later calls while the
//! process's attested selectors stay the same; renewed while the process runs; and ended
//! (through the kill switch, audited) when the process exits, or when a new connection of the
//! same process attests differently (it `exec`ed another program or changed user). An
//! instance ended any other way (killed, its agent disabled) leaves a tombstone: that process
//! is refused from then on and does not get a fresh identity by asking again.
//!
//! Every instance created and every refusal is audited with the selectors; a refusal is
//! remembered for [`REFUSAL_MEMORY`] so a process that keeps asking costs neither store reads
//! nor audit records. The caller learns only that it was refused.
//!
//! The instances this server created are listed in a ledger file in the data directory (one
//! per replica, like the socket), so that after a restart — when no process's attestation is
//! known any more — they are ended instead of living on to their expiry.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::ids::{AgentName, EntryId, InstanceId, SpiffeId};
use remit_core::model::{Instance, InstanceState, Kill, KillTarget};
use remit_core::rules::{self, Liveness};
use remit_core::time::UnixMillis;
use remit_core::workload::Selector;
use remit_store::StoreError;

use super::PeerInfo;
use super::attest::{self, Attested, Digests, Peer, ProcessKey};
use crate::app::App;
use crate::error::Error;

/// What a refused caller is told, whatever the reason.
pub const REFUSED: &str = "this workload is not entitled to an identity";
/// Attested processes tracked at once (live sessions, tombstones and remembered refusals).
const MAX_SESSIONS: usize = 65_536;
/// How long a refusal is remembered (a registration entry made meanwhile counts after it).
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(5);
/// Actor of the Workload API's own audit records.
pub const ACTOR: &str = "workload-api";
/// The ledger of instances this server attested, in the data directory.
pub const LEDGER_FILE: &str = "workload-instances";

/// One attested process's identity.
#[derive(Debug)]
pub struct Session {
    pub key: ProcessKey,
    /// What the process was attested as when the instance was made.
    pub selectors: BTreeSet<Selector>,
    pub entry: EntryId,
    pub agent: AgentName,
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
    /// Refused (and audited) at this moment.
    Refused(Instant),
}

/// The attested processes.
pub struct Sessions {
    slots: Mutex<HashMap<ProcessKey, Slot>>,
    digests: Arc<Digests>,
    /// One first attestation at a time: concurrent first calls of a process share one instance.
    starting: tokio::sync::Mutex<()>,
    ledger: Option<PathBuf>,
}

/// A refusal, already audited.
#[derive(Debug)]
pub struct Refused;

enum Known {
    Live(Arc<Session>),
    /// Its instance was made for other selectors: end it and attest afresh.
    Changed(Arc<Session>),
    Dead,
    Refused,
    New,
}

impl Sessions {
    pub fn new(ledger: Option<PathBuf>) -> Self {
        Sessions {
            slots: Mutex::new(HashMap::new()),
            digests: Arc::new(Digests::default()),
            starting: tokio::sync::Mutex::new(()),
            ledger,
        }
    }

    /// The executable-hash cache the connections' attestations share.
    pub fn digests(&self) -> Arc<Digests> {
        self.digests.clone()
    }

    fn known(&self, a: &Attested) -> Known {
        let Ok(slots) = self.slots.lock() else { return Known::Refused };
        match slots.get(&a.key) {
            Some(Slot::Live(s)) if s.selectors == a.selectors => Known::Live(s.clone()),
            Some(Slot::Live(s)) => Known::Changed(s.clone()),
            Some(Slot::Dead) => Known::Dead,
            Some(Slot::Refused(at)) if at.elapsed() < REFUSAL_MEMORY => Known::Refused,
            _ => Known::New,
        }
    }

    /// The session of the calling connection's process, creating its instance on its first
    /// call.
    pub async fn identify(self: &Arc<Self>, app: &App, info: &PeerInfo) -> Result<Arc<Session>, Refused> {
        let peer = info.peer.ok_or(Refused)?;
        let mut rx = info.attested.clone();
        let attestation = rx.wait_for(|a| a.is_some()).await.map(|a| a.clone()).ok().flatten().ok_or(Refused)?;
        let attested = match &*attestation {
            Ok(a) => a.clone(),
            Err(e) => {
                tracing::info!(pid = peer.pid, uid = peer.uid, error = %e, "workload attestation failed");
                refuse(app, &peer, None, &format!("the process could not be attested: {e}")).await;
                return Err(Refused);
            }
        };
        match self.known(&attested) {
            Known::Live(s) => match self.keep_alive(app, &s).await {
                Ok(()) => Ok(s),
                Err(why) => {
                    refuse(app, &peer, Some(&attested), why).await;
                    Err(Refused)
                }
            },
            Known::Dead | Known::Refused => Err(Refused),
            Known::Changed(old) => {
                self.end(app, &old, "its process now runs another program or as another user").await;
                self.start(app, &peer, attested).await
            }
            Known::New => self.start(app, &peer, attested).await,
        }
    }

    fn remember_refusal(&self, key: ProcessKey) {
        if let Ok(mut slots) = self.slots.lock()
            && slots.len() < MAX_SESSIONS
        {
            slots.insert(key, Slot::Refused(Instant::now()));
        }
    }

    async fn start(&self, app: &App, peer: &Peer, attested: Attested) -> Result<Arc<Session>, Refused> {
        let _one_at_a_time = self.starting.lock().await;
        match self.known(&attested) {
            Known::Live(s) => return Ok(s),
            Known::Dead | Known::Refused => return Err(Refused),
            Known::Changed(_) | Known::New => {}
        }
        if self.slots.lock().map(|s| s.len() >= MAX_SESSIONS).unwrap_or(true) {
            tracing::warn!("the Workload API tracks the most processes it may; refusing a new one");
            return Err(Refused);
        }
        let entries = match app.store.workload().entries().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "reading registration entries failed");
                return Err(Refused);
            }
        };
        let Some(entry) = remit_core::workload::select(&entries, &attested.selectors) else {
            refuse(app, peer, Some(&attested), "no registration entry matches").await;
            self.remember_refusal(attested.key);
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
            renew_until: None,
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
        self.note(&inst.id);
        match app.store.workload().attest_instance(inst.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                refuse(app, peer, Some(&attested), "its agent is not enabled").await;
                self.remember_refusal(attested.key);
                return Err(Refused);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording an attested instance failed");
                return Err(Refused);
            }
        }
        let s = Arc::new(Session {
            key: attested.key,
            selectors: attested.selectors,
            entry: entry.id.clone(),
            agent: entry.agent.clone(),
            instance: inst.id,
            spiffe_id,
            hint: entry.hint.clone(),
            expires_at: Mutex::new(inst.expires_at),
        });
        if let Ok(mut slots) = self.slots.lock() {
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

    /// Ends a session's instance through the kill switch (audited with `reason`).
    async fn end(&self, app: &App, s: &Session, reason: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&s.key);
        }
        kill_instance(app, &s.instance, reason).await;
    }

    /// Ends the instances of processes that exited and forgets their tombstones and old
    /// refusals; rewrites the ledger when something ended. Returns how many instances ended.
    pub async fn sweep(&self, app: &App) -> usize {
        let keys: Vec<ProcessKey> = self.slots.lock().map(|s| s.keys().copied().collect()).unwrap_or_default();
        let gone: Vec<ProcessKey> =
            tokio::task::spawn_blocking(move || keys.into_iter().filter(|k| !attest::alive(*k)).collect())
                .await
                .unwrap_or_default();
        let ended: Vec<Arc<Session>> = match self.slots.lock() {
            Ok(mut slots) => {
                slots.retain(|_, s| !matches!(s, Slot::Refused(at) if at.elapsed() >= REFUSAL_MEMORY));
                gone.iter()
                    .filter_map(|k| match slots.remove(k) {
                        Some(Slot::Live(s)) => Some(s),
                        _ => None,
                    })
                    .collect()
            }
            Err(_) => vec![],
        };
        for s in &ended {
            kill_instance(app, &s.instance, "its process exited").await;
        }
        if !ended.is_empty() {
            self.rewrite_ledger();
        }
        ended.len()
    }

    /// Appends an instance to the ledger before it is recorded (so a crash never forgets one).
    fn note(&self, id: &InstanceId) {
        use std::io::Write;
        let Some(path) = &self.ledger else { return };
        let r = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| writeln!(f, "{id}"));
        if let Err(e) = r {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the Workload API's instance ledger");
        }
    }

    fn rewrite_ledger(&self) {
        let Some(path) = &self.ledger else { return };
        let live: Vec<String> = self
            .slots
            .lock()
            .map(|s| {
                s.values()
                    .filter_map(|v| match v {
                        Slot::Live(s) => Some(format!("{}\n", s.instance)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, live.concat()).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(error = %e, path = %path.display(), "cannot rewrite the Workload API's instance ledger");
        }
    }

    /// At start: ends every instance a previous run of this server attested (their processes
    /// must attest again), then empties the ledger. Returns how many it ended.
    pub async fn recover(&self, app: &App) -> usize {
        let Some(path) = &self.ledger else { return 0 };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut ended = 0;
        for id in text.lines().filter_map(|l| InstanceId::parse(l.trim()).ok()) {
            if kill_instance(app, &id, "Remit restarted; its process must attest again").await {
                ended += 1;
            }
        }
        if let Err(e) = std::fs::write(path, "")
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, path = %path.display(), "cannot empty the Workload API's instance ledger");
        }
        ended
    }
}

/// Kills an instance (audited); whether it was live until now.
async fn kill_instance(app: &App, id: &InstanceId, reason: &str) -> bool {
    let kill = Kill {
        target: KillTarget::Instance(id.clone()),
        actor: ACTOR.into(),
        reason: reason.into(),
        at: app.clock.now(),
    };
    match app.store.identity().kill(kill).await {
        Ok(_) => true,
        Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => false,
        Err(e) => {
            tracing::warn!(error = %e, instance = %id, "ending a workload's instance failed");
            false
        }
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
