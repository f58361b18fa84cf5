//! The humans area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::human::{External, Human, HumanState, Role, Session, new_human};
use remit_core::ids::{HumanId, SessionId};

use crate::conformance::{agent, ev, install, now, rnd, verify_chain, wf_name, workflow};
use crate::{Change, Store, StoreError};

fn human(email: &str, state: HumanState) -> Human {
    new_human(HumanId::from_random(rnd()), email, "A Person", state, vec![Role::Operator], vec!["sre".into()], now())
        .unwrap()
}

fn session(h: &Human, ttl: u64) -> Session {
    Session {
        id: SessionId::from_random(rnd()),
        human: h.id.clone(),
        method: "oidc:corp".into(),
        access_hash: "a1".into(),
        refresh_hash: "r1".into(),
        created_at: now(),
        expires_at: now().plus_secs(ttl),
        refresh_until: now().plus_secs(ttl * 10),
        revoked_at: None,
        revoke_reason: None,
    }
}

fn ext(sub: &str) -> External {
    External { issuer: "https://idp.example".into(), subject: sub.into() }
}

pub async fn humans_round_trip(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let hs = s.humans();
    let mut alice = human("alice@example.com", HumanState::Active);
    alice.external = Some(ext("1"));
    hs.create(alice.clone(), ev(AuditAction::HumanCreate)).await.unwrap();
    let bob = human("bob@example.com", HumanState::Unverified);
    hs.create(bob.clone(), ev(AuditAction::HumanCreate)).await.unwrap();
    assert_eq!(hs.get(&alice.id).await.unwrap().as_ref(), Some(&alice));
    assert_eq!(hs.by_email("bob@example.com").await.unwrap().as_ref(), Some(&bob));
    assert_eq!(hs.by_external("https://idp.example", "1").await.unwrap().as_ref(), Some(&alice));
    assert_eq!(hs.by_external("https://idp.example", "2").await.unwrap(), None);
    assert_eq!(hs.get(&HumanId::from_random(rnd())).await.unwrap(), None);

    // The email and the provider identity are each one human's.
    let dup = human("alice@example.com", HumanState::Active);
    assert!(matches!(hs.create(dup, ev(AuditAction::HumanCreate)).await, Err(StoreError::Conflict(_))));
    let mut dup = human("carol@example.com", HumanState::Active);
    dup.external = Some(ext("1"));
    assert!(matches!(hs.create(dup, ev(AuditAction::HumanCreate)).await, Err(StoreError::Conflict(_))));

    // Listing: by email, filtered, paged.
    let all: Vec<_> = hs.list(None, None, 10).await.unwrap().into_iter().map(|h| h.email).collect();
    assert_eq!(all, ["alice@example.com", "bob@example.com"]);
    let unverified = hs.list(Some(HumanState::Unverified), None, 10).await.unwrap();
    assert_eq!(unverified, vec![bob.clone()]);
    let page2 = hs.list(None, Some("alice@example.com".into()), 1).await.unwrap();
    assert_eq!(page2, vec![bob.clone()]);

    // Updates are compare-and-set on the time they were read.
    let read_at = bob.updated_at;
    let newer = Human { display_name: "Bob".into(), updated_at: read_at.plus_secs(1), ..bob.clone() };
    hs.update(newer.clone(), read_at, ev(AuditAction::HumanUpdate)).await.unwrap();
    let stale = Human { display_name: "Robert".into(), updated_at: read_at.plus_secs(2), ..bob.clone() };
    assert!(matches!(hs.update(stale, read_at, ev(AuditAction::HumanUpdate)).await, Err(StoreError::Conflict(_))));
    assert_eq!(hs.get(&bob.id).await.unwrap().unwrap().display_name, "Bob");
    let ghost = human("ghost@example.com", HumanState::Active);
    assert!(matches!(
        hs.update(ghost.clone(), ghost.updated_at, ev(AuditAction::HumanUpdate)).await,
        Err(StoreError::NotFound { .. })
    ));

    // `ensure` finds the holder of an email, or inserts the placeholder.
    let got = hs.ensure(human("bob@example.com", HumanState::Unverified), ev(AuditAction::HumanCreate)).await.unwrap();
    assert_eq!(got.id, bob.id);
    let dave = human("dave@example.com", HumanState::Unverified);
    assert_eq!(hs.ensure(dave.clone(), ev(AuditAction::HumanCreate)).await.unwrap(), dave);
    assert_eq!(hs.by_email("dave@example.com").await.unwrap(), Some(dave));
    // init + 2 creates + 1 update + 1 ensure that inserted
    assert_eq!(verify_chain(s).await, 5);
}

pub async fn sign_in_and_sessions(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let hs = s.humans();
    let mut rx = s.subscribe();
    let alice = human("alice@example.com", HumanState::Active);
    let s1 = session(&alice, 600);
    hs.sign_in(alice.clone(), None, s1.clone(), vec![ev(AuditAction::HumanCreate), ev(AuditAction::SessionCreate)])
        .await
        .unwrap();
    crate::conformance::expect_change(&mut rx, &Change::Session(s1.id.clone())).await;
    assert_eq!(hs.session(&s1.id).await.unwrap(), Some((s1.clone(), alice.clone())));
    assert_eq!(hs.session(&SessionId::from_random(rnd())).await.unwrap(), None);

    // A second sign-in updates the human (compare-and-set) and adds a session.
    let again = Human { groups: vec!["eng".into()], updated_at: alice.updated_at.plus_secs(1), ..alice.clone() };
    let s2 = Session { created_at: now().plus_secs(1), ..session(&alice, 600) };
    hs.sign_in(again.clone(), Some(alice.updated_at), s2.clone(), vec![ev(AuditAction::SessionCreate)]).await.unwrap();
    let stale = Human { updated_at: alice.updated_at.plus_secs(2), ..alice.clone() };
    let s3 = session(&alice, 600);
    assert!(matches!(
        hs.sign_in(stale, Some(alice.updated_at), s3.clone(), vec![ev(AuditAction::SessionCreate)]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(hs.session(&s3.id).await.unwrap(), None, "a refused sign-in leaves no session");
    let ids: Vec<_> = hs.sessions_of(&alice.id).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![s2.id.clone(), s1.id.clone()]);

    // Only an active human gets a session.
    let bob = human("bob@example.com", HumanState::Unverified);
    hs.create(bob.clone(), ev(AuditAction::HumanCreate)).await.unwrap();
    let sb = session(&bob, 600);
    assert!(matches!(
        hs.sign_in(bob.clone(), Some(bob.updated_at), sb, vec![ev(AuditAction::SessionCreate)]).await,
        Err(StoreError::Conflict(_))
    ));

    // A refresh secret works once.
    let next = Session { access_hash: "a2".into(), refresh_hash: "r2".into(), ..s1.clone() };
    hs.refresh(next.clone(), "r1", ev(AuditAction::SessionRefresh)).await.unwrap();
    let replay = Session { access_hash: "a3".into(), refresh_hash: "r3".into(), ..s1.clone() };
    assert!(matches!(hs.refresh(replay, "r1", ev(AuditAction::SessionRefresh)).await, Err(StoreError::Conflict(_))));
    assert_eq!(hs.session(&s1.id).await.unwrap().unwrap().0.refresh_hash, "r2");

    // The identity provider's refresh token rides along, replaced on every renewal.
    assert_eq!(hs.idp_refresh(&s1.id).await.unwrap(), None);
    hs.put_idp_refresh(&s1.id, "corp", vec![1, 2], now()).await.unwrap();
    hs.put_idp_refresh(&s1.id, "corp", vec![3, 4], now()).await.unwrap();
    assert_eq!(hs.idp_refresh(&s1.id).await.unwrap(), Some(("corp".to_owned(), vec![3, 4])));
    assert_eq!(hs.idp_sessions(now(), None, 10).await.unwrap(), vec![(s1.id.clone(), alice.id.clone())]);
    assert!(hs.idp_sessions(now(), Some(s1.id.clone()), 10).await.unwrap().is_empty(), "paged by id");
    assert!(hs.idp_sessions(s1.refresh_until, None, 10).await.unwrap().is_empty(), "ended sessions are not swept");

    // Revocation: once, and a revoked session never refreshes.
    let revoked = hs.revoke_session(&s1.id, now(), "signed out", ev(AuditAction::SessionRevoke)).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.revoke_reason.as_deref(), Some("signed out"));
    crate::conformance::expect_change(&mut rx, &Change::Session(s1.id.clone())).await;
    assert!(matches!(
        hs.revoke_session(&s1.id, now(), "again", ev(AuditAction::SessionRevoke)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        hs.revoke_session(&SessionId::from_random(rnd()), now(), "x", ev(AuditAction::SessionRevoke)).await,
        Err(StoreError::NotFound { .. })
    ));
    let after = Session { access_hash: "a4".into(), refresh_hash: "r4".into(), ..next };
    assert!(matches!(hs.refresh(after, "r2", ev(AuditAction::SessionRefresh)).await, Err(StoreError::Conflict(_))));
    verify_chain(s).await;
}

pub async fn deactivation_revokes_sessions_and_orphans_what_they_own(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let hs = s.humans();
    let alice = human("alice@example.com", HumanState::Active);
    let (s1, s2) = (session(&alice, 600), session(&alice, 600));
    hs.sign_in(alice.clone(), None, s1.clone(), vec![ev(AuditAction::SessionCreate)]).await.unwrap();
    let refreshed = Human { updated_at: alice.updated_at.plus_secs(1), ..alice.clone() };
    hs.sign_in(refreshed, Some(alice.updated_at), s2.clone(), vec![ev(AuditAction::SessionCreate)]).await.unwrap();
    let bob = human("bob@example.com", HumanState::Active);
    let sb = session(&bob, 600);
    hs.sign_in(bob.clone(), None, sb.clone(), vec![ev(AuditAction::SessionCreate)]).await.unwrap();

    let owned_by = |w: &str, h: &Human| {
        let mut wf = workflow(w);
        wf.owner = h.email.clone();
        wf.owner_id = Some(h.id.clone());
        wf
    };
    s.identity().create_workflow(owned_by("deploy", &alice), ev(AuditAction::WorkflowCreate)).await.unwrap();
    s.identity().create_workflow(owned_by("billing", &bob), ev(AuditAction::WorkflowCreate)).await.unwrap();
    let mut bot = agent("bot", &["deploy"]);
    bot.owner = alice.email.clone();
    bot.owner_id = Some(alice.id.clone());
    s.identity().create_agent(bot, ev(AuditAction::AgentCreate)).await.unwrap();

    let mut rx = s.subscribe();
    let d = hs.deactivate(&alice.id, now(), "left the company", ev(AuditAction::HumanDeactivate)).await.unwrap();
    let mut both = vec![s1.id.clone(), s2.id.clone()];
    both.sort();
    assert_eq!(d.sessions_revoked, both);
    assert_eq!(d.workflows_orphaned, vec![wf_name("deploy")]);
    assert_eq!(d.agents_orphaned.iter().map(ToString::to_string).collect::<Vec<_>>(), ["bot"]);
    assert_eq!(d.human.state, HumanState::Deactivated);
    crate::conformance::expect_change(&mut rx, &Change::Human(alice.id.clone())).await;

    // All of it, in the store.
    for sid in [&s1.id, &s2.id] {
        let (sess, h) = hs.session(sid).await.unwrap().unwrap();
        assert!(sess.revoked_at.is_some());
        assert_eq!(sess.revoke_reason.as_deref(), Some("left the company"));
        assert_eq!(h.state, HumanState::Deactivated);
    }
    assert!(hs.session(&sb.id).await.unwrap().unwrap().0.revoked_at.is_none(), "bob's session stays");
    assert!(s.identity().workflow(&wf_name("deploy")).await.unwrap().unwrap().orphaned_at.is_some());
    assert!(s.identity().workflow(&wf_name("billing")).await.unwrap().unwrap().orphaned_at.is_none());
    let bot = s.identity().agent(&crate::conformance::agent_name("bot")).await.unwrap().unwrap();
    assert!(bot.orphaned_at.is_some());

    // The record stays; it never signs in again, and deactivating twice is refused.
    let gone = hs.get(&alice.id).await.unwrap().unwrap();
    assert!(gone.deactivated_at.is_some());
    let back = Human { state: HumanState::Active, updated_at: gone.updated_at.plus_secs(1), ..gone.clone() };
    assert!(matches!(
        hs.sign_in(back, Some(gone.updated_at), session(&alice, 60), vec![ev(AuditAction::SessionCreate)]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        hs.deactivate(&alice.id, now(), "again", ev(AuditAction::HumanDeactivate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        hs.deactivate(&HumanId::from_random(rnd()), now(), "x", ev(AuditAction::HumanDeactivate)).await,
        Err(StoreError::NotFound { .. })
    ));

    // A deactivated human owns nothing new; an unknown owner becomes an unverified human.
    let mut late = workflow("late");
    late.owner = alice.email.clone();
    late.owner_id = Some(HumanId::from_random(rnd()));
    assert!(matches!(
        s.identity().create_workflow(late, ev(AuditAction::WorkflowCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.identity().workflow(&wf_name("late")).await.unwrap().is_none(), "nothing of it stays");
    let mut fresh = workflow("fresh");
    fresh.owner = "erin@example.com".into();
    let proposed = HumanId::from_random(rnd());
    fresh.owner_id = Some(proposed.clone());
    s.identity().create_workflow(fresh, ev(AuditAction::WorkflowCreate)).await.unwrap();
    let erin = hs.by_email("erin@example.com").await.unwrap().unwrap();
    assert_eq!((erin.id.clone(), erin.state), (proposed, HumanState::Unverified));
    let mut again = agent("bot3", &["fresh"]);
    again.owner = "erin@example.com".into();
    again.owner_id = Some(HumanId::from_random(rnd()));
    s.identity().create_agent(again, ev(AuditAction::AgentCreate)).await.unwrap();
    let bot3 = s.identity().agent(&crate::conformance::agent_name("bot3")).await.unwrap().unwrap();
    assert_eq!(bot3.owner_id, Some(erin.id), "one human per email");

    // Someone takes the orphan over: linked to them, no longer orphaned.
    let carol = HumanId::from_random(rnd());
    s.identity()
        .set_owner(
            crate::Owned::Workflow(wf_name("deploy")),
            "carol@example.com",
            carol.clone(),
            ev(AuditAction::WorkflowUpdate),
        )
        .await
        .unwrap();
    let deploy = s.identity().workflow(&wf_name("deploy")).await.unwrap().unwrap();
    assert_eq!(
        (deploy.owner.as_str(), deploy.owner_id.as_ref(), deploy.orphaned_at),
        ("carol@example.com", Some(&carol), None)
    );
    assert!(
        matches!(
            s.identity()
                .set_owner(
                    crate::Owned::Workflow(wf_name("deploy")),
                    &alice.email,
                    HumanId::from_random(rnd()),
                    ev(AuditAction::WorkflowUpdate)
                )
                .await,
            Err(StoreError::Conflict(_))
        ),
        "a deactivated human takes nothing over"
    );
    assert!(matches!(
        s.identity()
            .set_owner(
                crate::Owned::Workflow(wf_name("nope")),
                "carol@example.com",
                carol.clone(),
                ev(AuditAction::WorkflowUpdate)
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // The audit record names what it revoked and orphaned.
    let filter = crate::AuditFilter { action: Some("human.deactivate".into()), limit: 10, ..Default::default() };
    let recs = s.audit().list(filter).await.unwrap();
    assert_eq!(recs.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&recs[0].event.detail).unwrap();
    assert_eq!(detail["workflows_orphaned"], serde_json::json!(["deploy"]));
    assert_eq!(detail["agents_orphaned"], serde_json::json!(["bot"]));
    assert_eq!(detail["sessions_revoked"].as_array().unwrap().len(), 2);
    verify_chain(s).await;
}

pub async fn one_refresh_wins_under_concurrency(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let alice = human("alice@example.com", HumanState::Active);
    let s1 = session(&alice, 600);
    s.humans().sign_in(alice, None, s1.clone(), vec![ev(AuditAction::SessionCreate)]).await.unwrap();
    let tries = (0..8).map(|n| {
        let store = store.clone();
        let next = Session { access_hash: format!("a{n}"), refresh_hash: format!("r-next-{n}"), ..s1.clone() };
        tokio::spawn(async move { store.humans().refresh(next, "r1", ev(AuditAction::SessionRefresh)).await })
    });
    let mut ok = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
}

pub async fn local_credentials_are_compare_and_set(store: Arc<dyn Store>) {
    use remit_core::human::LocalCredential;
    let s = &*store;
    install(s).await;
    let h = human("local@example.com", HumanState::Active);
    let c = LocalCredential {
        human: h.id.clone(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        totp: None,
        last_totp_step: None,
        failures: 0,
        locked_until: None,
        updated_at: now(),
    };
    s.humans().create_local(h.clone(), c.clone(), ev(AuditAction::HumanCreate)).await.unwrap();
    assert_eq!(s.humans().get(&h.id).await.unwrap(), Some(h.clone()));
    assert_eq!(s.humans().local_credential(&h.id).await.unwrap(), Some(c.clone()));
    let t1 = remit_core::time::UnixMillis(c.updated_at.0 + 1);
    let next = LocalCredential {
        totp: Some((vec![1, 2, 3], true)),
        last_totp_step: Some(9),
        failures: 2,
        updated_at: t1,
        ..c.clone()
    };
    s.humans().put_local_credential(next.clone(), c.updated_at, Some(ev(AuditAction::SessionCreate))).await.unwrap();
    assert_eq!(s.humans().local_credential(&h.id).await.unwrap(), Some(next.clone()));
    // A write from a stale read loses.
    assert!(matches!(
        s.humans().put_local_credential(c.clone(), c.updated_at, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.humans().local_credential(&HumanId::from_random(rnd())).await.unwrap(), None);
    verify_chain(s).await;
}
