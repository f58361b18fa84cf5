//! The policy area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;

use crate::conformance::{ev, expect_change, install, now, verify_chain};
use crate::{AuditFilter, Store, StoreError};

pub async fn policy_versions_and_entities(store: Arc<dyn Store>) {
    use crate::StoredEntity;
    let s = &*store;
    install(s).await;
    assert_eq!(s.policy().active_set().await.unwrap(), None);
    let mut rx = s.subscribe();
    let v1 = s.policy().put_set("{\"policies\":[]}".into(), now(), "admin", ev(AuditAction::PolicyPush)).await.unwrap();
    let v2 = s.policy().put_set("{\"b\":2}".into(), now(), "admin", ev(AuditAction::PolicyPush)).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    let active = s.policy().active_set().await.unwrap().unwrap();
    assert_eq!((active.version, active.bundle.as_str(), active.created_by.as_str()), (2, "{\"b\":2}", "admin"));
    expect_change(&mut rx, &crate::Change::Policy).await;
    let pushes = s
        .audit()
        .list(AuditFilter { action: Some("policy.push".into()), limit: 10, ..Default::default() })
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
    s.policy()
        .put_entities(vec![rick(r#"{"roles":["admin"]}"#, &["PID-1"])], ev(AuditAction::EntitiesPush))
        .await
        .unwrap();
    assert_eq!(
        s.policy().entity("Human", "rick@the-citadel.com").await.unwrap().unwrap().attrs,
        r#"{"roles":["admin"]}"#
    );
    assert_eq!(s.policy().entity("Human", "PID-1").await.unwrap().unwrap().id, "rick@the-citadel.com");
    assert_eq!(s.policy().entity("Todo", "PID-1").await.unwrap(), None);
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
    s.policy().put_entities(many, ev(AuditAction::EntitiesPush)).await.unwrap();
    let page1 = s.policy().list_entities("Todo", None, 3).await.unwrap();
    let page2 = s.policy().list_entities("Todo", Some(page1[2].id.clone()), 3).await.unwrap();
    let ids: Vec<String> = page1.iter().chain(&page2).map(|e| e.id.clone()).collect();
    assert_eq!(ids, (0..5).map(|i| format!("todo-{i}")).collect::<Vec<_>>());
    assert_eq!(s.policy().list_entities("Human", None, 10).await.unwrap().len(), 1);
    // Replacing an entity replaces its aliases.
    s.policy()
        .put_entities(vec![rick(r#"{"roles":["viewer"]}"#, &["PID-2"])], ev(AuditAction::EntitiesPush))
        .await
        .unwrap();
    assert_eq!(s.policy().entity("Human", "PID-1").await.unwrap(), None);
    assert_eq!(s.policy().entity("Human", "PID-2").await.unwrap().unwrap().attrs, r#"{"roles":["viewer"]}"#);
    // An alias taken by another entity refuses the whole push.
    let head = s.audit().head().await.unwrap();
    let morty = StoredEntity { id: "morty@the-citadel.com".into(), ..rick("{}", &["PID-2"]) };
    let beth = StoredEntity { id: "beth@the-smiths.com".into(), ..rick("{}", &["PID-3"]) };
    assert!(matches!(
        s.policy().put_entities(vec![beth, morty], ev(AuditAction::EntitiesPush)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.policy().entity("Human", "beth@the-smiths.com").await.unwrap(), None);
    assert_eq!(s.audit().head().await.unwrap(), head);
    verify_chain(s).await;
}
