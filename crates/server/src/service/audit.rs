//! Reading and verifying the audit log.

use remit_core::audit::{AuditRecord, ChainBreak, ChainVerifier, VerifyReport};
use remit_store::AuditFilter;

use super::Caller;
use crate::app::App;
use crate::error::ApiError;

/// Records read per page while verifying.
const VERIFY_PAGE: u32 = 5000;

impl App {
    pub async fn list_audit(&self, caller: &Caller, filter: AuditFilter) -> Result<Vec<AuditRecord>, ApiError> {
        caller.require_admin()?;
        Ok(self.store.list_audit(filter).await?)
    }

    /// Recomputes every hash and link and checks every signed checkpoint. `Ok(Err(..))`
    /// names the first broken record.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<Result<VerifyReport, ChainBreak>, ApiError> {
        caller.require_admin()?;
        let cps = self.store.checkpoints().await?;
        let mut v = match ChainVerifier::new(&cps, |c| self.checkpoint_signature_ok(c)) {
            Ok(v) => v,
            Err(b) => return Ok(Err(b)),
        };
        let mut after = 0;
        loop {
            let page = self
                .store
                .list_audit(AuditFilter { after_seq: after, limit: VERIFY_PAGE, ..Default::default() })
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in &page {
                if let Err(b) = v.push(r) {
                    return Ok(Err(b));
                }
            }
        }
        Ok(v.finish())
    }
}
