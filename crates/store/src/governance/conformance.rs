//! The governance area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::time::UnixMillis;

use super::{OutboxRow, Recertification, Stream};
use crate::conformance::{ev, fixture, now};
use crate::{Change, Store, StoreError};

fn stream(id: &str, owner: &str) -> Stream {
    Stream {
        id: id.into(),
        owner: owner.into(),
        config: "{}".into(),
        status: "enabled".into(),
        reason: None,
        created_at: now(),
        updated_at: now(),
        version: 0,
    }
}

fn row(stream: &str, jti: &str, seq: u64, at: UnixMillis) -> OutboxRow {
    OutboxRow {
        stream: stream.into(),
        jti: jti.into(),
        seq,
        set: format!("set-{jti}"),
        created_at: at,
        attempts: 0,
        next_at: at,
        last_error: None,
    }
}

/// One holder at a time; a lapsed job is taken over; the cursor moves only from where its
/// holder read it, together with the SETs it produced.
pub async fn jobs_have_one_holder_and_a_compare_and_set_cursor(s: Arc<dyn Store>) {
    fixture(&*s).await;
    let g = s.governance();
    let t = now();
    assert_eq!(g.take_job("tail", "a", t, UnixMillis(t.0 + 10_000)).await.unwrap(), Some(0));
    assert_eq!(g.take_job("tail", "b", t, UnixMillis(t.0 + 10_000)).await.unwrap(), None);
    g.put_stream(stream("s1", "admin"), vec![], Some(ev(AuditAction::SsfStreamCreate))).await.unwrap();
    let mut feed = s.subscribe();
    g.advance_job("tail", "a", 0, 7, vec![row("s1", "j1", 5, t), row("gone", "j2", 6, t)], vec![]).await.unwrap();
    // A cached store forwards its backend's feed from a task of its own: wait for it (the
    // bound only keeps a broken feed from hanging the suite).
    let announced = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match feed.recv().await {
                Ok(Change::Outbox) => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await;
    assert_eq!(announced, Ok(true), "queued SETs are announced");
    // A stale cursor or another holder is refused and queues nothing.
    let stale = g.advance_job("tail", "a", 0, 9, vec![row("s1", "j3", 8, t)], vec![]).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let other = g.advance_job("tail", "b", 7, 9, vec![], vec![]).await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
    // Only the existing stream's row was queued.
    assert_eq!(g.outbox_depth("s1").await.unwrap(), 1);
    // The lease lapses: another replica takes the job over at its cursor.
    let later = UnixMillis(t.0 + 10_001);
    assert_eq!(g.take_job("tail", "b", later, UnixMillis(later.0 + 10_000)).await.unwrap(), Some(7));
    assert_eq!(g.take_job("tail", "a", later, UnixMillis(later.0 + 10_000)).await.unwrap(), None);
    let jobs = g.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].name.as_str(), jobs[0].holder.as_str(), jobs[0].cursor), ("tail", "b", 7));
    assert_eq!(jobs[0].held_until, UnixMillis(later.0 + 10_000));
    // Released at shutdown: taken at once.
    g.release_job("tail", "b").await.unwrap();
    assert_eq!(g.take_job("tail", "a", later, UnixMillis(later.0 + 10_000)).await.unwrap(), Some(7));
}

/// SETs leave the outbox only when acknowledged; failures reschedule them; a deleted stream
/// takes its outbox with it; an update never changes a stream's owner.
pub async fn outbox_keeps_sets_until_acknowledged(s: Arc<dyn Store>) {
    fixture(&*s).await;
    let g = s.governance();
    let t = now();
    g.put_stream(stream("s1", "tool:ticketing"), vec![], None).await.unwrap();
    g.put_stream(stream("s2", "admin"), vec![], None).await.unwrap();
    g.enqueue(vec![row("s1", "b", 2, t), row("s1", "a", 1, t), row("s1", "c", 3, t), row("s2", "x", 1, t)])
        .await
        .unwrap();
    // Queuing the same SET twice keeps one.
    g.enqueue(vec![row("s1", "a", 1, t)]).await.unwrap();
    let due = g.outbox("s1", t, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.jti.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(due[0].set, "set-a");
    g.outbox_failed("s1", "a", UnixMillis(t.0 + 5_000), "503").await.unwrap();
    let due = g.outbox("s1", t, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.jti.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    let retry = g.outbox("s1", UnixMillis(t.0 + 5_000), 1).await.unwrap();
    assert_eq!((retry[0].jti.as_str(), retry[0].attempts, retry[0].last_error.as_deref()), ("a", 1, Some("503")));
    assert_eq!(g.acknowledge("s1", vec!["b".into(), "zz".into()]).await.unwrap(), 1);
    assert_eq!(g.outbox_depth("s1").await.unwrap(), 2);
    // Another owner cannot take a stream over by id, nor create one with a taken id.
    let read = g.stream("s1").await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    let hijack = Stream { owner: "tool:other".into(), status: "disabled".into(), ..read.clone() };
    assert!(matches!(g.put_stream(hijack, vec![], None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(g.put_stream(stream("s1", "tool:other"), vec![], None).await, Err(StoreError::Conflict(_))));
    let kept = g.stream("s1").await.unwrap().unwrap();
    assert_eq!((kept.owner.as_str(), kept.status.as_str(), kept.version), ("tool:ticketing", "enabled", 1));
    // An update from a stale read is refused: the other writer's change is kept.
    let paused = Stream { status: "paused".into(), reason: Some("maintenance".into()), ..read.clone() };
    g.put_stream(paused, vec![], None).await.unwrap();
    let stale = Stream { config: "{\"changed\":true}".into(), ..read };
    assert!(matches!(g.put_stream(stale, vec![], None).await, Err(StoreError::Conflict(_))));
    let kept = g.stream("s1").await.unwrap().unwrap();
    assert_eq!((kept.status.as_str(), kept.config.as_str(), kept.version), ("paused", "{}", 2));
    // Stored disabled, a stream's queue goes with it, and the notice saying so is queued (in
    // the same transaction).
    assert_eq!(g.outbox_depth("s1").await.unwrap(), 2);
    g.put_stream(Stream { status: "disabled".into(), ..kept }, vec![row("s1", "notice", 9, t)], None).await.unwrap();
    let left = g.outbox("s1", UnixMillis(i64::MAX), 10).await.unwrap();
    assert_eq!(left.iter().map(|r| r.jti.as_str()).collect::<Vec<_>>(), ["notice"]);
    assert_eq!(g.streams(Some("tool:ticketing")).await.unwrap().len(), 1);
    assert_eq!(g.streams(None).await.unwrap().len(), 2);
    assert!(g.delete_stream("s1", ev(AuditAction::SsfStreamDelete)).await.unwrap());
    assert!(!g.delete_stream("s1", ev(AuditAction::SsfStreamDelete)).await.unwrap());
    assert_eq!(g.outbox_depth("s1").await.unwrap(), 0);
    assert_eq!(g.outbox_depth("s2").await.unwrap(), 1);
}

/// The first presenter of a token wins on every backend; settings need a workflow; the
/// newest recertification is kept.
pub async fn bearers_settings_and_recertifications(s: Arc<dyn Store>) {
    fixture(&*s).await;
    let g = s.governance();
    let t = now();
    let exp = UnixMillis(t.0 + 60_000);
    assert_eq!(g.bearer("j1", "t-1", "addr:10.0.0.1", t, exp).await.unwrap(), "addr:10.0.0.1");
    assert_eq!(g.bearer("j1", "t-1", "addr:10.0.0.2", t, exp).await.unwrap(), "addr:10.0.0.1");
    assert_eq!(g.prune_bearers(UnixMillis(exp.0 + 1)).await.unwrap(), 1);
    assert_eq!(g.bearer("j1", "t-1", "addr:10.0.0.2", t, exp).await.unwrap(), "addr:10.0.0.2");

    let missing = g.set_settings("nope", "{}".into(), t, ev(AuditAction::GovernanceUpdate)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    g.set_settings("deploy", r#"{"a":1}"#.into(), t, ev(AuditAction::GovernanceUpdate)).await.unwrap();
    g.set_settings("deploy", r#"{"a":2}"#.into(), t, ev(AuditAction::GovernanceUpdate)).await.unwrap();
    assert_eq!(g.settings().await.unwrap(), vec![("deploy".to_owned(), r#"{"a":2}"#.to_owned())]);

    let r = |at: i64, by: &str| Recertification {
        kind: "agent".into(),
        id: "bot".into(),
        at: UnixMillis(at),
        by: by.into(),
        reason: "still needed".into(),
    };
    g.recertify(r(t.0, "h-new"), ev(AuditAction::Recertify)).await.unwrap();
    g.recertify(r(t.0 - 1_000, "h-old"), ev(AuditAction::Recertify)).await.unwrap();
    let all = g.recertifications().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].by.as_str(), all[0].at), ("h-new", t));
}

/// A live task is extended (never shortened); an ended task, or one of a suspended workflow,
/// is not; the cached snapshot shows the new expiry at once.
pub async fn tasks_renew_only_while_live(s: Arc<dyn Store>) {
    use remit_core::model::{Kill, KillTarget, TaskState};
    let inst = fixture(&*s).await;
    let id = s.identity();
    let t = crate::conformance::task("deploy", "bot", Some(&inst.id), None);
    id.create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let later = UnixMillis(t.expires_at.0 + 60_000);
    id.renew_task(&t.id, later, ev(AuditAction::TaskRenew)).await.unwrap();
    assert_eq!(id.task_snapshot(&t.id).await.unwrap().unwrap().task.expires_at, later);
    let shorter = id.renew_task(&t.id, t.expires_at, ev(AuditAction::TaskRenew)).await;
    assert!(matches!(shorter, Err(StoreError::Conflict(_))), "{shorter:?}");
    id.end_task(&t.id, TaskState::Completed, now(), "admin", None).await.unwrap();
    let ended = id.renew_task(&t.id, UnixMillis(later.0 + 1), ev(AuditAction::TaskRenew)).await;
    assert!(matches!(ended, Err(StoreError::Conflict(_))), "{ended:?}");
    // A suspended workflow's tasks cannot be renewed (the kill ended them anyway).
    let u = crate::conformance::task("deploy", "bot", Some(&inst.id), None);
    id.create_task(u.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let wf = remit_core::ids::WorkflowName::parse("deploy").unwrap();
    id.kill(Kill { target: KillTarget::Workflow(wf), actor: "admin".into(), reason: "x".into(), at: now() })
        .await
        .unwrap();
    let r = id.renew_task(&u.id, UnixMillis(u.expires_at.0 + 1), ev(AuditAction::TaskRenew)).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

/// An accepted reuse is kept per agent (a later acceptance replaces it); an unknown agent is
/// refused.
pub async fn reuse_acceptances_round_trip(s: Arc<dyn Store>) {
    fixture(&*s).await;
    let g = s.governance();
    let t = now();
    let a = |by: &str| super::ReuseAcceptance {
        agent: "bot".into(),
        workflows: vec!["deploy".into(), "ops".into()],
        by: by.into(),
        reason: "same team".into(),
        at: t,
        expires_at: UnixMillis(t.0 + 1_000),
    };
    g.accept_reuse(a("h-1"), ev(AuditAction::ReuseAccept)).await.unwrap();
    g.accept_reuse(a("h-2"), ev(AuditAction::ReuseAccept)).await.unwrap();
    assert_eq!(g.reuse_acceptances().await.unwrap(), vec![a("h-2")]);
    let mut nobody = a("h-1");
    nobody.agent = "nobody".into();
    let r = g.accept_reuse(nobody, ev(AuditAction::ReuseAccept)).await;
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
}
