//! The audit area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent, Checkpoint};

use crate::conformance::{fixture, install, now, verify_chain};
use crate::{AuditFilter, Store};

pub async fn checkpoints_and_filters(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let (seq, hash) = s.audit().head().await.unwrap();
    let cp = Checkpoint { seq, head_hash: hash, time: now(), key_id: "audit-1".into(), signature: "sig".into() };
    assert_eq!(s.audit().latest_checkpoint().await.unwrap(), None);
    s.audit().put_checkpoint(cp.clone()).await.unwrap();
    s.audit().put_checkpoint(cp.clone()).await.unwrap();
    assert_eq!(s.audit().checkpoints_after(0, 100).await.unwrap(), vec![cp.clone()]);
    assert_eq!(s.audit().latest_checkpoint().await.unwrap(), Some(cp.clone()));
    s.audit()
        .append(vec![
            AuditEvent::new(now(), "admin", AuditAction::TaskStart)
                .workflow("deploy")
                .task("t-00000000000000000000000000000001")
                .agent("bot"),
            AuditEvent::new(now(), "admin", AuditAction::TaskStart)
                .workflow("other")
                .task("t-00000000000000000000000000000002")
                .agent("bot"),
        ])
        .await
        .unwrap();
    let f = |w: Option<&str>, t: Option<&str>| AuditFilter {
        workflow: w.map(|w| remit_core::ids::WorkflowName::parse(w).unwrap()),
        task: t.map(|t| remit_core::ids::TaskId::parse(t).unwrap()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(s.audit().list(f(Some("other"), None)).await.unwrap().len(), 1);
    assert_eq!(
        s.audit().list(f(None, Some("t-00000000000000000000000000000001"))).await.unwrap()[0].event.task.as_deref(),
        Some("t-00000000000000000000000000000001")
    );
    let page = s.audit().list(AuditFilter { after_seq: seq, limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].seq, seq + 1);
    // The newest two, still in seq order.
    let (head, _) = s.audit().head().await.unwrap();
    let newest = s.audit().list(AuditFilter { limit: 2, newest_first: true, ..Default::default() }).await.unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![head - 1, head]);
    let future = s
        .audit()
        .list(AuditFilter { since: Some(now().plus_secs(60)), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert!(future.is_empty());
    verify_chain(s).await;
}

/// Checkpoints are read newest-first in one call and oldest-first page by page, so neither
/// start-up nor verification loads them all.
pub async fn checkpoints_page_in_order(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    for i in 1..=25u64 {
        let cp = Checkpoint {
            seq: i * 2,
            head_hash: format!("{i:064x}"),
            time: now(),
            key_id: "k".into(),
            signature: "s".into(),
        };
        s.audit().put_checkpoint(cp).await.unwrap();
    }
    assert_eq!(s.audit().latest_checkpoint().await.unwrap().unwrap().seq, 50);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.audit().checkpoints_after(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page.iter().map(|c| c.seq));
    }
    assert_eq!(seen, (1..=25u64).map(|i| i * 2).collect::<Vec<_>>());
    assert!(s.audit().checkpoints_after(u64::MAX, 10).await.unwrap().is_empty());
}
