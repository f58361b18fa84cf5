//! Reading and verifying the audit log.

use remit_core::audit::{AuditRecord, ChainBreak, ChainVerifier, Checkpoint, VerifyReport};
use remit_store::AuditFilter;

use super::Caller;
use crate::app::App;
use crate::error::Error;

/// Records read per page while verifying.
const VERIFY_PAGE: u32 = 5000;

impl App {
    pub async fn list_audit(&self, caller: &Caller, filter: AuditFilter) -> Result<Vec<AuditRecord>, Error> {
        self.allow(caller, remit_policy::admin::AdminAction::AuditRead, remit_policy::admin::AdminTarget::Installation)
            .await?;
        Ok(self.store.audit().list(filter).await?)
    }

    /// Recomputes every hash and link and checks every signed checkpoint. `Ok(Err(..))`
    /// names the first broken record. Records and checkpoints are both streamed in `seq`
    /// order, a page at a time: memory stays flat however long the log.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<Result<VerifyReport, ChainBreak>, Error> {
        self.allow(caller, remit_policy::admin::AdminAction::AuditRead, remit_policy::admin::AdminTarget::Installation)
            .await?;
        let audit = self.store.audit();
        let mut v = match ChainVerifier::new(&[], |_| true) {
            Ok(v) => v,
            Err(b) => return Ok(Err(b)),
        };
        let sig_ok = |c: &Checkpoint| self.checkpoint_signature_ok(c);
        let mut cp_after = 0;
        let mut cps_done = false;
        let mut after = 0;
        loop {
            let page = audit.list(AuditFilter { after_seq: after, limit: VERIFY_PAGE, ..Default::default() }).await?;
            let Some(last) = page.last().map(|r| r.seq) else { break };
            // Every checkpoint this page's records reach goes in before them.
            while !cps_done && cp_after <= last {
                let cps = audit.checkpoints_after(cp_after, VERIFY_PAGE).await?;
                let Some(c) = cps.last() else {
                    cps_done = true;
                    break;
                };
                cp_after = c.seq;
                for cp in &cps {
                    if let Err(b) = v.add_checkpoint(cp, sig_ok) {
                        return Ok(Err(b));
                    }
                }
            }
            for r in &page {
                if let Err(b) = v.push(r) {
                    return Ok(Err(b));
                }
            }
            after = last;
        }
        // Checkpoints past the last record: the newest records were deleted.
        while !cps_done {
            let cps = audit.checkpoints_after(cp_after, VERIFY_PAGE).await?;
            let Some(c) = cps.last() else {
                cps_done = true;
                continue;
            };
            cp_after = c.seq;
            for cp in &cps {
                if let Err(b) = v.add_checkpoint(cp, sig_ok) {
                    return Ok(Err(b));
                }
            }
        }
        Ok(v.finish())
    }
}
