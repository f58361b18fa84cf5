//! A read-through cache of the liveness reads on the hot path, kept true by [`Change`]s.
//!
//! Introspection, decisions and instance authentication read the same few rows again and
//! again: a task's snapshot (task + workflow + agent + instance), an instance, an agent, and
//! attribute-store entities. [`CachingStore`] wraps any backend and serves those from memory
//! (the identity area's reads in `identity::cache`, the entities in `policy::cache`; every
//! other area is the backend's own). It stays correct by:
//!
//! - **a commit hook on the backend**: the changes a write states next to its SQL are applied
//!   here before that write returns, so this process never answers from a cache older than a
//!   change it made (and no cache wrapper repeats which writes invalidate what);
//! - **applying every change the feed announces** (on PostgreSQL, other replicas' changes via
//!   `LISTEN/NOTIFY`) on a background task, and re-announcing it to this store's own
//!   subscribers only after applying it;
//! - **a generation check on fill**: a read that started before an invalidation is not
//!   cached when it finishes, so a stale row can never be re-inserted after its change;
//! - **bypassing itself while the feed is down** ([`Change::FeedLost`] until
//!   [`Change::Resync`]), and capping every entry's age, so a missed notification cannot keep
//!   a revoked token alive;
//! - **bounding memory**: entries per map, and the entity map by bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use remit_core::ids::{AgentName, InstanceId, TaskId};
use remit_core::model::{Agent, Instance};
use remit_core::time::{Clock, SystemClock, UnixMillis};
use tokio::sync::broadcast;

use crate::identity::TaskSnapshot;
use crate::{Change, Store};

/// Entries per map before it is cleared (a crude but allocation-free bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub(crate) struct Maps {
    pub(crate) tasks: HashMap<TaskId, (Arc<TaskSnapshot>, UnixMillis)>,
    pub(crate) instances: HashMap<InstanceId, (Instance, UnixMillis)>,
    pub(crate) agents: HashMap<AgentName, (Agent, UnixMillis)>,
    /// Attribute-store entities by (type, id-or-alias), including "not stored" answers: a
    /// PEP's resources are often not in the store, and asking again each time costs a read.
    pub(crate) entities: HashMap<(String, String), (Option<crate::policy::StoredEntity>, UnixMillis)>,
    /// Approximate bytes held by `entities` (keys and stored text): capped by
    /// `State::entity_budget`, since ids and attributes are caller-sized.
    pub(crate) entity_bytes: usize,
}

/// Approximate memory of one entity-cache entry.
fn entity_cost(key: &(String, String), e: &Option<crate::policy::StoredEntity>) -> usize {
    let stored = e.as_ref().map_or(0, |e| {
        e.etype.len() + e.id.len() + e.attrs.len() + e.parents.len() + e.aliases.iter().map(String::len).sum::<usize>()
    });
    key.0.len() + key.1.len() + stored + 128
}

pub(crate) struct State {
    maps: Mutex<Maps>,
    /// Bumped by every invalidation; a fill only lands if it did not move during the read.
    pub(crate) generation: AtomicU64,
    /// False while the change feed is down.
    enabled: AtomicBool,
    max_age: Duration,
    /// Entry ages are measured on this (injected, so tests can move time).
    clock: Arc<dyn Clock>,
    /// Most bytes the entity map may hold before it is cleared.
    entity_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl State {
    pub(crate) fn apply(&self, c: &Change) {
        if matches!(c, Change::Outbox) {
            return;
        }
        let Ok(mut m) = self.maps.lock() else { return };
        self.generation.fetch_add(1, Ordering::SeqCst);
        match c {
            Change::Task(id) => {
                m.tasks.remove(id);
            }
            Change::Instance(id) => {
                m.instances.remove(id);
                m.tasks.clear();
            }
            Change::Agent(name) => {
                // A kill of the agent revoked its instances too: none of them may be served
                // from here again (re-enabling the agent does not bring them back).
                m.agents.remove(name);
                m.instances.retain(|_, (i, _)| i.agent != *name);
                m.tasks.clear();
            }
            Change::Workflow(_) => m.tasks.clear(),
            Change::Entities => {
                m.entities.clear();
                m.entity_bytes = 0;
            }
            Change::Keys
            | Change::Policy
            | Change::Approval(_)
            | Change::Human(_)
            | Change::Session(_)
            | Change::Outbox => {}
            Change::FeedLost => {
                self.enabled.store(false, Ordering::SeqCst);
                *m = Maps::default();
            }
            Change::Resync => {
                *m = Maps::default();
                self.enabled.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Forgets everything without changing whether the cache is enabled.
    pub(crate) fn clear(&self) {
        let Ok(mut m) = self.maps.lock() else { return };
        self.generation.fetch_add(1, Ordering::SeqCst);
        *m = Maps::default();
    }

    pub(crate) fn get<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        pick: impl FnOnce(&Maps) -> &HashMap<K, (V, UnixMillis)>,
        k: &K,
    ) -> Option<V> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let m = self.maps.lock().ok()?;
        let now = self.clock.now();
        let max_ms = i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
        let hit = pick(&m).get(k).filter(|(_, at)| now.0.saturating_sub(at.0) < max_ms).map(|(v, _)| v.clone());
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    pub(crate) fn fill<K: std::hash::Hash + Eq, V>(
        &self,
        generation: u64,
        pick: impl FnOnce(&mut Maps) -> &mut HashMap<K, (V, UnixMillis)>,
        k: K,
        v: V,
    ) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut m) = self.maps.lock() else { return };
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let map = pick(&mut m);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(k, (v, self.clock.now()));
    }
}

impl State {
    /// [`State::fill`] for the entity map, within its byte budget.
    pub(crate) fn fill_entity(&self, generation: u64, k: (String, String), v: Option<crate::policy::StoredEntity>) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let cost = entity_cost(&k, &v);
        if cost > self.entity_budget {
            return;
        }
        let Ok(mut m) = self.maps.lock() else { return };
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if m.entity_bytes + cost > self.entity_budget || m.entities.len() >= MAX_ENTRIES {
            m.entities.clear();
            m.entity_bytes = 0;
        }
        if let Some((old, _)) = m.entities.insert(k.clone(), (v, self.clock.now())) {
            m.entity_bytes = m.entity_bytes.saturating_sub(entity_cost(&k, &old));
        }
        m.entity_bytes += cost;
    }
}

/// Default byte budget of the entity cache.
pub const DEFAULT_ENTITY_BUDGET: usize = 32 * 1024 * 1024;

/// Cache hit and miss counts, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Wraps a backend with the liveness cache described in the module docs.
pub struct CachingStore {
    inner: Arc<dyn Store>,
    state: Arc<State>,
    identity: crate::identity::cache::CachingIdentity,
    policy: crate::policy::cache::CachingPolicy,
    feed: tokio::task::JoinHandle<()>,
    /// Changes re-announced once this cache has applied them: a subscriber that reads
    /// through the cache on a change never reads what the change invalidated.
    out: broadcast::Sender<Change>,
}

impl Drop for CachingStore {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

impl CachingStore {
    /// Wraps `inner`; must be called inside a tokio runtime (it starts the feed task).
    pub fn new(inner: Arc<dyn Store>, max_age: Duration) -> CachingStore {
        Self::with_entity_budget(inner, max_age, DEFAULT_ENTITY_BUDGET)
    }

    /// [`CachingStore::new`] with the entity cache capped at `entity_budget` bytes.
    pub fn with_entity_budget(inner: Arc<dyn Store>, max_age: Duration, entity_budget: usize) -> CachingStore {
        Self::with_clock(inner, max_age, entity_budget, Arc::new(SystemClock))
    }

    /// The cache with entry ages measured on `clock`.
    pub fn with_clock(
        inner: Arc<dyn Store>,
        max_age: Duration,
        entity_budget: usize,
        clock: Arc<dyn Clock>,
    ) -> CachingStore {
        let state = Arc::new(State {
            maps: Mutex::new(Maps::default()),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
            max_age,
            clock,
            entity_budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let (out, _) = broadcast::channel(crate::CHANGE_FEED_CAPACITY);
        let weak = Arc::downgrade(&state);
        inner.on_commit(Arc::new(move |changes: &[Change]| {
            if let Some(s) = weak.upgrade() {
                for c in changes {
                    s.apply(c);
                }
            }
        }));
        let feed = tokio::spawn(follow(inner.subscribe(), Arc::downgrade(&state), out.clone()));
        CachingStore {
            identity: crate::identity::cache::CachingIdentity { inner: inner.clone(), state: state.clone() },
            policy: crate::policy::cache::CachingPolicy { inner: inner.clone(), state: state.clone() },
            inner,
            state,
            feed,
            out,
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { hits: self.state.hits.load(Ordering::Relaxed), misses: self.state.misses.load(Ordering::Relaxed) }
    }

    /// Approximate bytes the entity cache holds now.
    pub fn entity_bytes(&self) -> usize {
        self.state.maps.lock().map(|m| m.entity_bytes).unwrap_or(0)
    }
}

async fn follow(mut rx: broadcast::Receiver<Change>, state: Weak<State>, out: broadcast::Sender<Change>) {
    loop {
        let c = match rx.recv().await {
            Ok(c) => c,
            // Fell behind: what was missed is unknown, so forget everything.
            Err(broadcast::error::RecvError::Lagged(_)) => Change::Resync,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(s) = state.upgrade() else { return };
        s.apply(&c);
        // Only now do our subscribers hear of it.
        let _ = out.send(c);
    }
}

impl Store for CachingStore {
    fn keys(&self) -> &dyn crate::keys::KeyStore {
        self.inner.keys()
    }
    fn identity(&self) -> &dyn crate::identity::IdentityStore {
        &self.identity
    }
    fn audit(&self) -> &dyn crate::audit::AuditStore {
        self.inner.audit()
    }
    fn policy(&self) -> &dyn crate::policy::PolicyStore {
        &self.policy
    }
    fn approvals(&self) -> &dyn crate::approvals::ApprovalStore {
        self.inner.approvals()
    }
    fn humans(&self) -> &dyn crate::humans::HumanStore {
        self.inner.humans()
    }
    fn tools(&self) -> &dyn crate::tools::ToolStore {
        self.inner.tools()
    }
    fn workload(&self) -> &dyn crate::workload::WorkloadStore {
        self.inner.workload()
    }
    fn secrets(&self) -> &dyn crate::secrets::SecretStore {
        self.inner.secrets()
    }
    fn leases(&self) -> &dyn crate::leases::LeaseStore {
        self.inner.leases()
    }
    fn governance(&self) -> &dyn crate::governance::GovernanceStore {
        self.inner.governance()
    }
    fn grants(&self) -> &dyn crate::grants::GrantStore {
        self.inner.grants()
    }
    fn scim(&self) -> &dyn crate::scim::ScimStore {
        self.inner.scim()
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.out.subscribe()
    }
    fn on_commit(&self, hook: crate::CommitHook) {
        self.inner.on_commit(hook);
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
