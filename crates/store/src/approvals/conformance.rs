//! The approvals area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::approval::{Approval, ApprovalState, Decision};
use remit_core::audit::AuditAction;
use remit_core::ids::{ApprovalId, TaskId, WorkflowName};
use remit_core::time::UnixMillis;

use super::Presentation;
use crate::conformance::{ev, install, now, verify_chain};
use crate::{Store, StoreError};

fn id(n: u8) -> ApprovalId {
    ApprovalId::from_random([n; 16])
}

fn pending(n: u8, t0: UnixMillis, ttl: u64) -> Approval {
    Approval {
        id: id(n),
        state: ApprovalState::Pending,
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
        task: (n == 2).then(|| TaskId::from_random([1; 16])),
        workflow: (n == 2).then(|| WorkflowName::parse("deploy").unwrap()),
    }
}

fn yes(by: &str, at: UnixMillis) -> Decision {
    Decision { approve: true, by: by.into(), reason: "ok".into(), at }
}

fn no(by: &str, at: UnixMillis) -> Decision {
    Decision { approve: false, by: by.into(), reason: "no".into(), at }
}

fn call(digest: &str, version: u64) -> Presentation {
    Presentation { digest: digest.into(), policy_version: version, at: now() }
}

pub async fn approvals_are_single_use(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let t0 = now();
    let e = || ev(AuditAction::AccessEvaluate);
    let ap = s.approvals();
    for n in [1, 2, 3] {
        ap.create(pending(n, t0, 600), e()).await.unwrap();
    }
    assert!(matches!(ap.create(pending(1, t0, 600), e()).await, Err(StoreError::Conflict(_))));
    let a2 = ap.get(&id(2)).await.unwrap().unwrap();
    assert_eq!(a2, pending(2, t0, 600), "read back as stored, typed");
    assert_eq!(ap.get(&id(1)).await.unwrap().unwrap().task, None);
    assert_eq!(ap.list(Some(ApprovalState::Pending), 10).await.unwrap().len(), 3);
    // Only an approved approval can be used, only for its digest and version, only once.
    assert!(ap.consume(&id(1), call("d1", 3), e()).await.is_err(), "pending cannot be used");
    let decided = ap.decide(&id(1), yes("alice@example.com", now()), e()).await.unwrap();
    assert_eq!(decided.state, ApprovalState::Approved);
    assert!(matches!(ap.decide(&id(1), no("bob", now()), e()).await, Err(StoreError::Conflict(_))));
    assert!(ap.consume(&id(1), call("other", 3), e()).await.is_err(), "changed call");
    assert!(ap.consume(&id(1), call("d1", 4), e()).await.is_err(), "other policy version");
    let proof = ap.consume(&id(1), call("d1", 3), e()).await.unwrap();
    assert!(proof.covers("d1", 3) && proof.id() == &id(1));
    assert!(ap.consume(&id(1), call("d1", 3), e()).await.is_err(), "second use");
    let a = ap.get(&id(1)).await.unwrap().unwrap();
    assert_eq!((a.state, a.decided_by.as_deref()), (ApprovalState::Used, Some("alice@example.com")));
    assert!(a.used_at.is_some());
    // Denied cannot be used; expired can be neither decided nor used.
    ap.decide(&id(2), no("alice@example.com", now()), e()).await.unwrap();
    assert!(ap.consume(&id(2), call("d1", 3), e()).await.is_err());
    let late = t0.plus_secs(601);
    assert!(matches!(ap.decide(&id(3), yes("alice", late), e()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(ap.decide(&id(9), yes("alice", now()), e()).await, Err(StoreError::NotFound { .. })));
    verify_chain(s).await;
}

/// Concurrent retries presenting one approval: exactly one gets the proof.
pub async fn one_approval_one_use_under_concurrency(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let e = || ev(AuditAction::AccessEvaluate);
    s.approvals().create(pending(1, now(), 600), e()).await.unwrap();
    s.approvals().decide(&id(1), yes("alice", now()), e()).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            st.approvals().consume(&id(1), call("d1", 3), ev(AuditAction::ApprovalUse)).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(wins, 1, "one approval, one use");
    verify_chain(s).await;
}
