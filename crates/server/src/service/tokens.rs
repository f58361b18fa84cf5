//! RFC 7662 introspection and RFC 7009 revocation of Remit-issued tokens: instance and task
//! JWT-SVIDs, and the per-tool credentials of token exchange (live while their row is
//! unrevoked, their tool active and their task live).

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{CredentialId, Subject};
use remit_core::model::{Kill, KillTarget};
use remit_core::rules::{self, Liveness};
use remit_core::tool::{Tool, credential_liveness};
use remit_store::StoreError;
use remit_token::{Claims, SvidKind};

use crate::app::App;
use crate::error::Error;
use crate::metrics::Metrics;

/// The answer to an introspection: the verified claims when active, and (for logs and
/// metrics only, never the response) why it is not.
pub struct Introspection {
    pub claims: Option<Claims>,
    pub inactive_reason: &'static str,
}

impl App {
    /// Is this token active right now? Signature, expiry, and every kill switch that
    /// covers it (task, instance, agent, workflow) are checked against the store.
    /// A tool introspecting (`for_tool`) sees only credentials issued for it; every other
    /// token is inactive to it.
    pub async fn introspect(&self, token: &str, for_tool: Option<&Tool>) -> Result<Introspection, Error> {
        let r = match self.introspect_inner(token).await {
            Ok(Introspection { claims: Some(c), .. })
                if for_tool.is_some_and(|t| c.remit.kind != SvidKind::Tool || !c.aud.contains(&t.audience)) =>
            {
                // A live token of another audience in this tool's hands: the agent handed it on.
                if let Some(t) = for_tool.filter(|t| !c.aud.contains(&t.audience)) {
                    let to = format!("tool:{}", t.name);
                    self.note_misdirected(&c, &to, serde_json::json!({ "tool": t.name.as_str() }), "introspection")
                        .await;
                }
                Ok(Introspection { claims: None, inactive_reason: "not this tool's credential" })
            }
            r => r,
        };
        let label = match &r {
            Ok(i) if i.claims.is_some() => "active",
            Ok(_) => "inactive",
            Err(_) => "error",
        };
        self.metrics.introspections.get_or_create(&Metrics::label(label)).inc();
        r
    }

    async fn introspect_inner(&self, token: &str) -> Result<Introspection, Error> {
        let inactive = |why| Ok(Introspection { claims: None, inactive_reason: why });
        let (claims, signed_by) = match self.verify_any_jwt(token).await {
            Ok(c) => c,
            Err(_) => return inactive("invalid or expired"),
        };
        let now = self.clock.now();
        if claims.remit.kind == SvidKind::Tool {
            return match self.credential_live(&claims, signed_by).await? {
                Liveness::Active => Ok(Introspection { claims: Some(claims), inactive_reason: "" }),
                Liveness::Inactive(why) => inactive(why),
            };
        }
        if signed_by.is_some() {
            return inactive("signed in a tool class's trust domain");
        }
        let live = match self.subject_of(&claims) {
            None => return inactive("foreign subject"),
            Some(Subject::Task { workflow, task }) => {
                let Some(snap) = self.store.identity().task_snapshot(&task).await? else {
                    return inactive("unknown task");
                };
                if snap.task.workflow != workflow || claims.remit.task.as_deref() != Some(task.as_str()) {
                    return inactive("claims do not match the task");
                }
                rules::task_liveness(&snap.task, &snap.workflow, &snap.agent, snap.instance.as_ref(), now)
            }
            Some(Subject::Instance { agent, instance }) => {
                let (Some(i), Some(a)) =
                    (self.store.identity().instance(&instance).await?, self.store.identity().agent(&agent).await?)
                else {
                    return inactive("unknown instance");
                };
                if i.agent != agent {
                    return inactive("claims do not match the instance");
                }
                rules::instance_liveness(&i, &a, now)
            }
        };
        match live {
            Liveness::Active => Ok(Introspection { claims: Some(claims), inactive_reason: "" }),
            Liveness::Inactive(why) => inactive(why),
        }
    }

    /// A per-tool credential's liveness: its row (unrevoked, unexpired, matching the token),
    /// its tool (still active) and its task (live, with its workflow, agent and instance).
    async fn credential_live(
        &self,
        claims: &Claims,
        signed_by: Option<remit_core::tool::ToolClass>,
    ) -> Result<Liveness, Error> {
        let Ok(id) = CredentialId::parse(&claims.jti) else { return Ok(Liveness::Inactive("unknown credential")) };
        let Some(cred) = self.store.tools().credential(&id).await? else {
            return Ok(Liveness::Inactive("unknown credential"));
        };
        if claims.remit.task.as_deref() != Some(cred.task.as_str())
            || claims.remit.tool.as_deref() != Some(cred.tool.as_str())
        {
            return Ok(Liveness::Inactive("claims do not match the credential"));
        }
        let now = self.clock.now();
        let tool = self.store.tools().tool(&cred.tool).await?;
        // Signed in its tool class's current trust domain, and naming it.
        if !self.class_signature_fits(claims, signed_by, tool.as_ref().map(|t| t.class)) {
            return Ok(Liveness::Inactive("not signed in its tool class's trust domain"));
        }
        if let Liveness::Inactive(why) = credential_liveness(&cred, tool.as_ref(), now) {
            return Ok(Liveness::Inactive(why));
        }
        let Some(snap) = self.store.identity().task_snapshot(&cred.task).await? else {
            return Ok(Liveness::Inactive("unknown task"));
        };
        Ok(rules::task_liveness(&snap.task, &snap.workflow, &snap.agent, snap.instance.as_ref(), now))
    }

    /// Revokes the identity behind a presented token. Per RFC 7009 the answer is the same
    /// whether or not the token was valid; possession of a token is the authority to end it.
    /// A per-tool credential ends alone (its task goes on); a task or instance token ends
    /// its identity and everything under it.
    pub async fn revoke_token(&self, token: &str) -> Result<(), Error> {
        let Ok((claims, signed_by)) = self.verify_any_jwt(token).await else { return Ok(()) };
        if claims.remit.kind == SvidKind::Tool {
            let Ok(id) = CredentialId::parse(&claims.jti) else { return Ok(()) };
            let now = self.clock.now();
            let mut audit = AuditEvent::new(now, claims.sub.clone(), AuditAction::TokenRevoke)
                .reason("revoked by its holder (RFC 7009)")
                .detail([("jti", id.as_str().into()), ("tool", claims.remit.tool.clone().into())]);
            if let Some(t) = claims.remit.task.as_deref().and_then(|t| remit_core::ids::TaskId::parse(t).ok()) {
                audit = audit.task(&t);
            }
            self.store.tools().revoke_credential(&id, now, audit).await?;
            return Ok(());
        }
        if signed_by.is_some() {
            return Ok(()); // a class key signs per-tool credentials only
        }
        let target = match self.subject_of(&claims) {
            Some(Subject::Task { task, .. }) => KillTarget::Task(task),
            Some(Subject::Instance { instance, .. }) => KillTarget::Instance(instance),
            None => return Ok(()),
        };
        let kill = Kill {
            target,
            actor: claims.sub.clone(),
            reason: "revoked by its holder (RFC 7009)".into(),
            at: self.clock.now(),
        };
        match self.store.identity().kill(kill).await {
            Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
