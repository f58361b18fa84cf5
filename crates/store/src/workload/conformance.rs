//! The workloads area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::ids::{EntryId, InstanceId};
use remit_core::model::{Kill, KillTarget};
use remit_core::workload::{Entry, Selector};

use crate::conformance::{agent_name, ev, fixture, instance, now, rnd, wf_name};
use crate::{Store, StoreError};

fn entry(selectors: &[&str], workflow: Option<&str>) -> Entry {
    Entry {
        id: EntryId::from_random(rnd()),
        selectors: selectors.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        agent: agent_name("bot"),
        workflow: workflow.map(wf_name),
        hint: Some("internal".into()),
        created_at: now(),
        created_by: "admin".into(),
    }
}

pub async fn entries_are_unique_and_instances_need_an_enabled_agent(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let w = s.workload();
    let e = entry(&["unix:uid:1000", "unix:path:/opt/bot"], Some("deploy"));
    w.create_entry(e.clone(), ev(AuditAction::EntryCreate)).await.unwrap();
    assert_eq!(w.entry(&e.id).await.unwrap().unwrap(), e);
    // The same selector set (in another order) is refused.
    let same = entry(&["unix:path:/opt/bot", "unix:uid:1000"], None);
    assert!(matches!(w.create_entry(same, ev(AuditAction::EntryCreate)).await, Err(StoreError::Conflict(_))));
    // An unknown agent or workflow is refused.
    let mut ghost = entry(&["unix:uid:7"], None);
    ghost.agent = agent_name("ghost");
    assert!(matches!(w.create_entry(ghost, ev(AuditAction::EntryCreate)).await, Err(StoreError::Conflict(_))));
    let nowf = entry(&["unix:uid:8"], Some("nope"));
    assert!(matches!(w.create_entry(nowf, ev(AuditAction::EntryCreate)).await, Err(StoreError::Conflict(_))));
    let second = entry(&["unix:uid:1000"], None);
    w.create_entry(second.clone(), ev(AuditAction::EntryCreate)).await.unwrap();
    assert_eq!(w.entries().await.unwrap().len(), 2);
    w.delete_entry(&second.id, ev(AuditAction::EntryDelete)).await.unwrap();
    assert!(matches!(w.delete_entry(&second.id, ev(AuditAction::EntryDelete)).await, Err(StoreError::NotFound { .. })));
    assert_eq!(w.entries().await.unwrap(), vec![e]);

    // An attested instance is an instance like any other, held to its workflow.
    let mut i = instance("bot");
    i.workflow = Some(wf_name("deploy"));
    w.attest_instance(i.clone(), ev(AuditAction::WorkloadAttest)).await.unwrap();
    assert_eq!(s.identity().instance(&i.id).await.unwrap().unwrap(), i);
    // One attested by a platform token is never renewed past the token's expiry.
    let mut capped = instance("bot");
    capped.id = InstanceId::from_random(rnd());
    let cap = now().plus_secs(120);
    capped.renew_until = Some(cap);
    w.attest_instance(capped.clone(), ev(AuditAction::WorkloadAttest)).await.unwrap();
    s.identity().renew_instance(&capped.id, now().plus_secs(3600), ev(AuditAction::InstanceRenew)).await.unwrap();
    let got = s.identity().instance(&capped.id).await.unwrap().unwrap();
    assert_eq!(got.expires_at, cap);
    // Not once its agent is disabled.
    let kill =
        Kill { target: KillTarget::Agent(agent_name("bot")), actor: "admin".into(), reason: "x".into(), at: now() };
    s.identity().kill(kill).await.unwrap();
    let mut j = instance("bot");
    j.id = InstanceId::from_random(rnd());
    assert!(matches!(w.attest_instance(j, ev(AuditAction::WorkloadAttest)).await, Err(StoreError::Conflict(_))));
}
