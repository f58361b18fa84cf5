//! A read-through cache of the liveness reads on the hot path, kept true by [`Change`]s.
//!
//! Introspection, decisions and instance authentication read the same few rows again and
//! again: a task's snapshot (task + workflow + agent + instance), an instance, an agent.
//! [`CachingStore`] wraps any backend and serves those from memory. It stays correct by:
//!
//! - **Invalidating synchronously on its own writes** before the write returns, so this
//!   process never answers from a cache older than a change it made;
//! - **applying every change the backend publishes** (on PostgreSQL, other replicas' changes
//!   via `LISTEN/NOTIFY`) on a background task;
//! - **a generation check on fill**: a read that started before an invalidation is not
//!   cached when it finishes, so a stale row can never be re-inserted after its change;
//! - **bypassing itself while the feed is down** ([`Change::FeedLost`] until
//!   [`Change::Resync`]), and capping every entry's age, so a missed notification cannot keep
//!   a revoked token alive.
//!
//! Only rows that exist are cached (entities also cache "not stored"; any entity push drops
//! them all); creating a task needs no invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use tokio::sync::broadcast;

use crate::{AuditFilter, Change, Installation, Result, StartContext, Store, StoredKey, TaskFilter, TaskSnapshot};

/// Entries per map before it is cleared (a crude but allocation-free bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Maps {
    tasks: HashMap<TaskId, (Arc<TaskSnapshot>, Instant)>,
    instances: HashMap<InstanceId, (Instance, Instant)>,
    agents: HashMap<AgentName, (Agent, Instant)>,
    /// Attribute-store entities by (type, id-or-alias), including "not stored" answers: a
    /// PEP's resources are often not in the store, and asking again each time costs a read.
    entities: HashMap<(String, String), (Option<crate::StoredEntity>, Instant)>,
    /// Approximate bytes held by `entities` (keys and stored text): capped by
    /// `State::entity_budget`, since ids and attributes are caller-sized.
    entity_bytes: usize,
}

/// Approximate memory of one entity-cache entry.
fn entity_cost(key: &(String, String), e: &Option<crate::StoredEntity>) -> usize {
    let stored = e.as_ref().map_or(0, |e| {
        e.etype.len() + e.id.len() + e.attrs.len() + e.parents.len() + e.aliases.iter().map(String::len).sum::<usize>()
    });
    key.0.len() + key.1.len() + stored + 128
}

struct State {
    maps: Mutex<Maps>,
    /// Bumped by every invalidation; a fill only lands if it did not move during the read.
    generation: AtomicU64,
    /// False while the change feed is down.
    enabled: AtomicBool,
    max_age: Duration,
    /// Most bytes the entity map may hold before it is cleared.
    entity_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl State {
    fn apply(&self, c: &Change) {
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
            Change::Keys | Change::Policy => {}
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
    fn clear(&self) {
        let Ok(mut m) = self.maps.lock() else { return };
        self.generation.fetch_add(1, Ordering::SeqCst);
        *m = Maps::default();
    }

    fn get<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        pick: impl FnOnce(&Maps) -> &HashMap<K, (V, Instant)>,
        k: &K,
    ) -> Option<V> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let m = self.maps.lock().ok()?;
        let hit = pick(&m).get(k).filter(|(_, at)| at.elapsed() < self.max_age).map(|(v, _)| v.clone());
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    fn fill<K: std::hash::Hash + Eq, V>(
        &self,
        generation: u64,
        pick: impl FnOnce(&mut Maps) -> &mut HashMap<K, (V, Instant)>,
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
        map.insert(k, (v, Instant::now()));
    }
}

impl State {
    /// [`State::fill`] for the entity map, within its byte budget.
    fn fill_entity(&self, generation: u64, k: (String, String), v: Option<crate::StoredEntity>) {
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
        if let Some((old, _)) = m.entities.insert(k.clone(), (v, Instant::now())) {
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
        let state = Arc::new(State {
            maps: Mutex::new(Maps::default()),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
            max_age,
            entity_budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let (out, _) = broadcast::channel(crate::CHANGE_FEED_CAPACITY);
        let feed = tokio::spawn(follow(inner.subscribe(), Arc::downgrade(&state), out.clone()));
        CachingStore { inner, state, feed, out }
    }

    /// Approximate bytes the entity cache holds now.
    pub fn entity_bytes(&self) -> usize {
        self.state.maps.lock().map(|m| m.entity_bytes).unwrap_or(0)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { hits: self.state.hits.load(Ordering::Relaxed), misses: self.state.misses.load(Ordering::Relaxed) }
    }

    fn invalidate(&self, changes: &[Change]) {
        for c in changes {
            self.state.apply(c);
        }
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

#[async_trait]
impl Store for CachingStore {
    async fn installation(&self) -> Result<Option<Installation>> {
        self.inner.installation().await
    }
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
        self.inner.install(inst, keys, audit).await
    }
    async fn keys(&self) -> Result<Vec<StoredKey>> {
        self.inner.keys().await
    }
    async fn rotate_key(&self, new: StoredKey, old: crate::RetiringKey, audit: AuditEvent) -> Result<u64> {
        self.inner.rotate_key(new, old, audit).await
    }
    async fn reseal(&self, seal: crate::Reseal, audit: AuditEvent) -> Result<()> {
        self.inner.reseal(seal, audit).await
    }
    async fn bundle_sequence(&self) -> Result<u64> {
        self.inner.bundle_sequence().await
    }
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.inner.create_workflow(wf, audit).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        self.inner.workflow(name).await
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        self.inner.list_workflows().await
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        let r = self.inner.set_workflow_state(name, from, to, audit).await;
        self.invalidate(&[Change::Workflow(name.clone())]);
        r
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.inner.create_agent(agent, audit).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        if let Some(a) = self.state.get(|m| &m.agents, name) {
            return Ok(Some(a));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let a = self.inner.agent(name).await?;
        if let Some(a) = &a {
            self.state.fill(generation, |m| &mut m.agents, name.clone(), a.clone());
        }
        Ok(a)
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.inner.list_agents().await
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        let r = self.inner.set_agent_state(name, from, to, audit).await;
        self.invalidate(&[Change::Agent(name.clone())]);
        r
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.inner.create_join_token(jt, audit).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        self.inner.join_token(id).await
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        self.inner.redeem_join_token(id, instance, audit).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        if let Some(i) = self.state.get(|m| &m.instances, id) {
            return Ok(Some(i));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let i = self.inner.instance(id).await?;
        if let Some(i) = &i {
            self.state.fill(generation, |m| &mut m.instances, id.clone(), i.clone());
        }
        Ok(i)
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let r = self.inner.renew_instance(id, expires_at, audit).await;
        self.invalidate(&[Change::Instance(id.clone())]);
        r
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        self.inner.start_context(workflow, agent, instance).await
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        self.inner.create_task(task, audit).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        self.inner.task(id).await
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        if let Some(s) = self.state.get(|m| &m.tasks, id) {
            return Ok(Some((*s).clone()));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let s = self.inner.task_snapshot(id).await?;
        if let Some(s) = &s {
            self.state.fill(generation, |m| &mut m.tasks, id.clone(), Arc::new(s.clone()));
        }
        Ok(s)
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        self.inner.list_tasks(filter).await
    }
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport> {
        let r = self.inner.end_task(id, to, at, actor, reason).await;
        // Whatever the outcome (even an ambiguous failure), forget what we knew.
        match &r {
            Ok(report) => self.invalidate(&Change::of_kill(&KillTarget::Task(id.clone()), report)),
            Err(_) => self.state.clear(),
        }
        r
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        let target = kill.target.clone();
        let r = self.inner.kill(kill).await;
        match &r {
            Ok(report) => self.invalidate(&Change::of_kill(&target, report)),
            Err(_) => self.state.clear(),
        }
        r
    }
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.inner.append_audit(events).await
    }
    async fn audit_head(&self) -> Result<(u64, String)> {
        self.inner.audit_head().await
    }
    async fn list_audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        self.inner.list_audit(filter).await
    }
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.inner.put_checkpoint(cp).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.inner.checkpoints().await
    }
    async fn put_policy_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        self.inner.put_policy_set(bundle, at, by, audit).await
    }
    async fn active_policy_set(&self) -> Result<Option<crate::StoredPolicySet>> {
        self.inner.active_policy_set().await
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<crate::StoredEntity>> {
        self.inner.list_entities(etype, after, limit).await
    }
    async fn put_entities(&self, entities: Vec<crate::StoredEntity>, audit: AuditEvent) -> Result<()> {
        let r = self.inner.put_entities(entities, audit).await;
        self.invalidate(&[Change::Entities]);
        r
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<crate::StoredEntity>> {
        let key = (etype.to_owned(), id_or_alias.to_owned());
        if let Some(e) = self.state.get(|m| &m.entities, &key) {
            return Ok(e);
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let e = self.inner.entity(etype, id_or_alias).await?;
        self.state.fill_entity(generation, key, e.clone());
        Ok(e)
    }
    async fn create_approval(&self, a: crate::Approval, audit: AuditEvent) -> Result<()> {
        self.inner.create_approval(a, audit).await
    }
    async fn approval(&self, id: &str) -> Result<Option<crate::Approval>> {
        self.inner.approval(id).await
    }
    async fn list_approvals(&self, state: Option<String>, limit: u32) -> Result<Vec<crate::Approval>> {
        self.inner.list_approvals(state, limit).await
    }
    async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: &str,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()> {
        self.inner.decide_approval(id, approve, by, reason, at, audit).await
    }
    async fn consume_approval(
        &self,
        id: &str,
        digest: &str,
        policy_version: u64,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<()> {
        self.inner.consume_approval(id, digest, policy_version, at, audit).await
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.inner.record_tool_use(task, tool, at, audit).await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        self.inner.tools_used(task).await
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.out.subscribe()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
