//! The grants area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::grant::{Grant, GrantState};
use remit_core::human::{HumanState, new_human};
use remit_core::ids::{GrantId, HumanId};
use remit_core::model::TaskState;

use super::Revocation;
use crate::conformance::{agent_name, ev, fixture, now, rnd, task, verify_chain, wf_name};
use crate::{Store, StoreError};

fn grant(human: &HumanId) -> Grant {
    Grant {
        id: GrantId::from_random(rnd()),
        human: human.clone(),
        human_email: "ann@example.com".into(),
        agent: agent_name("bot"),
        workflow: wf_name("deploy"),
        authority: Default::default(),
        max_depth: 1,
        state: GrantState::Proposed,
        confirmation_hash: "ab".repeat(32),
        created_at: now(),
        expires_at: now().plus_secs(600),
        confirmed_at: None,
        revoked_at: None,
    }
}

fn revocation() -> Revocation {
    Revocation { actor: "human:ann".into(), reason: "done".into(), at: now() }
}

pub async fn grants_confirm_once_and_revoke_their_tasks(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let h = new_human(HumanId::from_random(rnd()), "ann@example.com", "", HumanState::Active, vec![], vec![], now())
        .unwrap();
    s.humans().create(h.clone(), ev(AuditAction::HumanCreate)).await.unwrap();
    let g = grant(&h.id);
    s.grants().create(g.clone(), ev(AuditAction::GrantCreate)).await.unwrap();
    assert_eq!(s.grants().get(&g.id).await.unwrap().unwrap(), g);
    s.grants().confirm(&g.id, now(), ev(AuditAction::GrantConfirm)).await.unwrap();
    assert!(matches!(
        s.grants().confirm(&g.id, now(), ev(AuditAction::GrantConfirm)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.grants().get(&g.id).await.unwrap().unwrap().state, GrantState::Active);
    assert_eq!(s.grants().list(Some(&h.id), 10).await.unwrap().len(), 1);
    // Tasks under the grant (a root and its child) and one that is not.
    let mut root = task("deploy", "bot", Some(&inst.id), None);
    root.delegation.grant = Some(g.id.clone());
    let mut child = task("deploy", "bot", None, Some(&root.id));
    child.delegation.grant = Some(g.id.clone());
    let other = task("deploy", "bot", Some(&inst.id), None);
    for t in [&root, &child, &other] {
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let rep = s.grants().revoke(&g.id, revocation(), ev(AuditAction::GrantRevoke)).await.unwrap();
    let mut want = vec![root.id.clone(), child.id.clone()];
    want.sort();
    assert_eq!(rep.tasks_revoked, want);
    assert_eq!(s.identity().task(&other.id).await.unwrap().unwrap().state, TaskState::Active);
    assert!(matches!(
        s.grants().revoke(&g.id, revocation(), ev(AuditAction::GrantRevoke)).await,
        Err(StoreError::Conflict(_))
    ));
    // A task under a revoked grant is refused inside the write (a start racing the revocation).
    let mut late = task("deploy", "bot", Some(&inst.id), None);
    late.delegation.grant = Some(g.id.clone());
    assert!(matches!(s.identity().create_task(late, ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    let ghost = GrantId::from_random(rnd());
    assert!(matches!(
        s.grants().revoke(&ghost, revocation(), ev(AuditAction::GrantRevoke)).await,
        Err(StoreError::NotFound { .. })
    ));

    // A grant's call budget is shared by every task under it.
    let mut g3 = grant(&h.id);
    g3.authority.max_calls = Some(2);
    s.grants().create(g3.clone(), ev(AuditAction::GrantCreate)).await.unwrap();
    s.grants().confirm(&g3.id, now(), ev(AuditAction::GrantConfirm)).await.unwrap();
    let mut a = task("deploy", "bot", Some(&inst.id), None);
    let mut b = task("deploy", "bot", Some(&inst.id), None);
    for t in [&mut a, &mut b] {
        t.delegation.grant = Some(g3.id.clone());
        t.delegation.authority.max_calls = Some(2);
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let call = |id: remit_core::ids::TaskId| async move {
        s.identity().record_call(&id, None, now(), ev(AuditAction::AccessEvaluate)).await.unwrap()
    };
    assert!(call(a.id.clone()).await && call(b.id.clone()).await);
    assert!(!call(a.id.clone()).await, "two tasks under the grant spent its 2 calls");
    s.grants().revoke(&g3.id, revocation(), ev(AuditAction::GrantRevoke)).await.unwrap();
    // Deactivating the human revokes the rest of their grants with their tasks, at once.
    let g2 = grant(&h.id);
    s.grants().create(g2.clone(), ev(AuditAction::GrantCreate)).await.unwrap();
    s.grants().confirm(&g2.id, now(), ev(AuditAction::GrantConfirm)).await.unwrap();
    let mut t2 = task("deploy", "bot", Some(&inst.id), None);
    t2.delegation.grant = Some(g2.id.clone());
    s.identity().create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let d = s.humans().deactivate(&h.id, now(), "left", ev(AuditAction::HumanDeactivate)).await.unwrap();
    assert_eq!(d.grants_revoked, vec![g2.id.clone()]);
    assert_eq!(d.tasks_revoked, vec![t2.id.clone()]);
    assert_eq!(s.identity().task(&t2.id).await.unwrap().unwrap().state, TaskState::Revoked);
    // A deactivated human proposes nothing.
    assert!(matches!(
        s.grants().create(grant(&h.id), ev(AuditAction::GrantCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    verify_chain(s).await;
}
