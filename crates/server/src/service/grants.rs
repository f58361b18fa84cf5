//! Human → agent grants: a signed-in human proposes (getting a confirmation code, shown
//! once), confirms in a second, separate request with that code, and any task the agent starts
//! under the grant acts on their behalf until it is revoked, expires, or the human is
//! deactivated (all of it ends at once: `GrantStore::revoke`, `humans().deactivate`).

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::grant::{self, Grant, NewGrant};
use remit_core::ids::{GrantId, HumanId};
use remit_core::model::KillReport;
use remit_policy::admin::AdminAction;
use remit_store::Revocation;
use subtle::ConstantTimeEq;

use super::Caller;
use super::admin::{check_reason, hex};
use crate::app::App;
use crate::error::Error;

/// The prefix of a grant's confirmation code.
pub const CONFIRMATION_PREFIX: &str = "remit_gc.";

fn signed_in(caller: &Caller) -> Result<&remit_core::human::Human, Error> {
    match caller {
        Caller::Human { human, .. } => Ok(human),
        _ => Err(Error::Denied("grants are made and confirmed by a signed-in human (`remit login`)".into())),
    }
}

impl App {
    /// Proposes a grant; returns it (state `proposed`) and its confirmation code.
    pub async fn propose_grant(&self, caller: &Caller, req: NewGrant) -> Result<(Grant, String), Error> {
        let human = signed_in(caller)?;
        let wf_name = req.workflow.clone().ok_or_else(|| Error::Invalid("`workflow` is required".into()))?;
        let agent_name = req.agent.clone().ok_or_else(|| Error::Invalid("`agent` is required".into()))?;
        self.allow_on_workflow(caller, AdminAction::GrantCreate, &wf_name).await?;
        let ctx = self.store.identity().start_context(&wf_name, &agent_name, None).await?;
        let wf = ctx.workflow.ok_or_else(|| Error::NotFound(format!("workflow `{wf_name}` not found")))?;
        let agent = ctx.agent.ok_or_else(|| Error::NotFound(format!("agent `{agent_name}` not found")))?;
        let code = format!("{CONFIRMATION_PREFIX}{}", remit_token::b64e(&self.random.bytes32()));
        let now = self.clock.now();
        let id = GrantId::from_random(self.random.bytes16());
        let g = grant::propose(req, human, &agent, &wf, id, hex(&remit_token::sha256(code.as_bytes())), now)?;
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::GrantCreate)
            .workflow(&g.workflow)
            .agent(&g.agent)
            .detail([
                ("grant", g.id.as_str().into()),
                ("authority", serde_json::to_value(&g.authority).unwrap_or_default()),
                ("max_depth", g.max_depth.into()),
                ("expires_at_ms", g.expires_at.0.into()),
            ]);
        self.store.grants().create(g.clone(), audit).await?;
        Ok((g, code))
    }

    /// Confirms a proposed grant: the same human, in a separate request, with the code.
    pub async fn confirm_grant(&self, caller: &Caller, id: &GrantId, code: &str) -> Result<Grant, Error> {
        let human = signed_in(caller)?;
        let g = self.grant_of(id).await?;
        let ok =
            bool::from(hex(&remit_token::sha256(code.as_bytes())).as_bytes().ct_eq(g.confirmation_hash.as_bytes()));
        let now = self.clock.now();
        if let Err(e) = grant::confirm(&g, &human.id, ok, now) {
            let denied = AuditEvent::new(now, caller.actor(), AuditAction::GrantConfirm)
                .workflow(&g.workflow)
                .agent(&g.agent)
                .outcome(remit_core::audit::Outcome::Denied)
                .reason(e.to_string())
                .detail([("grant", g.id.as_str().into())]);
            self.store.audit().append(vec![denied]).await?;
            return Err(match e {
                grant::GrantError::NotProposed(_) => Error::Conflict(e.to_string()),
                _ => Error::Denied(e.to_string()),
            });
        }
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::GrantConfirm)
            .workflow(&g.workflow)
            .agent(&g.agent)
            .detail([("grant", g.id.as_str().into())]);
        self.store.grants().confirm(id, now, audit).await?;
        self.grant_of(id).await
    }

    /// Revokes a grant (its own human, or whoever may pull `grant.revoke` on its workflow)
    /// and every task started under it.
    pub async fn revoke_grant(&self, caller: &Caller, id: &GrantId, reason: &str) -> Result<KillReport, Error> {
        check_reason(reason)?;
        let g = self.grant_of(id).await?;
        let own = matches!(caller, Caller::Human { human, .. } if human.id == g.human);
        if !own {
            self.allow_on_workflow(caller, AdminAction::GrantRevoke, &g.workflow).await?;
        }
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::GrantRevoke)
            .workflow(&g.workflow)
            .agent(&g.agent)
            .reason(reason)
            .detail([("grant", g.id.as_str().into())]);
        let r = Revocation { actor: caller.actor(), reason: reason.to_owned(), at: now };
        Ok(self.store.grants().revoke(id, r, audit).await?)
    }

    /// One grant: its human, or whoever may read grants of its workflow.
    pub async fn grant(&self, caller: &Caller, id: &GrantId) -> Result<Grant, Error> {
        let g = self.grant_of(id).await?;
        if !matches!(caller, Caller::Human { human, .. } if human.id == g.human) {
            self.allow_on_workflow(caller, AdminAction::GrantRead, &g.workflow).await?;
        }
        Ok(g)
    }

    /// A signed-in human's own grants; with `all`, every grant (needs `grant.read`).
    pub async fn list_grants(&self, caller: &Caller, all: bool) -> Result<Vec<Grant>, Error> {
        let mine: Option<HumanId> = match caller {
            Caller::Human { human, .. } if !all => Some(human.id.clone()),
            _ => {
                self.allow(caller, AdminAction::GrantRead, remit_policy::admin::AdminTarget::Installation).await?;
                None
            }
        };
        Ok(self.store.grants().list(mine.as_ref(), 1000).await?)
    }

    pub(crate) async fn grant_of(&self, id: &GrantId) -> Result<Grant, Error> {
        self.store.grants().get(id).await?.ok_or_else(|| Error::NotFound(format!("grant `{id}` not found")))
    }
}
