//! The leases area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::ids::LeaseId;
use remit_core::lease::{EngineKind, Lease, LeaseState, MAX_LEASES_PER_TASK, STUCK_AFTER_ATTEMPTS};
use remit_core::model::{Kill, KillTarget, Task, TaskState};
use remit_core::time::UnixMillis;

use super::LeaseFilter;
use crate::conformance::{ev, fixture, now, rnd, task};
use crate::tools::conformance::tool;
use crate::{Store, StoreError};

fn lease(t: &Task, n: u32) -> Lease {
    let at = now();
    Lease {
        id: LeaseId::from_random(rnd()),
        tool: remit_core::ids::ToolName::parse("db").unwrap(),
        task: t.id.clone(),
        workflow: t.workflow.clone(),
        agent: t.agent.clone(),
        engine: EngineKind::Postgres,
        handle: format!("remit_{}_{n:016x}", &t.id.as_str()[2..10]),
        target: "127.0.0.1:5432/app".into(),
        state: LeaseState::Active,
        created_at: at,
        expires_at: UnixMillis(at.0 + 60_000),
        revoke_requested_at: None,
        revoke_reason: None,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        revoked_at: None,
    }
}

fn all() -> LeaseFilter {
    LeaseFilter { limit: 1000, ..Default::default() }
}

/// Leases need a live task, die with it in the kill's transaction, are claimed in bounded
/// batches (a claim hides them until it lapses), count failures without ever dropping one,
/// and move to revoked only once.
pub async fn leases_die_with_their_task_and_are_never_dropped(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.tools().create_tool(tool("db", "https://db.example"), ev(AuditAction::ToolCreate)).await.unwrap();
    let parent = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(parent.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let child = task("deploy", "bot", Some(&inst.id), Some(&parent.id));
    s.identity().create_task(child.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let l = s.leases();
    let (a, b, c) = (lease(&parent, 1), lease(&parent, 2), lease(&child, 3));
    for x in [&a, &b, &c] {
        l.create_lease(x.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    }
    assert_eq!(l.lease(&a.id).await.unwrap().unwrap(), a);
    assert_eq!(l.list_leases(LeaseFilter { task: Some(parent.id.clone()), ..all() }).await.unwrap().len(), 2);
    assert_eq!(l.lease_counts().await.unwrap().active, 3);
    // Nothing is due yet.
    assert!(l.claim_revocations(now(), 10, UnixMillis(now().0 + 30_000)).await.unwrap().is_empty());

    // Ending the parent marks its leases and its child's, in the same transaction.
    let report = s.identity().end_task(&parent.id, TaskState::Completed, now(), "admin", None).await.unwrap();
    assert_eq!(report.leases_pending, 3);
    let got = l.lease(&c.id).await.unwrap().unwrap();
    assert_eq!(got.state, LeaseState::Revoking);
    assert!(got.revoke_reason.is_some() && got.next_attempt_at.is_some());
    // A task that ended gets no new lease.
    assert!(matches!(
        l.create_lease(lease(&parent, 4), vec![ev(AuditAction::LeaseCreate)]).await,
        Err(StoreError::Conflict(_))
    ));

    // Claims come in bounded batches, and a claimed lease is hidden until its claim lapses.
    let t0 = now();
    let hold = UnixMillis(t0.0 + 30_000);
    let first = l.claim_revocations(t0, 2, hold).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = l.claim_revocations(t0, 2, hold).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(l.claim_revocations(t0, 2, hold).await.unwrap().is_empty());
    // A crashed revoker's claim lapses: the leases are due again.
    assert_eq!(l.claim_revocations(UnixMillis(hold.0 + 1), 10, UnixMillis(hold.0 + 30_000)).await.unwrap().len(), 3);

    // Failures are counted and rescheduled, never dropped; the sixth makes the lease stuck.
    let mut attempts = 0;
    for i in 0..STUCK_AFTER_ATTEMPTS {
        let audit = (i + 1 == STUCK_AFTER_ATTEMPTS).then(|| ev(AuditAction::LeaseStuck));
        attempts = l.revocation_failed(&a.id, "connection refused", UnixMillis(t0.0 + 1000), audit).await.unwrap();
    }
    assert_eq!(attempts, STUCK_AFTER_ATTEMPTS);
    let stuck = l.list_leases(LeaseFilter { stuck: true, ..all() }).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].id, a.id);
    assert!(stuck[0].stuck() && stuck[0].last_error.as_deref() == Some("connection refused"));
    assert_eq!(l.lease_counts().await.unwrap(), super::LeaseCounts { active: 0, revoking: 3, stuck: 1 });

    // Confirmed gone: revoked once, with an audit record each.
    let at = now();
    let ids = vec![a.id.clone(), b.id.clone()];
    let audits = vec![ev(AuditAction::LeaseRevoke), ev(AuditAction::LeaseRevoke)];
    assert_eq!(l.revoked(ids.clone(), at, audits).await.unwrap(), 2);
    assert_eq!(l.revoked(ids, at, vec![]).await.unwrap(), 0);
    assert_eq!(l.lease(&a.id).await.unwrap().unwrap().revoked_at, Some(at));
    assert!(matches!(l.revocation_failed(&a.id, "late", at, None).await, Err(StoreError::NotFound { .. })));
    assert_eq!(l.list_leases(LeaseFilter { state: Some(LeaseState::Revoked), ..all() }).await.unwrap().len(), 2);

    // Expiry: an active lease past its deadline is moved to revoking by the next claim.
    let t2 = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let mut short = lease(&t2, 5);
    short.expires_at = UnixMillis(now().0 + 10);
    l.create_lease(short.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    let later = UnixMillis(now().0 + 1000);
    let due = l.claim_revocations(later, 10, UnixMillis(later.0 + 30_000)).await.unwrap();
    assert!(due.iter().any(|x| x.id == short.id && x.revoke_reason.as_deref() == Some("expired")), "{due:?}");

    // A manual revoke asks once; an unknown lease is NotFound.
    let other = lease(&t2, 6);
    l.create_lease(other.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    assert!(l.revoke_lease(&other.id, now(), "by admin", Some(ev(AuditAction::LeaseRevokeRequest))).await.unwrap());
    assert!(!l.revoke_lease(&other.id, now(), "by admin", None).await.unwrap());
    assert!(matches!(
        l.revoke_lease(&LeaseId::from_random(rnd()), now(), "x", None).await,
        Err(StoreError::NotFound { .. })
    ));

    // A workflow kill reaches the leases of every live task in it.
    let t3 = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t3.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    l.create_lease(lease(&t3, 7), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    let kill = Kill {
        target: KillTarget::Workflow(t3.workflow.clone()),
        actor: "admin".into(),
        reason: "x".into(),
        at: now(),
    };
    assert_eq!(s.identity().kill(kill).await.unwrap().leases_pending, 1);

    // Revoked rows are pruned after their retention; unfinished ones never are.
    assert_eq!(l.prune_leases(UnixMillis(at.0 + 1)).await.unwrap(), 2);
    assert_eq!(l.lease_counts().await.unwrap().revoking, 4);
    crate::conformance::verify_chain(s).await;
}

/// A task holds a bounded number of unrevoked leases.
pub async fn leases_per_task_are_bounded(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.tools().create_tool(tool("db", "https://db.example"), ev(AuditAction::ToolCreate)).await.unwrap();
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    for i in 0..MAX_LEASES_PER_TASK {
        s.leases().create_lease(lease(&t, i), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    }
    assert!(matches!(
        s.leases().create_lease(lease(&t, 999), vec![ev(AuditAction::LeaseCreate)]).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A lease whose login is still being made is not handed to revocation before its creation
/// hold ends, whoever asks; fresh revocations come before retries; disabling the tool cuts its
/// logins; `revocation_due` says when there is work.
pub async fn holds_order_and_tool_disable(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.tools().create_tool(tool("db", "https://db.example"), ev(AuditAction::ToolCreate)).await.unwrap();
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let l = s.leases();
    let t0 = now();
    let hold = UnixMillis(t0.0 + 60_000);
    let mut making = lease(&t, 1);
    making.next_attempt_at = Some(hold);
    l.create_lease(making.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    // Made: the hold ends, and a revocation then is due at once.
    let mut quick = lease(&t, 9);
    quick.next_attempt_at = Some(hold);
    l.create_lease(quick.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    assert!(l.lease_made(&quick.id).await.unwrap());
    assert!(l.revoke_lease(&quick.id, t0, "x", None).await.unwrap());
    assert!(!l.lease_made(&quick.id).await.unwrap(), "revoked meanwhile");
    assert_eq!(l.claim_revocations(t0, 10, UnixMillis(hold.0 + 30_000)).await.unwrap()[0].id, quick.id);
    let (old, fresh) = (lease(&t, 2), lease(&t, 3));
    for x in [&old, &fresh] {
        l.create_lease(x.clone(), vec![ev(AuditAction::LeaseCreate)]).await.unwrap();
    }
    assert!(!l.revocation_due(t0).await.unwrap());
    // `old` failed twice already (it was revoked earlier and retried).
    assert!(l.revoke_lease(&old.id, t0, "x", None).await.unwrap());
    let claimed = l.claim_revocations(t0, 10, UnixMillis(t0.0 + 1)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    for _ in 0..2 {
        l.revocation_failed(&old.id, "down", t0, None).await.unwrap();
    }
    // Disabling the tool marks the other two; the one being made keeps its hold.
    s.tools()
        .set_tool_state(
            &remit_core::ids::ToolName::parse("db").unwrap(),
            remit_core::tool::ToolState::Active,
            remit_core::tool::ToolState::Disabled,
            ev(AuditAction::ToolDisable),
        )
        .await
        .unwrap();
    assert_eq!(l.lease(&making.id).await.unwrap().unwrap().state, LeaseState::Revoking);
    assert!(l.revocation_due(t0).await.unwrap());
    let later = UnixMillis(now().0 + 10);
    let first = l.claim_revocations(later, 1, UnixMillis(hold.0 + 30_000)).await.unwrap();
    assert_eq!(first[0].id, fresh.id, "a fresh revocation comes before a retry");
    let rest = l.claim_revocations(later, 10, UnixMillis(hold.0 + 30_000)).await.unwrap();
    assert_eq!(rest.len(), 1, "not the one being made");
    assert_eq!(rest[0].id, old.id);
    let after = l.claim_revocations(UnixMillis(hold.0 + 1), 10, UnixMillis(hold.0 + 30_000)).await.unwrap();
    assert_eq!(after.iter().map(|x| x.id.clone()).collect::<Vec<_>>(), [making.id.clone()]);
    assert_eq!(after[0].target, "127.0.0.1:5432/app");
}
