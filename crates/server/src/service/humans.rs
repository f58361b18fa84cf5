//! Managing humans: listing them with their sessions, deactivating one (their sessions
//! revoked, what they own orphaned, in one transaction) and revoking one session.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::human::{Human, HumanState, Session};
use remit_core::ids::{HumanId, SessionId};
use remit_store::Deactivation;

use super::Caller;
use super::admin::check_reason;
use crate::app::App;
use crate::error::Error;

impl App {
    /// Humans ordered by email, after `after`, at most `limit` (1-1000).
    pub async fn list_humans(
        &self,
        caller: &Caller,
        state: Option<HumanState>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Human>, Error> {
        self.allow(caller, remit_policy::admin::AdminAction::HumanRead, remit_policy::admin::AdminTarget::Installation)
            .await?;
        Ok(self.store.humans().list(state, after, limit.clamp(1, 1000)).await?)
    }

    /// One human and their sessions (newest first).
    pub async fn human(&self, caller: &Caller, id: &HumanId) -> Result<(Human, Vec<Session>), Error> {
        self.allow(caller, remit_policy::admin::AdminAction::HumanRead, remit_policy::admin::AdminTarget::Installation)
            .await?;
        let h = self.store.humans().get(id).await?.ok_or_else(|| Error::NotFound(format!("human `{id}` not found")))?;
        let sessions = self.store.humans().sessions_of(id).await?;
        Ok((h, sessions))
    }

    /// Deactivates a human: every session revoked, every workflow and agent they own
    /// orphaned, the record kept, all in one transaction with its audit record.
    pub async fn deactivate_human(&self, caller: &Caller, id: &HumanId, reason: &str) -> Result<Deactivation, Error> {
        self.allow(
            caller,
            remit_policy::admin::AdminAction::HumanManage,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        check_reason(reason)?;
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::HumanDeactivate)
            .reason(reason)
            .detail([("human", id.to_string().into())]);
        Ok(self.store.humans().deactivate(id, now, reason, audit).await?)
    }

    /// Revokes one session of any human.
    pub async fn revoke_session(&self, caller: &Caller, id: &SessionId, reason: &str) -> Result<Session, Error> {
        self.allow(
            caller,
            remit_policy::admin::AdminAction::HumanManage,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        check_reason(reason)?;
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::SessionRevoke)
            .reason(reason)
            .detail([("session", id.to_string().into())]);
        Ok(self.store.humans().revoke_session(id, now, reason, audit).await?)
    }
}
