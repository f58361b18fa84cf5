//! The tools area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::ids::{CredentialId, HumanId, ToolName};
use remit_core::model::{KillTarget, Sensitivity};
use remit_core::tool::{Credential, Tool, ToolClass, ToolState};

use crate::conformance::{ev, fixture, now, rnd, task, verify_chain};
use crate::{Store, StoreError};

pub(crate) fn tool(name: &str, audience: &str) -> Tool {
    Tool {
        name: ToolName::parse(name).unwrap(),
        audience: audience.into(),
        scopes: vec!["read".into(), "write".into()],
        max_ttl_secs: 120,
        classification: Sensitivity::Internal,
        class: ToolClass::Data,
        proxy: None,
        database: None,
        owner: "carol@example.com".into(),
        owner_id: Some(HumanId::from_random(rnd())),
        orphaned_at: None,
        state: ToolState::Active,
        created_at: now(),
        updated_at: now(),
        secret_hash: "ef".repeat(32),
    }
}

fn credential(task: &remit_core::ids::TaskId, tool: &str) -> Credential {
    Credential {
        id: CredentialId::from_random(rnd()),
        task: task.clone(),
        tool: ToolName::parse(tool).unwrap(),
        scopes: vec!["read".into()],
        jkt: Some("thumb".into()),
        issued_at: now(),
        expires_at: now().plus_secs(60),
        revoked_at: None,
    }
}

pub async fn tools_are_unique_and_disable_once(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let t = tool("tickets", "https://tickets.example");
    s.tools().create_tool(t.clone(), ev(AuditAction::ToolCreate)).await.unwrap();
    let got = s.tools().tool(&t.name).await.unwrap().unwrap();
    assert_eq!(got.scopes, t.scopes);
    assert_eq!(got.audience, t.audience);
    assert!(got.owner_id.is_some(), "the owner is linked to a human");
    assert_eq!(s.tools().tool_by_audience("https://tickets.example").await.unwrap().unwrap().name, t.name);
    assert!(s.tools().tool_by_audience("https://other").await.unwrap().is_none());
    // Same name, or same audience: refused.
    let same_name = tool("tickets", "https://elsewhere");
    assert!(matches!(
        s.tools().create_tool(same_name, ev(AuditAction::ToolCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    let same_aud = tool("other", "https://tickets.example");
    assert!(matches!(s.tools().create_tool(same_aud, ev(AuditAction::ToolCreate)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.tools().list_tools().await.unwrap().len(), 1);
    let dis = || ev(AuditAction::ToolDisable);
    s.tools().set_tool_state(&t.name, ToolState::Active, ToolState::Disabled, dis()).await.unwrap();
    assert!(matches!(
        s.tools().set_tool_state(&t.name, ToolState::Active, ToolState::Disabled, dis()).await,
        Err(StoreError::Conflict(_))
    ));
    let ghost = ToolName::parse("ghost").unwrap();
    assert!(matches!(
        s.tools().set_tool_state(&ghost, ToolState::Active, ToolState::Disabled, dis()).await,
        Err(StoreError::NotFound { .. })
    ));
    verify_chain(s).await;
}

pub async fn credentials_need_a_live_task_and_revoke_once(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.tools().create_tool(tool("tickets", "https://tickets.example"), ev(AuditAction::ToolCreate)).await.unwrap();
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let c = credential(&t.id, "tickets");
    s.tools().issue_credential(c.clone(), ev(AuditAction::TokenExchange)).await.unwrap();
    assert_eq!(s.tools().credential(&c.id).await.unwrap().unwrap(), c);
    assert!(s.tools().credential(&CredentialId::from_random(rnd())).await.unwrap().is_none());
    // Revoked once.
    let at = now();
    assert!(s.tools().revoke_credential(&c.id, at, ev(AuditAction::TokenRevoke)).await.unwrap());
    assert!(!s.tools().revoke_credential(&c.id, at, ev(AuditAction::TokenRevoke)).await.unwrap());
    assert_eq!(s.tools().credential(&c.id).await.unwrap().unwrap().revoked_at, Some(at));
    // A task that has ended gets no credential, and neither does a disabled tool.
    let kill = remit_core::model::Kill {
        target: KillTarget::Task(t.id.clone()),
        actor: "admin".into(),
        reason: "x".into(),
        at: now(),
    };
    s.identity().kill(kill).await.unwrap();
    let late = credential(&t.id, "tickets");
    assert!(matches!(
        s.tools().issue_credential(late, ev(AuditAction::TokenExchange)).await,
        Err(StoreError::Conflict(_))
    ));
    let t2 = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    // Expired credentials are pruned; live ones stay.
    assert_eq!(s.tools().prune_credentials(now().plus_secs(30)).await.unwrap(), 0, "it expires in 60 s");
    assert_eq!(s.tools().prune_credentials(now().plus_secs(3600)).await.unwrap(), 1);
    assert!(s.tools().credential(&c.id).await.unwrap().is_none());
    let name = ToolName::parse("tickets").unwrap();
    s.tools()
        .set_tool_state(&name, ToolState::Active, ToolState::Disabled, ev(AuditAction::ToolDisable))
        .await
        .unwrap();
    let off = credential(&t2.id, "tickets");
    assert!(matches!(
        s.tools().issue_credential(off, ev(AuditAction::TokenExchange)).await,
        Err(StoreError::Conflict(_))
    ));
    verify_chain(s).await;
}

pub async fn dpop_proofs_are_single_use_and_presentations_recorded(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let t0 = now();
    assert!(s.tools().use_proof("k1", t0, t0.plus_secs(60)).await.unwrap());
    assert!(!s.tools().use_proof("k1", t0, t0.plus_secs(60)).await.unwrap(), "a replay");
    assert!(s.tools().use_proof("k2", t0, t0.plus_secs(60)).await.unwrap());
    // A claimed proof its claimant could not act on is forgotten: accepted once more.
    s.tools().forget_proof("k2").await.unwrap();
    s.tools().forget_proof("never-seen").await.unwrap();
    assert!(s.tools().use_proof("k2", t0, t0.plus_secs(60)).await.unwrap(), "forgotten");
    assert!(!s.tools().use_proof("k2", t0, t0.plus_secs(60)).await.unwrap());
    // Past its expiry a proof is forgotten (its `iat` window has closed long before).
    let later = t0.plus_secs(120);
    assert!(s.tools().use_proof("k1", later, later.plus_secs(60)).await.unwrap());
    let p = crate::tools::Presentation { jti: "j".into(), jkt: "thumb".into(), audience: "remit".into(), at: t0 };
    let before = crate::conformance::verify_chain(s).await;
    for _ in 0..3 {
        s.tools().record_presentation(p.clone(), ev(AuditAction::TokenPresent)).await.unwrap();
    }
    assert_eq!(crate::conformance::verify_chain(s).await, before + 1, "audited the first time only");
    // Presentations not seen for long are pruned.
    assert_eq!(s.tools().prune_presentations(t0).await.unwrap(), 0);
    assert_eq!(s.tools().prune_presentations(t0.plus_secs(1)).await.unwrap(), 1);
}
