//! RFC 7662 introspection and RFC 7009 revocation of Remit-issued tokens.

use remit_core::ids::Subject;
use remit_core::model::{Kill, KillTarget};
use remit_core::rules::{self, Liveness};
use remit_store::StoreError;
use remit_token::Claims;

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
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        let r = self.introspect_inner(token).await;
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
        let claims = match self.verify_jwt(token, None, None).await {
            Ok(c) => c,
            Err(_) => return inactive("invalid or expired"),
        };
        let now = self.clock.now();
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

    /// Revokes the identity behind a presented token. Per RFC 7009 the answer is the same
    /// whether or not the token was valid; possession of a token is the authority to end it.
    pub async fn revoke_token(&self, token: &str) -> Result<(), Error> {
        let Ok(claims) = self.verify_jwt(token, None, None).await else { return Ok(()) };
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
