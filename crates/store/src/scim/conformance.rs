//! The SCIM area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::human::{Human, HumanState, new_human};
use remit_core::ids::HumanId;
use remit_core::time::UnixMillis;

use super::{HumanWrite, Membership, ScimKind, ScimResource};
use crate::conformance::{ev, install, now, rnd, verify_chain, wf_name, workflow};
use crate::{Store, StoreError};

fn human(email: &str) -> Human {
    new_human(HumanId::from_random(rnd()), email, "", HumanState::Active, vec![], vec![], now()).unwrap()
}

fn res(id: &str, kind: ScimKind, name: &str, version: u64, at: UnixMillis) -> ScimResource {
    ScimResource {
        id: id.into(),
        kind,
        name: name.into(),
        external_id: Some(format!("ext-{name}")),
        resource: format!("{{\"userName\":\"{name}\"}}"),
        version,
        created_at: now(),
        updated_at: at,
    }
}

pub async fn users_are_humans_and_deleting_one_deactivates_it(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let sc = s.scim();
    let h = human("alice@example.com");
    let id = h.id.to_string();
    sc.write_user(
        res(&id, ScimKind::User, "alice@example.com", 1, now()),
        None,
        HumanWrite::Insert(h.clone()),
        ev(AuditAction::HumanCreate),
    )
    .await
    .unwrap();
    assert_eq!(s.humans().get(&h.id).await.unwrap(), Some(h.clone()), "the user is the human");
    let got = sc.get(ScimKind::User, &id).await.unwrap().unwrap();
    assert_eq!((got.version, got.external_id.as_deref()), (1, Some("ext-alice@example.com")));
    assert_eq!(sc.get(ScimKind::Group, &id).await.unwrap(), None, "kinds are apart");

    // Names are unique (ignoring case) among live resources of a kind.
    let other = human("alice2@example.com");
    let dup = res(&other.id.to_string(), ScimKind::User, "ALICE@example.com", 1, now());
    assert!(matches!(
        sc.write_user(dup, None, HumanWrite::Insert(other.clone()), ev(AuditAction::HumanCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.humans().get(&other.id).await.unwrap(), None, "nothing of a refused write stays");

    // Replacing: compare-and-set on the version, the human's attributes with it.
    let t1 = UnixMillis(now().0 + 10);
    let renamed = Human { display_name: "Alice".into(), updated_at: t1, ..h.clone() };
    let up = HumanWrite::Update { human: renamed.clone(), read_at: h.updated_at };
    sc.write_user(res(&id, ScimKind::User, "alice@example.com", 2, t1), Some(1), up, ev(AuditAction::HumanUpdate))
        .await
        .unwrap();
    let stale = HumanWrite::Update { human: renamed.clone(), read_at: t1 };
    assert!(matches!(
        sc.write_user(
            res(&id, ScimKind::User, "alice@example.com", 2, t1),
            Some(1),
            stale,
            ev(AuditAction::HumanUpdate)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.humans().get(&h.id).await.unwrap().unwrap().display_name, "Alice");

    // `active: false` deactivates (sessions revoked, what she owns orphaned) in the same write …
    let mut wf = workflow("deploy");
    wf.owner = "alice@example.com".into();
    wf.owner_id = Some(HumanId::from_random(rnd()));
    s.identity().create_workflow(wf, ev(AuditAction::WorkflowCreate)).await.unwrap();
    let t2 = UnixMillis(t1.0 + 10);
    let off = HumanWrite::Deactivate { reason: "disabled at the IdP".into() };
    let d = sc
        .write_user(
            res(&id, ScimKind::User, "alice@example.com", 3, t2),
            Some(2),
            off,
            ev(AuditAction::HumanDeactivate),
        )
        .await
        .unwrap()
        .expect("a deactivation report");
    assert_eq!(d.workflows_orphaned, vec![wf_name("deploy")]);
    assert_eq!(s.humans().get(&h.id).await.unwrap().unwrap().state, HumanState::Deactivated);
    // … and `active: true` brings her back.
    let t3 = UnixMillis(t2.0 + 10);
    let back = Human { state: HumanState::Active, updated_at: t3, deactivated_at: None, ..renamed.clone() };
    sc.write_user(
        res(&id, ScimKind::User, "alice@example.com", 4, t3),
        Some(3),
        HumanWrite::Reactivate { human: back },
        ev(AuditAction::HumanUpdate),
    )
    .await
    .unwrap();
    assert_eq!(s.humans().get(&h.id).await.unwrap().unwrap().state, HumanState::Active);

    // Deleting: gone from SCIM, the human deactivated and kept; the name is free again.
    let d =
        sc.delete(ScimKind::User, &id, vec![], UnixMillis(t3.0 + 10), ev(AuditAction::HumanDeactivate)).await.unwrap();
    assert!(d.is_some());
    assert_eq!(sc.get(ScimKind::User, &id).await.unwrap(), None);
    let kept = s.humans().get(&h.id).await.unwrap().unwrap();
    assert_eq!(kept.state, HumanState::Deactivated);
    assert!(matches!(
        sc.delete(ScimKind::User, &id, vec![], now(), ev(AuditAction::HumanDeactivate)).await,
        Err(StoreError::NotFound { .. })
    ));
    let again = human("alice-new@example.com");
    let r = res(&again.id.to_string(), ScimKind::User, "alice@example.com", 1, now());
    sc.write_user(r, None, HumanWrite::Insert(again), ev(AuditAction::HumanCreate)).await.unwrap();
    verify_chain(s).await;
}

pub async fn groups_carry_their_members_and_lists_page(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let sc = s.scim();
    let (a, b) = (human("a@example.com"), human("b@example.com"));
    for h in [&a, &b] {
        let r = res(&h.id.to_string(), ScimKind::User, &h.email, 1, now());
        sc.write_user(r, None, HumanWrite::Insert(h.clone()), ev(AuditAction::HumanCreate)).await.unwrap();
    }
    let g = "g-00000000000000000000000000000001";
    let add = Membership { add: vec![a.id.clone(), b.id.clone()], ..Default::default() };
    sc.write_group(res(g, ScimKind::Group, "sre", 1, now()), None, add, ev(AuditAction::HumanUpdate)).await.unwrap();
    assert_eq!(s.humans().get(&a.id).await.unwrap().unwrap().groups, vec!["sre"]);
    // Renamed, and b removed.
    let t = UnixMillis(now().0 + 100);
    let m = Membership { add: vec![a.id.clone()], remove: vec![b.id.clone()], old_name: Some("sre".into()) };
    sc.write_group(res(g, ScimKind::Group, "oncall", 2, t), Some(1), m, ev(AuditAction::HumanUpdate)).await.unwrap();
    assert_eq!(s.humans().get(&a.id).await.unwrap().unwrap().groups, vec!["oncall"]);
    assert!(s.humans().get(&b.id).await.unwrap().unwrap().groups.is_empty());
    // An unknown member is refused, and the group stays as it was.
    let ghost = Membership { add: vec![HumanId::from_random(rnd())], ..Default::default() };
    let r = res(g, ScimKind::Group, "oncall", 3, t);
    assert!(matches!(
        sc.write_group(r, Some(2), ghost, ev(AuditAction::HumanUpdate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(sc.get(ScimKind::Group, g).await.unwrap().unwrap().version, 2);

    // Lists: by creation, filtered by name (any case), paged from 1.
    let (n, users) = sc.list(ScimKind::User, None, 1, 10).await.unwrap();
    assert_eq!((n, users.len()), (2, 2));
    let (n, page) = sc.list(ScimKind::User, None, 2, 1).await.unwrap();
    assert_eq!((n, page[0].name.as_str()), (2, "b@example.com"));
    let (n, one) = sc.list(ScimKind::User, Some("A@EXAMPLE.COM".into()), 1, 10).await.unwrap();
    assert_eq!((n, one.len()), (1, 1));
    let (n, none) = sc.list(ScimKind::User, Some("nobody@example.com".into()), 1, 10).await.unwrap();
    assert_eq!((n, none.len()), (0, 0));
    let (n, past) = sc.list(ScimKind::User, None, 5, 10).await.unwrap();
    assert_eq!((n, past.len()), (2, 0));

    // Deleting the group takes it from its members.
    sc.delete(ScimKind::Group, g, vec![a.id.clone()], now(), ev(AuditAction::HumanUpdate)).await.unwrap();
    assert!(s.humans().get(&a.id).await.unwrap().unwrap().groups.is_empty());
    assert_eq!(sc.list(ScimKind::Group, None, 1, 10).await.unwrap().0, 0);
    verify_chain(s).await;
}
