//! The conformance suite: behaviour every [`Store`] backend must show.
//!
//! Written against the trait only. A backend's test file instantiates every case with
//! [`conformance_tests!`](crate::conformance_tests), passing an async constructor that returns
//! the store and a guard that keeps its resources (a temp dir, a throw-away database) alive.
//!
//! This module is test code compiled into the library so other crates can run it; it
//! asserts with `unwrap`/`assert!` on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent, ChainVerifier, Checkpoint, GENESIS_HASH};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, InstanceState, JoinToken, Kill, KillTarget, Sensitivity, Task, TaskState, Workflow,
    WorkflowState,
};
use remit_core::time::{Clock, SystemClock, UnixMillis};

use crate::{AuditFilter, Installation, KeyPurpose, Store, StoreError, StoredKey, TaskFilter};

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async expression
/// yielding `(store, guard)`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            install_once, workflows, agents_need_workflows, join_token_redeems_once,
            tasks_round_trip, task_refused_after_kill, kill_workflow_cascades, kill_agent_cascades,
            kill_instance_cascades, kill_task_revokes_subtree, end_task_is_compare_and_set,
            failed_writes_leave_no_trace, concurrent_writes_keep_one_chain, key_rotation, checkpoints_and_filters,
            renew_instance_only_while_active, changes_are_published, concurrent_starts_on_live_and_killed_workflows, policy_versions_and_entities, approvals_are_single_use,
            tool_uses_per_task);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (store, _guard) = $make.await;
            let store: std::sync::Arc<dyn $crate::Store> = std::sync::Arc::new(store);
            $crate::conformance::$case(store).await;
        }
    )*};
}

pub(crate) fn now() -> UnixMillis {
    SystemClock.now()
}

pub fn ev(action: AuditAction) -> AuditEvent {
    AuditEvent::new(now(), "admin", action)
}

pub(crate) fn wf_name(s: &str) -> WorkflowName {
    WorkflowName::parse(s).unwrap()
}

pub(crate) fn agent_name(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

pub(crate) fn workflow(name: &str) -> Workflow {
    Workflow {
        name: wf_name(name),
        purpose: "ship releases".into(),
        owner: "alice@example.com".into(),
        ceiling: Sensitivity::Confidential,
        allowed_tools: vec!["git".into(), "kubectl".into()],
        max_task_ttl_secs: 900,
        max_delegation_depth: 3,
        state: WorkflowState::Active,
        created_at: now(),
        updated_at: now(),
    }
}

pub(crate) fn agent(name: &str, wfs: &[&str]) -> Agent {
    Agent {
        name: agent_name(name),
        owner: "bob@example.com".into(),
        workflows: wfs.iter().map(|w| wf_name(w)).collect(),
        state: AgentState::Enabled,
        kill_generation: 0,
        created_at: now(),
        updated_at: now(),
    }
}

fn rnd() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&(now().0 as u64).to_be_bytes());
    b
}

pub(crate) fn instance(agent: &str) -> Instance {
    Instance {
        id: InstanceId::from_random(rnd()),
        agent: agent_name(agent),
        state: InstanceState::Active,
        created_at: now(),
        expires_at: now().plus_secs(3600),
        revoked_at: None,
        revoke_reason: None,
    }
}

pub fn task(wf: &str, agent: &str, inst: Option<&InstanceId>, parent: Option<&TaskId>) -> Task {
    Task {
        id: TaskId::from_random(rnd()),
        workflow: wf_name(wf),
        agent: agent_name(agent),
        instance: inst.cloned(),
        parent: parent.cloned(),
        intent: "deploy v1.2".into(),
        intent_hash: remit_core::rules::intent_hash("deploy v1.2"),
        sensitivity: Sensitivity::Internal,
        audience: vec!["tools".into()],
        state: TaskState::Active,
        started_by: "admin".into(),
        created_at: now(),
        expires_at: now().plus_secs(600),
        ended_at: None,
        end_reason: None,
    }
}

fn key(purpose: KeyPurpose, kid: &str) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        purpose,
        sealed: vec![1, 2, 3],
        public: vec![4; 65],
        created_at: now(),
        retire_after: None,
        mac: Some(format!("mac-of-{kid}")),
    }
}

async fn install(s: &dyn Store) {
    let inst = Installation {
        trust_domain: "remit.local".into(),
        issuer: Some("https://remit.example".into()),
        admin_hash: "ab".repeat(32),
        installed_at: now(),
        mac: Some("install-mac".into()),
    };
    s.install(inst, vec![key(KeyPurpose::Jwt, "jwt-1"), key(KeyPurpose::Audit, "audit-1")], ev(AuditAction::Init))
        .await
        .unwrap();
}

/// Installs, creates workflow `deploy`, agent `bot` and one active instance of it.
pub async fn fixture(s: &dyn Store) -> Instance {
    install(s).await;
    s.create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate).workflow("deploy")).await.unwrap();
    s.create_agent(agent("bot", &["deploy"]), ev(AuditAction::AgentCreate).agent("bot")).await.unwrap();
    let i = instance("bot");
    let jt = join_token("bot", 600);
    s.create_join_token(jt.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    s.redeem_join_token(&jt.id, i.clone(), ev(AuditAction::InstanceJoin)).await.unwrap();
    i
}

pub(crate) fn join_token(agent: &str, ttl: u64) -> JoinToken {
    JoinToken {
        id: JoinTokenId::from_random(rnd()),
        agent: agent_name(agent),
        secret_hash: "cd".repeat(32),
        created_at: now(),
        expires_at: now().plus_secs(ttl),
        used_at: None,
        used_by: None,
        agent_generation: 0,
        revoked_at: None,
    }
}

/// Reads the whole log back and checks the chain.
pub async fn verify_chain(s: &dyn Store) -> u64 {
    let cps = s.checkpoints().await.unwrap();
    let mut v = ChainVerifier::new(&cps, |_| true).unwrap();
    let mut after = 0;
    loop {
        let page = s.list_audit(AuditFilter { after_seq: after, limit: 1000, ..Default::default() }).await.unwrap();
        if page.is_empty() {
            break;
        }
        for r in &page {
            v.push(r).unwrap();
        }
        after = page.last().unwrap().seq;
    }
    let rep = v.finish().unwrap();
    let (seq, hash) = s.audit_head().await.unwrap();
    assert_eq!(rep.records, seq);
    assert_eq!(rep.head_hash, hash);
    seq
}

pub async fn install_once(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(s.installation().await.unwrap(), None);
    assert_eq!(s.audit_head().await.unwrap(), (0, hex(&GENESIS_HASH)));
    install(s).await;
    let got = s.installation().await.unwrap().unwrap();
    assert_eq!(got.trust_domain, "remit.local");
    assert_eq!(got.issuer.as_deref(), Some("https://remit.example"));
    assert_eq!(got.mac.as_deref(), Some("install-mac"));
    assert!(s.keys().await.unwrap().iter().all(|k| k.mac == Some(format!("mac-of-{}", k.kid))));
    let again = Installation {
        trust_domain: "x".into(),
        issuer: None,
        admin_hash: "00".into(),
        installed_at: now(),
        mac: None,
    };
    assert!(matches!(s.install(again, vec![], ev(AuditAction::Init)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.installation().await.unwrap().unwrap().trust_domain, "remit.local");
    assert_eq!(s.keys().await.unwrap().len(), 2);
    assert_eq!(s.bundle_sequence().await.unwrap(), 1);
    assert_eq!(verify_chain(s).await, 1);
    // Resealing replaces the issuer and every MAC, and is audited.
    let seal = crate::Reseal {
        issuer: "https://other.example".into(),
        installation_mac: "new-mac".into(),
        key_macs: vec![("jwt-1".into(), "k1".into()), ("audit-1".into(), "a1".into())],
    };
    s.reseal(seal, ev(AuditAction::InstallationReseal)).await.unwrap();
    let got = s.installation().await.unwrap().unwrap();
    assert_eq!((got.issuer.as_deref(), got.mac.as_deref()), (Some("https://other.example"), Some("new-mac")));
    let macs: HashSet<_> = s.keys().await.unwrap().into_iter().filter_map(|k| k.mac).collect();
    assert_eq!(macs, HashSet::from(["k1".to_string(), "a1".to_string()]));
    let unknown =
        crate::Reseal { issuer: "x".into(), installation_mac: "y".into(), key_macs: vec![("nope".into(), "z".into())] };
    assert!(matches!(s.reseal(unknown, ev(AuditAction::InstallationReseal)).await, Err(StoreError::NotFound { .. })));
    assert_eq!(
        s.installation().await.unwrap().unwrap().mac.as_deref(),
        Some("new-mac"),
        "a failed reseal changes nothing"
    );
    assert_eq!(verify_chain(s).await, 2);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn workflows(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let w = workflow("deploy");
    s.create_workflow(w.clone(), ev(AuditAction::WorkflowCreate)).await.unwrap();
    assert!(matches!(
        s.create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    s.create_workflow(workflow("audit-sweep"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    assert_eq!(s.workflow(&w.name).await.unwrap().unwrap(), w);
    assert_eq!(s.workflow(&wf_name("nope")).await.unwrap(), None);
    let names: Vec<_> = s.list_workflows().await.unwrap().into_iter().map(|w| w.name.to_string()).collect();
    assert_eq!(names, ["audit-sweep", "deploy"]);
    // Resume of an active workflow is a conflict, not a silent success.
    assert!(matches!(
        s.set_workflow_state(&w.name, WorkflowState::Suspended, WorkflowState::Active, ev(AuditAction::WorkflowResume))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.set_workflow_state(
            &wf_name("nope"),
            WorkflowState::Suspended,
            WorkflowState::Active,
            ev(AuditAction::WorkflowResume)
        )
        .await,
        Err(StoreError::NotFound { .. })
    ));
    s.kill(Kill { target: KillTarget::Workflow(w.name.clone()), actor: "admin".into(), reason: "r".into(), at: now() })
        .await
        .unwrap();
    assert_eq!(s.workflow(&w.name).await.unwrap().unwrap().state, WorkflowState::Suspended);
    s.set_workflow_state(&w.name, WorkflowState::Suspended, WorkflowState::Active, ev(AuditAction::WorkflowResume))
        .await
        .unwrap();
    assert_eq!(s.workflow(&w.name).await.unwrap().unwrap().state, WorkflowState::Active);
    verify_chain(s).await;
}

pub async fn agents_need_workflows(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    assert!(matches!(
        s.create_agent(agent("bot", &["missing"]), ev(AuditAction::AgentCreate)).await,
        Err(StoreError::NotFound { .. })
    ));
    s.create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    let a = agent("bot", &["deploy"]);
    s.create_agent(a.clone(), ev(AuditAction::AgentCreate)).await.unwrap();
    assert!(matches!(s.create_agent(a.clone(), ev(AuditAction::AgentCreate)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.agent(&a.name).await.unwrap().unwrap(), a);
    assert_eq!(s.list_agents().await.unwrap(), vec![a]);
}

pub async fn join_token_redeems_once(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let jt = join_token("bot", 600);
    s.create_join_token(jt.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert_eq!(s.join_token(&jt.id).await.unwrap().unwrap(), jt);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let id = jt.id.clone();
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            s.redeem_join_token(&id, instance("bot"), ev(AuditAction::InstanceJoin)).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1, "a join token redeems exactly once");
    let used = s.join_token(&jt.id).await.unwrap().unwrap();
    assert!(used.used_at.is_some());
    let inst = s.instance(used.used_by.as_ref().unwrap()).await.unwrap().unwrap();
    assert_eq!(inst.state, InstanceState::Active);
    // Expired tokens do not redeem.
    let mut old = join_token("bot", 1);
    old.expires_at = UnixMillis(now().0 - 1000);
    s.create_join_token(old.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert!(matches!(
        s.redeem_join_token(&old.id, instance("bot"), ev(AuditAction::InstanceJoin)).await,
        Err(StoreError::Conflict(_))
    ));
    verify_chain(s).await;
}

pub async fn tasks_round_trip(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.unwrap();
    assert_eq!(s.task(&t.id).await.unwrap().unwrap(), t);
    assert!(matches!(s.create_task(t.clone(), ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    let snap = s.task_snapshot(&t.id).await.unwrap().unwrap();
    assert_eq!(snap.task, t);
    assert_eq!(snap.workflow.name.as_str(), "deploy");
    assert_eq!(snap.agent.name.as_str(), "bot");
    assert_eq!(snap.instance.unwrap().id, inst.id);
    let ctx = s.start_context(&wf_name("deploy"), &agent_name("bot"), Some(&inst.id)).await.unwrap();
    assert!(ctx.workflow.is_some() && ctx.agent.is_some() && ctx.instance.is_some());
    let ctx = s.start_context(&wf_name("nope"), &agent_name("bot"), None).await.unwrap();
    assert!(ctx.workflow.is_none() && ctx.instance.is_none());
    let t2 = task("deploy", "bot", None, Some(&t.id));
    s.create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let all = s.list_tasks(TaskFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 2);
    let by_inst =
        s.list_tasks(TaskFilter { instance: Some(inst.id.clone()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(by_inst, vec![t.clone()]);
    let done =
        s.list_tasks(TaskFilter { state: Some(TaskState::Completed), limit: 10, ..Default::default() }).await.unwrap();
    assert!(done.is_empty());
    assert_eq!(s.task(&TaskId::from_random([9; 16])).await.unwrap(), None);
    verify_chain(s).await;
}

pub async fn task_refused_after_kill(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let k = |target| Kill { target, actor: "admin".into(), reason: "incident".into(), at: now() };
    s.kill(k(KillTarget::Instance(inst.id.clone()))).await.unwrap();
    let t = task("deploy", "bot", Some(&inst.id), None);
    assert!(matches!(s.create_task(t, ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    s.kill(k(KillTarget::Workflow(wf_name("deploy")))).await.unwrap();
    let t = task("deploy", "bot", None, None);
    assert!(matches!(s.create_task(t.clone(), ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.task(&t.id).await.unwrap(), None);
}

async fn count_actions(s: &dyn Store, action: &str) -> usize {
    s.list_audit(AuditFilter { action: Some(action.into()), limit: 10_000, ..Default::default() }).await.unwrap().len()
}

pub async fn kill_workflow_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.create_workflow(workflow("other"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    let mut a = agent("helper", &["other", "deploy"]);
    a.name = agent_name("helper");
    s.create_agent(a, ev(AuditAction::AgentCreate)).await.unwrap();
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let t2 = task("deploy", "bot", None, None);
    let other = task("other", "helper", None, None);
    let mut expired = task("deploy", "bot", None, None);
    expired.expires_at = UnixMillis(now().0 - 1);
    for t in [&t1, &t2, &other, &expired] {
        s.create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    s.end_task(&t2.id, TaskState::Completed, now(), "admin", None).await.unwrap();
    let rep = s
        .kill(Kill {
            target: KillTarget::Workflow(wf_name("deploy")),
            actor: "alice@example.com".into(),
            reason: "incident 42".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert_eq!(rep.tasks_revoked, vec![t1.id.clone()]);
    let t1s = s.task(&t1.id).await.unwrap().unwrap();
    assert_eq!(t1s.state, TaskState::Revoked);
    assert_eq!(t1s.end_reason.as_deref(), Some("incident 42"));
    assert_eq!(s.task(&t2.id).await.unwrap().unwrap().state, TaskState::Completed);
    assert_eq!(s.task(&other.id).await.unwrap().unwrap().state, TaskState::Active);
    assert_eq!(s.workflow(&wf_name("deploy")).await.unwrap().unwrap().state, WorkflowState::Suspended);
    let revs =
        s.list_audit(AuditFilter { task: Some(t1.id.to_string()), limit: 100, ..Default::default() }).await.unwrap();
    let rev = revs.iter().find(|r| r.event.action == "task.revoke").unwrap();
    assert_eq!(rev.event.actor, "alice@example.com");
    assert_eq!(rev.event.reason.as_deref(), Some("incident 42"));
    assert_eq!(count_actions(s, "workflow.suspend").await, 1);
    verify_chain(s).await;
}

pub async fn kill_agent_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let t2 = task("deploy", "bot", None, None);
    s.create_task(t1.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    s.create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let unused = join_token("bot", 600);
    s.create_join_token(unused.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    let rep = s
        .kill(Kill {
            target: KillTarget::Agent(agent_name("bot")),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert_eq!(rep.instances_revoked, vec![inst.id.clone()]);
    assert_eq!(rep.join_tokens_revoked, vec![unused.id.clone()], "a kill revokes the agent's unused join tokens");
    assert!(s.join_token(&unused.id).await.unwrap().unwrap().revoked_at.is_some());
    assert_eq!(s.agent(&agent_name("bot")).await.unwrap().unwrap().kill_generation, 1);
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([t1.id.clone(), t2.id.clone()]));
    assert_eq!(s.agent(&agent_name("bot")).await.unwrap().unwrap().state, AgentState::Disabled);
    assert_eq!(s.instance(&inst.id).await.unwrap().unwrap().state, InstanceState::Revoked);
    // A disabled agent's join tokens no longer redeem, and new ones are refused.
    let jt = join_token("bot", 600);
    assert!(matches!(s.create_join_token(jt, ev(AuditAction::JoinTokenCreate)).await, Err(StoreError::Conflict(_))));
    s.set_agent_state(&agent_name("bot"), AgentState::Disabled, AgentState::Enabled, ev(AuditAction::AgentEnable))
        .await
        .unwrap();
    // Re-enabling does not resurrect anything: not the instance, not the task, not the
    // join token made before the kill.
    assert_eq!(s.instance(&inst.id).await.unwrap().unwrap().state, InstanceState::Revoked);
    assert_eq!(s.task(&t1.id).await.unwrap().unwrap().state, TaskState::Revoked);
    assert!(matches!(
        s.redeem_join_token(&unused.id, instance("bot"), ev(AuditAction::InstanceJoin)).await,
        Err(StoreError::Conflict(_))
    ));
    // A token made after re-enabling belongs to the new generation and redeems.
    let fresh = join_token("bot", 600);
    s.create_join_token(fresh.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert_eq!(s.join_token(&fresh.id).await.unwrap().unwrap().agent_generation, 1);
    s.redeem_join_token(&fresh.id, instance("bot"), ev(AuditAction::InstanceJoin)).await.unwrap();
    let revoked = s
        .list_audit(AuditFilter { action: Some("join_token.revoke".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].event.agent.as_deref(), Some("bot"));
    verify_chain(s).await;
}

pub async fn kill_instance_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let child = task("deploy", "bot", None, Some(&t1.id));
    let t2 = task("deploy", "bot", None, None);
    for t in [&t1, &child, &t2] {
        s.create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let rep = s
        .kill(Kill {
            target: KillTarget::Instance(inst.id.clone()),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([t1.id.clone(), child.id.clone()]));
    assert_eq!(s.task(&t2.id).await.unwrap().unwrap().state, TaskState::Active);
    assert!(matches!(
        s.kill(Kill {
            target: KillTarget::Instance(InstanceId::from_random([3; 16])),
            actor: "admin".into(),
            reason: "r".into(),
            at: now()
        })
        .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn kill_task_revokes_subtree(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let root = task("deploy", "bot", None, None);
    let c1 = task("deploy", "bot", None, Some(&root.id));
    let c2 = task("deploy", "bot", None, Some(&c1.id));
    let sibling = task("deploy", "bot", None, None);
    for t in [&root, &c1, &c2, &sibling] {
        s.create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let k = |id: &TaskId| Kill {
        target: KillTarget::Task(id.clone()),
        actor: "admin".into(),
        reason: "r".into(),
        at: now(),
    };
    let rep = s.kill(k(&root.id)).await.unwrap();
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([root.id.clone(), c1.id.clone(), c2.id.clone()]));
    assert_eq!(s.task(&sibling.id).await.unwrap().unwrap().state, TaskState::Active);
    assert!(matches!(s.kill(k(&root.id)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.kill(k(&TaskId::from_random([5; 16]))).await, Err(StoreError::NotFound { .. })));
    // A child of a revoked task cannot be created.
    let late = task("deploy", "bot", None, Some(&root.id));
    assert!(matches!(s.create_task(late, ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    verify_chain(s).await;
}

pub async fn end_task_is_compare_and_set(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let t = task("deploy", "bot", None, None);
    let child = task("deploy", "bot", None, Some(&t.id));
    s.create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    s.create_task(child.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let rep = s.end_task(&t.id, TaskState::Completed, now(), "admin", Some("done")).await.unwrap();
    assert_eq!(rep.tasks_revoked, vec![child.id.clone()], "completing a task ends its subtree");
    let got = s.task(&t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Completed);
    assert!(got.ended_at.is_some());
    assert!(matches!(
        s.end_task(&t.id, TaskState::Completed, now(), "admin", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.end_task(&TaskId::from_random([6; 16]), TaskState::Completed, now(), "admin", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(count_actions(s, "task.complete").await, 1);
}

pub async fn failed_writes_leave_no_trace(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let before = s.audit_head().await.unwrap();
    let wfs = s.list_workflows().await.unwrap();
    assert!(s.create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await.is_err());
    assert!(s.create_agent(agent("x", &["missing"]), ev(AuditAction::AgentCreate)).await.is_err());
    assert!(s.create_task(task("missing", "bot", None, None), ev(AuditAction::TaskStart)).await.is_err());
    assert_eq!(s.audit_head().await.unwrap(), before);
    assert_eq!(s.list_workflows().await.unwrap(), wfs);
    // A failing job in the same group commit as succeeding ones rolls back alone.
    let mut handles = Vec::new();
    for i in 0..20 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let t = if i % 2 == 0 { task("deploy", "bot", None, None) } else { task("missing", "bot", None, None) };
            st.create_task(t, ev(AuditAction::TaskStart)).await.is_ok()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 10);
    assert_eq!(s.audit_head().await.unwrap().0, before.0 + 10);
    verify_chain(s).await;
}

pub async fn concurrent_writes_keep_one_chain(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let start = s.audit_head().await.unwrap().0;
    let mut handles = Vec::new();
    for _ in 0..200 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let t = task("deploy", "bot", None, None);
            st.create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.map(|_| t.id)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    assert_eq!(s.audit_head().await.unwrap().0, start + 200);
    for id in &ids {
        assert!(s.task(id).await.unwrap().is_some(), "acknowledged task {id} must be stored");
    }
    verify_chain(s).await;
}

pub async fn key_rotation(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let retiring =
        |kid: &str, at: UnixMillis| crate::RetiringKey { kid: kid.into(), retire_after: at, mac: "r".into() };
    let seq = s
        .rotate_key(key(KeyPurpose::Jwt, "jwt-2"), retiring("jwt-1", now().plus_secs(3600)), ev(AuditAction::KeyRotate))
        .await
        .unwrap();
    assert_eq!(seq, 2);
    // Rotating out a key that is no longer the active one is a conflict and changes nothing.
    assert!(matches!(
        s.rotate_key(key(KeyPurpose::Jwt, "jwt-x"), retiring("jwt-1", now()), ev(AuditAction::KeyRotate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.bundle_sequence().await.unwrap(), 2);
    assert_eq!(s.bundle_sequence().await.unwrap(), 2);
    let keys = s.keys().await.unwrap();
    let jwt: Vec<_> = keys.iter().filter(|k| k.purpose == KeyPurpose::Jwt).collect();
    assert_eq!(jwt.len(), 2);
    assert_eq!(jwt.iter().filter(|k| k.retire_after.is_none()).count(), 1);
    assert_eq!(jwt.iter().find(|k| k.retire_after.is_none()).unwrap().kid, "jwt-2");
    // A key whose overlap window has passed is no longer returned.
    s.rotate_key(key(KeyPurpose::Jwt, "jwt-3"), retiring("jwt-2", UnixMillis(now().0 - 1)), ev(AuditAction::KeyRotate))
        .await
        .unwrap();
    let kids: HashSet<_> = s.keys().await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, HashSet::from(["jwt-1".to_string(), "jwt-3".to_string(), "audit-1".to_string()]));
    // The audit key is untouched by JWT rotation.
    assert!(s.keys().await.unwrap().iter().any(|k| k.purpose == KeyPurpose::Audit && k.retire_after.is_none()));
}

pub async fn checkpoints_and_filters(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let (seq, hash) = s.audit_head().await.unwrap();
    let cp = Checkpoint { seq, head_hash: hash, time: now(), key_id: "audit-1".into(), signature: "sig".into() };
    s.put_checkpoint(cp.clone()).await.unwrap();
    s.put_checkpoint(cp.clone()).await.unwrap();
    assert_eq!(s.checkpoints().await.unwrap(), vec![cp]);
    s.append_audit(vec![
        AuditEvent::new(now(), "admin", AuditAction::TaskStart).workflow("deploy").task("t1").agent("bot"),
        AuditEvent::new(now(), "admin", AuditAction::TaskStart).workflow("other").task("t2").agent("bot"),
    ])
    .await
    .unwrap();
    let f = |w: Option<&str>, t: Option<&str>| AuditFilter {
        workflow: w.map(Into::into),
        task: t.map(Into::into),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(s.list_audit(f(Some("other"), None)).await.unwrap().len(), 1);
    assert_eq!(s.list_audit(f(None, Some("t1"))).await.unwrap()[0].event.task.as_deref(), Some("t1"));
    let page = s.list_audit(AuditFilter { after_seq: seq, limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, seq + 1);
    let future =
        s.list_audit(AuditFilter { since: Some(now().plus_secs(60)), limit: 100, ..Default::default() }).await.unwrap();
    assert!(future.is_empty());
    verify_chain(s).await;
}

pub async fn renew_instance_only_while_active(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let later = now().plus_secs(7200);
    s.renew_instance(&inst.id, later, ev(AuditAction::InstanceRenew)).await.unwrap();
    assert_eq!(s.instance(&inst.id).await.unwrap().unwrap().expires_at, later);
    s.kill(Kill {
        target: KillTarget::Instance(inst.id.clone()),
        actor: "admin".into(),
        reason: "r".into(),
        at: now(),
    })
    .await
    .unwrap();
    assert!(matches!(
        s.renew_instance(&inst.id, later.plus_secs(1), ev(AuditAction::InstanceRenew)).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Waits (bounded, generously: this is liveness, not speed) until `want` has been seen.
async fn expect_change(rx: &mut tokio::sync::broadcast::Receiver<crate::Change>, want: &crate::Change) {
    let deadline = std::time::Duration::from_secs(20);
    let seen = tokio::time::timeout(deadline, async {
        loop {
            match rx.recv().await {
                Ok(c) if &c == want => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("change feed closed: {e}"),
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "change {want:?} was never published");
}

pub async fn changes_are_published(store: Arc<dyn Store>) {
    use crate::Change;
    let s = &*store;
    let inst = fixture(s).await;
    let mut rx = s.subscribe();
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.unwrap();
    s.kill(Kill { target: KillTarget::Task(t.id.clone()), actor: "admin".into(), reason: "r".into(), at: now() })
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Task(t.id.clone())).await;
    s.kill(Kill {
        target: KillTarget::Workflow(wf_name("deploy")),
        actor: "admin".into(),
        reason: "r".into(),
        at: now(),
    })
    .await
    .unwrap();
    expect_change(&mut rx, &Change::Workflow(wf_name("deploy"))).await;
    s.set_workflow_state(
        &wf_name("deploy"),
        WorkflowState::Suspended,
        WorkflowState::Active,
        ev(AuditAction::WorkflowResume),
    )
    .await
    .unwrap();
    expect_change(&mut rx, &Change::Workflow(wf_name("deploy"))).await;
    let old = crate::RetiringKey { kid: "jwt-1".into(), retire_after: now().plus_secs(60), mac: "r".into() };
    s.rotate_key(key(KeyPurpose::Jwt, "jwt-2"), old, ev(AuditAction::KeyRotate)).await.unwrap();
    expect_change(&mut rx, &Change::Keys).await;
    // A failed write announces nothing: the next change seen is the following success.
    assert!(
        s.kill(Kill { target: KillTarget::Task(t.id.clone()), actor: "a".into(), reason: "r".into(), at: now() })
            .await
            .is_err()
    );
    s.kill(Kill { target: KillTarget::Agent(agent_name("bot")), actor: "admin".into(), reason: "r".into(), at: now() })
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Agent(agent_name("bot"))).await;
}

/// Many task starts at once (one group commit on backends that batch), half of them on a
/// suspended workflow: each gets its own answer, and only the live ones are stored and
/// audited.
pub async fn concurrent_starts_on_live_and_killed_workflows(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    s.create_workflow(workflow("frozen"), ev(AuditAction::WorkflowCreate).workflow("frozen")).await.unwrap();
    s.create_agent(agent("bot2", &["deploy", "frozen"]), ev(AuditAction::AgentCreate)).await.unwrap();
    s.kill(Kill {
        target: KillTarget::Workflow(wf_name("frozen")),
        actor: "admin".into(),
        reason: "r".into(),
        at: now(),
    })
    .await
    .unwrap();
    let start = s.audit_head().await.unwrap().0;
    let mut handles = Vec::new();
    for i in 0..120 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let wf = if i % 2 == 0 { "deploy" } else { "frozen" };
            let t = task(wf, "bot2", None, None);
            (wf, t.id.clone(), st.create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await)
        }));
    }
    for h in handles {
        let (wf, id, r) = h.await.unwrap();
        if wf == "deploy" {
            r.unwrap();
            assert!(s.task(&id).await.unwrap().is_some());
        } else {
            assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
            assert_eq!(s.task(&id).await.unwrap(), None);
        }
    }
    assert_eq!(s.audit_head().await.unwrap().0, start + 60);
    verify_chain(s).await;
}

pub async fn policy_versions_and_entities(store: Arc<dyn Store>) {
    use crate::StoredEntity;
    let s = &*store;
    install(s).await;
    assert_eq!(s.active_policy_set().await.unwrap(), None);
    let mut rx = s.subscribe();
    let v1 = s.put_policy_set("{\"policies\":[]}".into(), now(), "admin", ev(AuditAction::PolicyPush)).await.unwrap();
    let v2 = s.put_policy_set("{\"b\":2}".into(), now(), "admin", ev(AuditAction::PolicyPush)).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    let active = s.active_policy_set().await.unwrap().unwrap();
    assert_eq!((active.version, active.bundle.as_str(), active.created_by.as_str()), (2, "{\"b\":2}", "admin"));
    expect_change(&mut rx, &crate::Change::Policy).await;
    let pushes = s
        .list_audit(AuditFilter { action: Some("policy.push".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(pushes.len(), 2);
    assert!(pushes[1].event.detail.contains("\"version\":2"), "{}", pushes[1].event.detail);

    let rick = |attrs: &str, aliases: &[&str]| StoredEntity {
        etype: "Human".into(),
        id: "rick@the-citadel.com".into(),
        attrs: attrs.into(),
        parents: "[]".into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    s.put_entities(vec![rick(r#"{"roles":["admin"]}"#, &["PID-1"])], ev(AuditAction::EntitiesPush)).await.unwrap();
    assert_eq!(s.entity("Human", "rick@the-citadel.com").await.unwrap().unwrap().attrs, r#"{"roles":["admin"]}"#);
    assert_eq!(s.entity("Human", "PID-1").await.unwrap().unwrap().id, "rick@the-citadel.com");
    assert_eq!(s.entity("Todo", "PID-1").await.unwrap(), None);
    // Listing pages through one type in id order.
    let many: Vec<StoredEntity> = (0..5)
        .map(|i| StoredEntity {
            etype: "Todo".into(),
            id: format!("todo-{i}"),
            attrs: "{}".into(),
            parents: "[]".into(),
            aliases: vec![],
        })
        .collect();
    s.put_entities(many, ev(AuditAction::EntitiesPush)).await.unwrap();
    let page1 = s.list_entities("Todo", None, 3).await.unwrap();
    let page2 = s.list_entities("Todo", Some(page1[2].id.clone()), 3).await.unwrap();
    let ids: Vec<String> = page1.iter().chain(&page2).map(|e| e.id.clone()).collect();
    assert_eq!(ids, (0..5).map(|i| format!("todo-{i}")).collect::<Vec<_>>());
    assert_eq!(s.list_entities("Human", None, 10).await.unwrap().len(), 1);
    // Replacing an entity replaces its aliases.
    s.put_entities(vec![rick(r#"{"roles":["viewer"]}"#, &["PID-2"])], ev(AuditAction::EntitiesPush)).await.unwrap();
    assert_eq!(s.entity("Human", "PID-1").await.unwrap(), None);
    assert_eq!(s.entity("Human", "PID-2").await.unwrap().unwrap().attrs, r#"{"roles":["viewer"]}"#);
    // An alias taken by another entity refuses the whole push.
    let head = s.audit_head().await.unwrap();
    let morty = StoredEntity { id: "morty@the-citadel.com".into(), ..rick("{}", &["PID-2"]) };
    let beth = StoredEntity { id: "beth@the-smiths.com".into(), ..rick("{}", &["PID-3"]) };
    assert!(matches!(
        s.put_entities(vec![beth, morty], ev(AuditAction::EntitiesPush)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.entity("Human", "beth@the-smiths.com").await.unwrap(), None);
    assert_eq!(s.audit_head().await.unwrap(), head);
    verify_chain(s).await;
}

pub async fn approvals_are_single_use(store: Arc<dyn Store>) {
    use crate::Approval;
    let s = &*store;
    install(s).await;
    let t0 = now();
    let mk = |id: &str, ttl: u64| Approval {
        id: id.into(),
        state: "pending".into(),
        digest: "d1".into(),
        policy_version: 3,
        request: "{}".into(),
        reasons: vec!["prod change".into()],
        requested_by: "pep".into(),
        requested_at: t0,
        expires_at: t0.plus_secs(ttl),
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        used_at: None,
        task: (id == "a-2").then(|| "t-1".into()),
        workflow: (id == "a-2").then(|| "deploy".into()),
    };
    let e = || ev(AuditAction::AccessEvaluate);
    for id in ["a-1", "a-2", "a-3"] {
        s.create_approval(mk(id, 600), e()).await.unwrap();
    }
    assert!(matches!(s.create_approval(mk("a-1", 600), e()).await, Err(StoreError::Conflict(_))));
    let a2 = s.approval("a-2").await.unwrap().unwrap();
    assert_eq!((a2.task.as_deref(), a2.workflow.as_deref()), (Some("t-1"), Some("deploy")));
    assert_eq!(s.approval("a-1").await.unwrap().unwrap().task, None);
    assert_eq!(s.list_approvals(Some("pending".into()), 10).await.unwrap().len(), 3);
    // Only an approved approval can be used, only for its digest and version, only once.
    assert!(s.consume_approval("a-1", "d1", 3, now(), e()).await.is_err(), "pending cannot be used");
    s.decide_approval("a-1", true, "alice@example.com", "ok", now(), e()).await.unwrap();
    assert!(matches!(s.decide_approval("a-1", false, "bob", "no", now(), e()).await, Err(StoreError::Conflict(_))));
    assert!(s.consume_approval("a-1", "other", 3, now(), e()).await.is_err(), "changed call");
    assert!(s.consume_approval("a-1", "d1", 4, now(), e()).await.is_err(), "other policy version");
    s.consume_approval("a-1", "d1", 3, now(), e()).await.unwrap();
    assert!(s.consume_approval("a-1", "d1", 3, now(), e()).await.is_err(), "second use");
    let a = s.approval("a-1").await.unwrap().unwrap();
    assert_eq!((a.state.as_str(), a.decided_by.as_deref()), ("used", Some("alice@example.com")));
    assert!(a.used_at.is_some());
    // Denied cannot be used; expired can be neither decided nor used.
    s.decide_approval("a-2", false, "alice@example.com", "no", now(), e()).await.unwrap();
    assert!(s.consume_approval("a-2", "d1", 3, now(), e()).await.is_err());
    let late = t0.plus_secs(601);
    assert!(matches!(s.decide_approval("a-3", true, "alice", "ok", late, e()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        s.decide_approval("a-9", true, "alice", "ok", now(), e()).await,
        Err(StoreError::NotFound { .. })
    ));
    verify_chain(s).await;
}

pub async fn tool_uses_per_task(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let (t1, t2) = (TaskId::from_random(rnd()), TaskId::from_random(rnd()));
    let e = || ev(AuditAction::AccessEvaluate);
    let head = s.audit_head().await.unwrap().0;
    assert!(s.tools_used(&t1).await.unwrap().is_empty());
    for tool in ["slack", "github", "slack"] {
        s.record_tool_use(&t1, tool, now(), e()).await.unwrap();
    }
    s.record_tool_use(&t2, "prod-db", now(), e()).await.unwrap();
    assert_eq!(s.tools_used(&t1).await.unwrap(), vec!["github".to_string(), "slack".to_string()]);
    assert_eq!(s.tools_used(&t2).await.unwrap(), vec!["prod-db".to_string()]);
    // Every use wrote its audit record, in the same transaction.
    assert_eq!(s.audit_head().await.unwrap().0, head + 4);
    // Concurrent uses of one new tool by one task: recorded once, no error.
    let mut joins = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let t = t2.clone();
        joins.push(tokio::spawn(async move {
            store.record_tool_use(&t, "jira", now(), ev(AuditAction::AccessEvaluate)).await
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    assert_eq!(s.tools_used(&t2).await.unwrap(), vec!["jira".to_string(), "prod-db".to_string()]);
    // A task holds at most MAX_TOOLS_PER_TASK distinct tools; the decision is still audited.
    let t3 = TaskId::from_random(rnd());
    for i in 0..crate::MAX_TOOLS_PER_TASK + 5 {
        s.record_tool_use(&t3, &format!("tool-{i:04}"), now(), e()).await.unwrap();
    }
    let used = s.tools_used(&t3).await.unwrap();
    assert_eq!(used.len() as i64, crate::MAX_TOOLS_PER_TASK);
    assert_eq!(used.last().map(String::as_str), Some("tool-0255"));
    verify_chain(s).await;
}
