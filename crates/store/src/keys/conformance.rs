//! The keys area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use remit_core::audit::{AuditAction, GENESIS_HASH};
use remit_core::time::UnixMillis;

use crate::conformance::{ev, hex, install, key, now, verify_chain};
use crate::{Installation, KeyPurpose, Store, StoreError};

pub async fn install_once(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(s.keys().installation().await.unwrap(), None);
    assert_eq!(s.audit().head().await.unwrap(), (0, hex(&GENESIS_HASH)));
    install(s).await;
    let got = s.keys().installation().await.unwrap().unwrap();
    assert_eq!(got.trust_domain, "remit.local");
    assert_eq!(got.issuer.as_deref(), Some("https://remit.example"));
    assert_eq!(got.mac.as_deref(), Some("install-mac"));
    assert!(s.keys().list().await.unwrap().iter().all(|k| k.mac == Some(format!("mac-of-{}", k.kid))));
    let again = Installation {
        trust_domain: "x".into(),
        issuer: None,
        admin_hash: "00".into(),
        installed_at: now(),
        mac: None,
    };
    assert!(matches!(s.keys().install(again, vec![], ev(AuditAction::Init)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.keys().installation().await.unwrap().unwrap().trust_domain, "remit.local");
    assert_eq!(s.keys().list().await.unwrap().len(), 2);
    assert_eq!(s.keys().bundle_sequence().await.unwrap(), 1);
    assert_eq!(verify_chain(s).await, 1);
    // Resealing replaces the issuer and every MAC, and is audited.
    let seal = crate::Reseal {
        issuer: "https://other.example".into(),
        installation_mac: "new-mac".into(),
        key_macs: vec![("jwt-1".into(), "k1".into()), ("audit-1".into(), "a1".into())],
    };
    s.keys().reseal(seal, ev(AuditAction::InstallationReseal)).await.unwrap();
    let got = s.keys().installation().await.unwrap().unwrap();
    assert_eq!((got.issuer.as_deref(), got.mac.as_deref()), (Some("https://other.example"), Some("new-mac")));
    let macs: HashSet<_> = s.keys().list().await.unwrap().into_iter().filter_map(|k| k.mac).collect();
    assert_eq!(macs, HashSet::from(["k1".to_string(), "a1".to_string()]));
    let unknown =
        crate::Reseal { issuer: "x".into(), installation_mac: "y".into(), key_macs: vec![("nope".into(), "z".into())] };
    assert!(matches!(
        s.keys().reseal(unknown, ev(AuditAction::InstallationReseal)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.keys().installation().await.unwrap().unwrap().mac.as_deref(),
        Some("new-mac"),
        "a failed reseal changes nothing"
    );
    assert_eq!(verify_chain(s).await, 2);
}

pub async fn key_rotation(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let retiring =
        |kid: &str, at: UnixMillis| crate::RetiringKey { kid: kid.into(), retire_after: at, mac: "r".into() };
    let seq = s
        .keys()
        .rotate(key(KeyPurpose::Jwt, "jwt-2"), retiring("jwt-1", now().plus_secs(3600)), ev(AuditAction::KeyRotate))
        .await
        .unwrap();
    assert_eq!(seq, 2);
    // Rotating out a key that is no longer the active one is a conflict and changes nothing.
    assert!(matches!(
        s.keys().rotate(key(KeyPurpose::Jwt, "jwt-x"), retiring("jwt-1", now()), ev(AuditAction::KeyRotate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.keys().bundle_sequence().await.unwrap(), 2);
    assert_eq!(s.keys().bundle_sequence().await.unwrap(), 2);
    let keys = s.keys().list().await.unwrap();
    let jwt: Vec<_> = keys.iter().filter(|k| k.purpose == KeyPurpose::Jwt).collect();
    assert_eq!(jwt.len(), 2);
    assert_eq!(jwt.iter().filter(|k| k.retire_after.is_none()).count(), 1);
    assert_eq!(jwt.iter().find(|k| k.retire_after.is_none()).unwrap().kid, "jwt-2");
    // A key whose overlap window has passed is no longer returned.
    s.keys()
        .rotate(key(KeyPurpose::Jwt, "jwt-3"), retiring("jwt-2", UnixMillis(now().0 - 1)), ev(AuditAction::KeyRotate))
        .await
        .unwrap();
    let kids: HashSet<_> = s.keys().list().await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, HashSet::from(["jwt-1".to_string(), "jwt-3".to_string(), "audit-1".to_string()]));
    // The audit key is untouched by JWT rotation.
    assert!(s.keys().list().await.unwrap().iter().any(|k| k.purpose == KeyPurpose::Audit && k.retire_after.is_none()));
}
