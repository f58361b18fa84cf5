//! Registered tools: create, list, show, disable; and the tool's own introspection secret.
//!
//! A tool gets one secret when it is registered (`remit_tool.<name>.<secret>`, shown once,
//! stored as SHA-256). It opens exactly one thing: introspecting credentials issued **for that
//! tool** (`/oauth2/introspect`); any other token introspects as inactive for it.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{HumanId, ToolName};
use remit_core::tool::{self, NewTool, Tool, ToolState};
use remit_policy::admin::{AdminAction, AdminTarget};
use subtle::ConstantTimeEq;

use super::Caller;
use super::admin::{check_reason, hex};
use crate::app::App;
use crate::error::Error;

/// The prefix of a tool's introspection secret.
pub const TOOL_SECRET_PREFIX: &str = "remit_tool.";

impl App {
    /// Registers a tool; returns it and its introspection secret (shown once).
    pub async fn create_tool(&self, caller: &Caller, req: NewTool) -> Result<(Tool, String), Error> {
        self.allow(caller, AdminAction::ToolCreate, AdminTarget::Installation).await?;
        // A tool's credentials must never be mistaken for Remit's own tokens: its audience is
        // neither Remit's audience nor anything under Remit's issuer.
        let aud = req.audience.trim_end_matches('/');
        if aud == self.cfg.audience.trim_end_matches('/')
            || aud == self.issuer.trim_end_matches('/')
            || req.audience.starts_with(&format!("{}/", self.issuer.trim_end_matches('/')))
        {
            return Err(Error::Invalid("audience: a tool's audience may not be Remit's own".into()));
        }
        let secret = format!("{TOOL_SECRET_PREFIX}{}.{}", req.name, remit_token::b64e(&self.random.bytes32()));
        let req = NewTool { secret_hash: hex(&remit_token::sha256(secret.as_bytes())), ..req };
        let now = self.clock.now();
        let mut t = tool::new_tool(req, &self.limits, now)?;
        t.owner_id = Some(HumanId::from_random(self.random.bytes16()));
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::ToolCreate).detail([
            ("tool", t.name.as_str().into()),
            ("audience", t.audience.clone().into()),
            ("scopes", t.scopes.clone().into()),
            ("max_ttl_secs", t.max_ttl_secs.into()),
            ("classification", t.classification.as_str().into()),
            ("owner", t.owner.clone().into()),
        ]);
        self.store.tools().create_tool(t.clone(), audit).await?;
        Ok((self.tool(caller, &t.name).await?, secret))
    }

    pub async fn tool(&self, caller: &Caller, name: &ToolName) -> Result<Tool, Error> {
        self.allow(caller, AdminAction::ToolRead, AdminTarget::Installation).await?;
        self.store.tools().tool(name).await?.ok_or_else(|| Error::NotFound(format!("tool `{name}` not found")))
    }

    pub async fn list_tools(&self, caller: &Caller) -> Result<Vec<Tool>, Error> {
        self.allow(caller, AdminAction::ToolRead, AdminTarget::Installation).await?;
        Ok(self.store.tools().list_tools().await?)
    }

    /// Disables a tool: no new credential is issued for it, every credential issued for it
    /// introspects as inactive at once, and its database logins are removed.
    pub async fn disable_tool(&self, caller: &Caller, name: &ToolName, reason: &str) -> Result<Tool, Error> {
        self.allow(caller, AdminAction::ToolDisable, AdminTarget::Installation).await?;
        check_reason(reason)?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::ToolDisable)
            .reason(reason)
            .detail([("tool", name.as_str().into())]);
        self.store.tools().set_tool_state(name, ToolState::Active, ToolState::Disabled, audit).await?;
        // Its database logins were marked for removal in the same transaction.
        self.lease_wake.notify_one();
        self.tool(caller, name).await
    }

    /// The active tool whose introspection secret this is, if any (constant-time compare).
    pub async fn tool_by_secret(&self, presented: &str) -> Result<Option<Tool>, Error> {
        let Some(rest) = presented.strip_prefix(TOOL_SECRET_PREFIX) else { return Ok(None) };
        // The secret is base64url (no `.`); a tool's name may hold dots.
        let Some((name, _)) = rest.rsplit_once('.') else { return Ok(None) };
        let Ok(name) = ToolName::parse(name) else { return Ok(None) };
        let Some(t) = self.store.tools().tool(&name).await? else { return Ok(None) };
        let hash = hex(&remit_token::sha256(presented.as_bytes()));
        let ok = bool::from(hash.as_bytes().ct_eq(t.secret_hash.as_bytes())) && t.state == ToolState::Active;
        Ok(ok.then_some(t))
    }
}
