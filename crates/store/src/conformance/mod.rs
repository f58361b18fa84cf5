//! The conformance suite: behaviour every [`Store`] backend must show.
//!
//! Written against the trait only. A backend's test file instantiates every case with
//! [`conformance_tests!`](crate::conformance_tests), passing an async constructor that returns
//! the store and a guard that keeps its resources (a temp dir, a throw-away database) alive.
//!
//! The cases live with their areas (`crate::<area>::conformance`); this module holds the
//! fixtures they share, the cases that span areas, and the macro that instantiates them all.
//! Test code, compiled only with the `testing` feature; it asserts with `unwrap`/`assert!`
//! on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent, ChainVerifier};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, InstanceState, JoinToken, Kill, KillTarget, Sensitivity, Task, TaskState, Workflow,
    WorkflowState,
};
use remit_core::time::{Clock, SystemClock, UnixMillis};

use crate::{AuditFilter, Installation, KeyPurpose, Store, StoredKey};

/// Generates one `#[tokio::test]` per conformance case, every area's. `$make` is an async
/// expression yielding `(store, guard)`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            keys::install_once, keys::key_rotation,
            identity::workflows, identity::agents_need_workflows, identity::join_token_redeems_once,
            identity::tasks_round_trip, identity::task_refused_after_kill, identity::kill_workflow_cascades,
            identity::kill_agent_cascades, identity::kill_instance_cascades, identity::kill_task_revokes_subtree,
            identity::end_task_is_compare_and_set, identity::renew_instance_only_while_active,
            identity::concurrent_starts_on_live_and_killed_workflows, identity::tool_uses_per_task,
            identity::cascades_have_no_depth_limit, identity::delegation_round_trips_and_kills_end_exactly_the_subtree,
            audit::checkpoints_and_filters, audit::checkpoints_page_in_order,
            policy::policy_versions_and_entities,
            approvals::approvals_are_single_use, approvals::one_approval_one_use_under_concurrency,
            humans::humans_round_trip, humans::sign_in_and_sessions,
            humans::deactivation_revokes_sessions_and_orphans_what_they_own, humans::one_refresh_wins_under_concurrency,
            humans::local_credentials_are_compare_and_set,
            scim::users_are_humans_and_deleting_one_deactivates_it, scim::groups_carry_their_members_and_lists_page,
            grants::grants_confirm_once_and_revoke_their_tasks,
            workload::entries_are_unique_and_instances_need_an_enabled_agent,
            secrets::secrets_version_retire_and_delete,
            leases::leases_die_with_their_task_and_are_never_dropped, leases::leases_per_task_are_bounded,
            leases::holds_order_and_tool_disable,
            governance::jobs_have_one_holder_and_a_compare_and_set_cursor, governance::outbox_keeps_sets_until_acknowledged,
            governance::bearers_settings_and_recertifications, governance::tasks_renew_only_while_live,
            governance::reuse_acceptances_round_trip,
            tools::tools_are_unique_and_disable_once, tools::dpop_proofs_are_single_use_and_presentations_recorded, tools::credentials_need_a_live_task_and_revoke_once,
            conformance::failed_writes_leave_no_trace, conformance::concurrent_writes_keep_one_chain,
            conformance::changes_are_published);
    };
    (@cases $make:expr; $($area:ident :: $case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (store, _guard) = $make.await;
            let store: std::sync::Arc<dyn $crate::Store> = std::sync::Arc::new(store);
            $crate::conformance_tests!(@call $area, $case, store);
        }
    )*};
    (@call conformance, $case:ident, $store:ident) => { $crate::conformance::$case($store).await };
    (@call $area:ident, $case:ident, $store:ident) => { $crate::$area::conformance::$case($store).await };
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
        owner_id: None,
        orphaned_at: None,
        ceiling: Sensitivity::Confidential,
        allowed_tools: vec!["git".into(), "kubectl".into()],
        max_task_ttl_secs: 900,
        max_delegation_depth: 3,
        trust: Default::default(),
        state: WorkflowState::Active,
        created_at: now(),
        updated_at: now(),
    }
}

pub(crate) fn agent(name: &str, wfs: &[&str]) -> Agent {
    Agent {
        name: agent_name(name),
        owner: "bob@example.com".into(),
        owner_id: None,
        orphaned_at: None,
        workflows: wfs.iter().map(|w| wf_name(w)).collect(),
        state: AgentState::Enabled,
        kill_generation: 0,
        created_at: now(),
        updated_at: now(),
    }
}

pub(crate) fn rnd() -> [u8; 16] {
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
        workflow: None,
        renew_until: None,
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
        delegation: Default::default(),
    }
}

pub(crate) fn key(purpose: KeyPurpose, kid: &str) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        purpose,
        sealed: vec![1, 2, 3],
        public: vec![4; 65],
        created_at: now(),
        retire_after: None,
        mac: Some(format!("mac-of-{kid}")),
        cert: None,
    }
}

pub(crate) async fn install(s: &dyn Store) {
    let inst = Installation {
        trust_domain: "remit.local".into(),
        issuer: Some("https://remit.example".into()),
        admin_hash: "ab".repeat(32),
        installed_at: now(),
        mac: Some("install-mac".into()),
    };
    s.keys()
        .install(inst, vec![key(KeyPurpose::Jwt, "jwt-1"), key(KeyPurpose::Audit, "audit-1")], ev(AuditAction::Init))
        .await
        .unwrap();
}

/// Installs, creates workflow `deploy`, agent `bot` and one active instance of it.
pub async fn fixture(s: &dyn Store) -> Instance {
    install(s).await;
    s.identity().create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate).workflow("deploy")).await.unwrap();
    s.identity().create_agent(agent("bot", &["deploy"]), ev(AuditAction::AgentCreate).agent("bot")).await.unwrap();
    let i = instance("bot");
    let jt = join_token("bot", 600);
    s.identity().create_join_token(jt.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    s.identity().redeem_join_token(&jt.id, i.clone(), ev(AuditAction::InstanceJoin)).await.unwrap();
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
    // Checkpoints are fed in seq order, a page at a time, as the server's verification does.
    let mut v = ChainVerifier::new(&[], |_| true).unwrap();
    let mut cp_after = 0;
    let mut after = 0;
    loop {
        let page = s.audit().list(AuditFilter { after_seq: after, limit: 1000, ..Default::default() }).await.unwrap();
        let Some(last) = page.last().map(|r| r.seq) else { break };
        loop {
            let cps = s.audit().checkpoints_after(cp_after, 1000).await.unwrap();
            let Some(c) = cps.last() else { break };
            cp_after = c.seq;
            for cp in &cps {
                v.add_checkpoint(cp, |_| true).unwrap();
            }
            if cp_after > last {
                break;
            }
        }
        for r in &page {
            v.push(r).unwrap();
        }
        after = last;
    }
    for cp in s.audit().checkpoints_after(cp_after, crate::MAX_PAGE).await.unwrap() {
        v.add_checkpoint(&cp, |_| true).unwrap();
    }
    let rep = v.finish().unwrap();
    let (seq, hash) = s.audit().head().await.unwrap();
    assert_eq!(rep.records, seq);
    assert_eq!(rep.head_hash, hash);
    seq
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) async fn count_actions(s: &dyn Store, action: &str) -> usize {
    s.audit()
        .list(AuditFilter { action: Some(action.into()), limit: 10_000, ..Default::default() })
        .await
        .unwrap()
        .len()
}

pub async fn failed_writes_leave_no_trace(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let before = s.audit().head().await.unwrap();
    let wfs = s.identity().list_workflows().await.unwrap();
    assert!(s.identity().create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await.is_err());
    assert!(s.identity().create_agent(agent("x", &["missing"]), ev(AuditAction::AgentCreate)).await.is_err());
    assert!(s.identity().create_task(task("missing", "bot", None, None), ev(AuditAction::TaskStart)).await.is_err());
    assert_eq!(s.audit().head().await.unwrap(), before);
    assert_eq!(s.identity().list_workflows().await.unwrap(), wfs);
    // A failing job in the same group commit as succeeding ones rolls back alone.
    let mut handles = Vec::new();
    for i in 0..20 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let t = if i % 2 == 0 { task("deploy", "bot", None, None) } else { task("missing", "bot", None, None) };
            st.identity().create_task(t, ev(AuditAction::TaskStart)).await.is_ok()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 10);
    assert_eq!(s.audit().head().await.unwrap().0, before.0 + 10);
    verify_chain(s).await;
}

pub async fn concurrent_writes_keep_one_chain(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let start = s.audit().head().await.unwrap().0;
    let mut handles = Vec::new();
    for _ in 0..200 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let t = task("deploy", "bot", None, None);
            st.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.map(|_| t.id)
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().unwrap());
    }
    assert_eq!(s.audit().head().await.unwrap().0, start + 200);
    for id in &ids {
        assert!(s.identity().task(id).await.unwrap().is_some(), "acknowledged task {id} must be stored");
    }
    verify_chain(s).await;
}

/// Waits (bounded, generously: this is liveness, not speed) until `want` has been seen.
pub(crate) async fn expect_change(rx: &mut tokio::sync::broadcast::Receiver<crate::Change>, want: &crate::Change) {
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
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.unwrap();
    s.identity()
        .kill(Kill { target: KillTarget::Task(t.id.clone()), actor: "admin".into(), reason: "r".into(), at: now() })
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Task(t.id.clone())).await;
    s.identity()
        .kill(Kill {
            target: KillTarget::Workflow(wf_name("deploy")),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Workflow(wf_name("deploy"))).await;
    s.identity()
        .set_workflow_state(
            &wf_name("deploy"),
            WorkflowState::Suspended,
            WorkflowState::Active,
            ev(AuditAction::WorkflowResume),
        )
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Workflow(wf_name("deploy"))).await;
    let old = crate::RetiringKey { kid: "jwt-1".into(), retire_after: now().plus_secs(60), mac: "r".into() };
    s.keys().rotate(key(KeyPurpose::Jwt, "jwt-2"), old, ev(AuditAction::KeyRotate)).await.unwrap();
    expect_change(&mut rx, &Change::Keys).await;
    // A failed write announces nothing: the next change seen is the following success.
    assert!(
        s.identity()
            .kill(Kill { target: KillTarget::Task(t.id.clone()), actor: "a".into(), reason: "r".into(), at: now() })
            .await
            .is_err()
    );
    s.identity()
        .kill(Kill {
            target: KillTarget::Agent(agent_name("bot")),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    expect_change(&mut rx, &Change::Agent(agent_name("bot"))).await;
}
