//! Policy administration: pushing a bundle (strict validation, then the next version on
//! every replica), reloading it when announced, and the attribute store's entities.

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_policy::{Bundle, Engine};
use remit_store::{StoredEntity, StoredPolicySet};
use serde_json::{Value, json};

use super::entities::{is_action_type, type_and_id};
use super::{EntityPush, MAX_ENTITIES_PER_PUSH, Pdp, bounded};
use crate::caller::Caller;
use crate::error::Error;

impl Pdp {
    /// Compiles the active bundle from the store and swaps it in (if it is newer).
    pub async fn reload_policy(&self) -> Result<u64, Error> {
        let Some(active) = self.store.policy().active_set().await? else { return Ok(0) };
        if active.version == self.engine().version() {
            return Ok(active.version);
        }
        let bundle: Bundle = serde_json::from_str(&active.bundle)
            .map_err(|e| Error::Internal(format!("stored policy bundle {} is unreadable: {e}", active.version)))?;
        let engine = Engine::compile(active.version, &bundle)
            .map_err(|e| Error::Internal(format!("stored policy bundle {} no longer compiles: {e}", active.version)))?;
        if let Ok(mut g) = self.engine.write()
            && engine.version() > g.version()
        {
            *g = Arc::new(engine);
        }
        Ok(active.version)
    }

    /// Validates `bundle` (strict) and activates it as the next version, or refuses it with
    /// Cedar's diagnostics and changes nothing.
    pub async fn push_policy(&self, caller: &Caller, bundle: Bundle) -> Result<u64, Error> {
        caller.require_human_or_admin()?;
        if let Err(rejected) = Engine::compile(0, &bundle) {
            return Err(Error::Invalid(rejected.to_string()));
        }
        let text = serde_json::to_string(&bundle).map_err(|e| Error::Internal(e.to_string()))?;
        let digest = hex::encode(remit_token::sha256(text.as_bytes()));
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::PolicyPush)
            .detail([("bundle_sha256", digest.into()), ("policy_files", bundle.policies.len().into())]);
        let version = self.store.policy().put_set(text, now, &caller.actor(), audit).await?;
        self.reload_policy().await?;
        Ok(version)
    }

    /// The active bundle as stored (admin).
    pub async fn active_policy(&self, caller: &Caller) -> Result<Option<StoredPolicySet>, Error> {
        caller.require_human_or_admin()?;
        Ok(self.store.policy().active_set().await?)
    }

    /// Inserts or replaces attribute-store entities.
    pub async fn push_entities(&self, caller: &Caller, list: Vec<EntityPush>) -> Result<usize, Error> {
        caller.require_human_or_admin()?;
        if list.len() > MAX_ENTITIES_PER_PUSH {
            return Err(Error::Invalid(format!("at most {MAX_ENTITIES_PER_PUSH} entities per push")));
        }
        let mut out = Vec::with_capacity(list.len());
        let max_id = self.limits.max_entity_id_bytes;
        for e in &list {
            let (etype, id) = type_and_id(&e.uid, "entity uid")?;
            bounded(Some(&etype), "uid.type", max_id)?;
            bounded(Some(&id), "uid.id", max_id)?;
            for a in &e.aliases {
                bounded(Some(a), "aliases", max_id)?;
            }
            if is_action_type(&etype) {
                return Err(Error::Invalid("actions are declared in the policy schema, not pushed as entities".into()));
            }
            for p in &e.parents {
                let (pt, pi) = type_and_id(p, "entity parent")?;
                bounded(Some(&pt), "parents.type", max_id)?;
                bounded(Some(&pi), "parents.id", max_id)?;
            }
            // Let Cedar check the shape now rather than at the first decision.
            remit_policy::entities(vec![json!({"uid": e.uid, "attrs": e.attrs, "parents": e.parents})])
                .map_err(|m| Error::Invalid(format!("entity {etype}::{id:?}: {m}")))?;
            out.push(StoredEntity {
                etype,
                id,
                attrs: Value::Object(e.attrs.clone()).to_string(),
                parents: Value::Array(e.parents.clone()).to_string(),
                aliases: e.aliases.clone(),
            });
        }
        let n = out.len();
        let audit =
            AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::EntitiesPush).detail([("count", n.into())]);
        self.store.policy().put_entities(out, audit).await?;
        Ok(n)
    }
}
