//! Upstream secrets (write-only) and the leak guard.
//!
//! A value arrives once (set or rotate), is sealed under a fresh data key wrapped by the KEK
//! (`remit_token::envelope`) for exactly its record (tool, name, version), and is never
//! returned by any interface: listings carry metadata and the keyed fingerprint only, and
//! audit records name the version and fingerprint. Rotation stores the next version and keeps
//! the previous one usable for the overlap asked for. Only Remit opens a value, at the last
//! hop (the tool proxy) and to index it for the leak guard.
//!
//! The leak guard's index (`remit_token::leak::Index`) holds keyed hashes of windows of every
//! usable version — never a value — and is rebuilt when the store's secrets marker changes,
//! so a secret set on another replica is found by the next scan here.

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::{self, SecretVersion};
use remit_policy::admin::{AdminAction, AdminTarget};
use remit_store::StoreError;
use remit_store::secrets::SecretsMarker;
use remit_token::envelope::{self, KekWrapper};
use remit_token::leak::{self, Finding, Index};
use zeroize::Zeroizing;

use super::Caller;
use super::admin::check_reason;
use crate::app::App;
use crate::error::Error;

/// Longest text one scan takes (the CLI sends longer files in overlapping chunks).
pub const MAX_SCAN_BYTES: usize = 1024 * 1024;

/// The leak guard's index, with the store marker it was built at.
#[derive(Default)]
pub struct LeakIndex(std::sync::Mutex<Option<(SecretsMarker, Arc<Index>)>>);

impl App {
    fn wrapper(&self) -> Result<KekWrapper, Error> {
        KekWrapper::new(self.kek()).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Sets (or rotates) a secret: stores the value as the next version; the previous one
    /// stays usable for `overlap_secs`. Returns the new version's metadata.
    pub async fn set_secret(
        &self,
        caller: &Caller,
        tool: &ToolName,
        name: &SecretName,
        value: Zeroizing<Vec<u8>>,
        overlap_secs: u64,
    ) -> Result<SecretVersion, Error> {
        self.allow(caller, AdminAction::SecretWrite, AdminTarget::Installation).await?;
        secret::check_value(&value)?;
        secret::check_overlap(overlap_secs)?;
        let wrapper = self.wrapper()?;
        let fingerprint = envelope::fingerprint(&envelope::fingerprint_key(self.kek()), &value);
        // Sealed for the version it will be; a concurrent writer taking it first is retried.
        for _ in 0..3 {
            let newest = self.store.secrets().secret_versions(tool, name).await?.iter().map(|v| v.version).max();
            let version = newest.unwrap_or(0) + 1;
            let sealed = envelope::seal(&wrapper, &secret::aad(tool, name, version), &value)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let now = self.clock.now();
            let v = SecretVersion {
                tool: tool.clone(),
                name: name.clone(),
                version,
                fingerprint: fingerprint.clone(),
                length: u32::try_from(value.len()).unwrap_or(u32::MAX),
                wrapped_key: sealed.wrapped_key,
                wrapped_by: sealed.wrapped_by,
                ciphertext: sealed.ciphertext,
                created_at: now,
                created_by: caller.actor(),
                retire_after: None,
            };
            let audit = AuditEvent::new(now, caller.actor(), AuditAction::SecretSet).detail([
                ("tool", tool.as_str().into()),
                ("secret", name.as_str().into()),
                ("fingerprint", fingerprint.clone().into()),
                ("overlap_secs", overlap_secs.into()),
            ]);
            match self.store.secrets().put_secret(v.clone(), now.plus_secs(overlap_secs), audit).await {
                Ok(_) => return Ok(v),
                Err(StoreError::Conflict(m)) if m.contains("meanwhile") => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!("secret `{tool}/{name}` is being written by someone else; retry")))
    }

    /// The metadata of a tool's secrets (every stored version): never a value.
    pub async fn list_secrets(&self, caller: &Caller, tool: &ToolName) -> Result<Vec<SecretVersion>, Error> {
        self.allow(caller, AdminAction::SecretRead, AdminTarget::Installation).await?;
        if self.store.tools().tool(tool).await?.is_none() {
            return Err(Error::NotFound(format!("tool `{tool}` not found")));
        }
        Ok(self.store.secrets().list_secrets(Some(tool)).await?)
    }

    /// Deletes every version of a secret; returns how many.
    pub async fn delete_secret(
        &self,
        caller: &Caller,
        tool: &ToolName,
        name: &SecretName,
        reason: &str,
    ) -> Result<u32, Error> {
        self.allow(caller, AdminAction::SecretWrite, AdminTarget::Installation).await?;
        check_reason(reason)?;
        // An engine's admin secret stays while logins made with it may still need removing.
        let engine_secret = self
            .store
            .tools()
            .tool(tool)
            .await?
            .and_then(|t| t.database)
            .is_some_and(|d| d.admin_secret == name.as_str());
        if engine_secret {
            for state in [remit_core::lease::LeaseState::Active, remit_core::lease::LeaseState::Revoking] {
                let f = remit_store::LeaseFilter {
                    tool: Some(tool.clone()),
                    state: Some(state),
                    limit: 1,
                    ..Default::default()
                };
                if !self.store.leases().list_leases(f).await?.is_empty() {
                    return Err(Error::Conflict(format!(
                        "`{name}` is tool `{tool}`'s engine admin secret and some of its logins are not removed yet \
                         (`remit lease list --tool {tool}`); revoke them first"
                    )));
                }
            }
        }
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::SecretDelete)
            .reason(reason)
            .detail([("tool", tool.as_str().into()), ("secret", name.as_str().into())]);
        Ok(self.store.secrets().delete_secret(tool, name, audit).await?)
    }

    /// Opens a stored version (Remit's own use only: the last hop, the leak guard's index).
    pub(crate) fn open_secret(&self, v: &SecretVersion) -> Result<Zeroizing<Vec<u8>>, Error> {
        let sealed = envelope::Sealed {
            wrapped_key: v.wrapped_key.clone(),
            wrapped_by: v.wrapped_by.clone(),
            ciphertext: v.ciphertext.clone(),
        };
        envelope::open(&self.wrapper()?, &secret::aad(&v.tool, &v.name, v.version), &sealed).map_err(|e| {
            tracing::error!(secret = %v.reference(), error = %e, "a stored secret does not open");
            Error::Internal(format!("secret {} does not open", v.reference()))
        })
    }

    /// The leak guard's index, rebuilt when the stored secrets changed.
    async fn leak_index(&self) -> Result<Arc<Index>, Error> {
        let marker = self.store.secrets().secrets_marker().await?;
        if let Ok(g) = self.leak_index.0.lock()
            && let Some((m, idx)) = &*g
            && *m == marker
        {
            return Ok(idx.clone());
        }
        let now = self.clock.now();
        let mut idx = Index::new(
            envelope::fingerprint_key(self.kek()),
            u64::from_le_bytes(self.random.bytes16()[..8].try_into().unwrap_or_default()),
        );
        for v in self.store.secrets().list_secrets(None).await?.into_iter().filter(|v| v.usable(now)) {
            let value = self.open_secret(&v)?;
            idx.add(&v.reference(), &v.fingerprint, &value);
        }
        let idx = Arc::new(idx);
        if let Ok(mut g) = self.leak_index.0.lock() {
            *g = Some((marker, idx.clone()));
        }
        Ok(idx)
    }

    /// Scans a text for stored secrets and credential formats; audited with what was found
    /// (kinds, references, fingerprints — never the text).
    pub async fn leak_scan(
        &self,
        caller: &Caller,
        text: &[u8],
        task: Option<&remit_core::ids::TaskId>,
    ) -> Result<Vec<Finding>, Error> {
        self.allow(caller, AdminAction::LeakScan, AdminTarget::Installation).await?;
        let of = match task {
            Some(t) => Some(
                self.store
                    .identity()
                    .task_snapshot(t)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("no task `{t}`")))?,
            ),
            None => None,
        };
        if text.len() > MAX_SCAN_BYTES {
            return Err(Error::Invalid(format!("text: at most {MAX_SCAN_BYTES} bytes per scan")));
        }
        let mut findings = self.leak_index().await?.scan(text);
        findings.extend(leak::scan_formats(text));
        findings.sort_by(|a, b| (a.offset, &a.kind).cmp(&(b.offset, &b.kind)));
        // Every scan is audited, misses too: a run of scans probing for a value shows.
        {
            let found: Vec<String> = findings
                .iter()
                .map(|f| {
                    f.secret.clone().map_or_else(
                        || f.kind.clone(),
                        |s| format!("{s} {}", f.fingerprint.clone().unwrap_or_default()),
                    )
                })
                .collect();
            let outcome = if findings.is_empty() {
                remit_core::audit::Outcome::Success
            } else {
                remit_core::audit::Outcome::Denied
            };
            let mut audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::LeakFound)
                .outcome(outcome)
                .detail([("findings", found.into()), ("bytes", text.len().into())]);
            // Only a stored secret found in a task's text is held against the task (a credential
            // format alone may be the task's own).
            if let Some(s) = of.as_ref().filter(|_| findings.iter().any(|f| f.secret.is_some())) {
                audit = audit.task(&s.task.id).workflow(&s.task.workflow).agent(&s.task.agent);
            }
            self.store.audit().append(vec![audit]).await?;
        }
        Ok(findings)
    }
}
