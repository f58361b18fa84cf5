//! The secrets area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::SecretVersion;
use remit_core::time::UnixMillis;

use crate::conformance::{ev, fixture, now};
use crate::tools::conformance::tool;
use crate::{Store, StoreError};

fn version(tool: &str, name: &str, n: u32, fp: &str) -> SecretVersion {
    SecretVersion {
        tool: ToolName::parse(tool).unwrap(),
        name: SecretName::parse(name).unwrap(),
        version: n,
        fingerprint: fp.into(),
        length: 24,
        wrapped_key: vec![1, 2, 3],
        wrapped_by: "kek:secrets:v1".into(),
        ciphertext: vec![9; 40],
        created_at: now(),
        created_by: "admin".into(),
        retire_after: None,
    }
}

pub async fn secrets_version_retire_and_delete(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    s.tools().create_tool(tool("tickets", "https://tickets.example"), ev(AuditAction::ToolCreate)).await.unwrap();
    let sec = s.secrets();
    let m0 = sec.secrets_marker().await.unwrap();
    // An unknown tool is refused.
    let ghost = version("ghost", "api-key", 1, "fp_0");
    assert!(matches!(sec.put_secret(ghost, now(), ev(AuditAction::SecretSet)).await, Err(StoreError::NotFound { .. })));
    // Versions count up; the previous newest retires at the overlap's end.
    let until = UnixMillis(now().0 + 60_000);
    assert_eq!(
        sec.put_secret(version("tickets", "api-key", 1, "fp_1"), until, ev(AuditAction::SecretSet)).await.unwrap(),
        1
    );
    // A writer that sealed for a version someone else took is refused, nothing stored.
    let stale = version("tickets", "api-key", 1, "fp_x");
    assert!(matches!(sec.put_secret(stale, until, ev(AuditAction::SecretSet)).await, Err(StoreError::Conflict(_))));
    assert_eq!(
        sec.put_secret(version("tickets", "api-key", 2, "fp_2"), until, ev(AuditAction::SecretSet)).await.unwrap(),
        2
    );
    let (t, n) = (ToolName::parse("tickets").unwrap(), SecretName::parse("api-key").unwrap());
    let vs = sec.secret_versions(&t, &n).await.unwrap();
    assert_eq!(vs.iter().map(|v| (v.version, v.retire_after)).collect::<Vec<_>>(), [(1, Some(until)), (2, None)]);
    assert_eq!(
        (vs[1].wrapped_key.clone(), vs[1].ciphertext.len(), vs[1].fingerprint.as_str()),
        (vec![1, 2, 3], 40, "fp_2")
    );
    assert_ne!(sec.secrets_marker().await.unwrap(), m0);
    sec.put_secret(version("tickets", "oauth-client", 1, "fp_3"), until, ev(AuditAction::SecretSet)).await.unwrap();
    assert_eq!(sec.list_secrets(Some(&t)).await.unwrap().len(), 3);
    assert_eq!(sec.list_secrets(None).await.unwrap().len(), 3);
    // Pruning drops versions whose overlap has ended, nothing else.
    assert_eq!(sec.prune_secrets(UnixMillis(until.0 + 1)).await.unwrap(), 1);
    assert_eq!(sec.secret_versions(&t, &n).await.unwrap().len(), 1);
    // Delete removes every version, audited; a second delete is NotFound.
    assert_eq!(sec.delete_secret(&t, &n, ev(AuditAction::SecretDelete)).await.unwrap(), 1);
    assert!(sec.secret_versions(&t, &n).await.unwrap().is_empty());
    assert!(matches!(sec.delete_secret(&t, &n, ev(AuditAction::SecretDelete)).await, Err(StoreError::NotFound { .. })));
    let audit = s
        .audit()
        .list(crate::AuditFilter { action: Some("secret.set".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(audit.len(), 3, "{audit:?}");
}
