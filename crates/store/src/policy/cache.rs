//! The policy area through the cache: attribute-store entities (including "not stored"
//! answers, since a PEP's resources are often not in the store) are served from memory
//! within a byte budget; a push of entities announces `Change::Entities`, which drops them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;

use super::{PolicyStore, StoredEntity, StoredPolicySet};
use crate::cache::State;
use crate::{Result, Store};

pub(crate) struct CachingPolicy {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) state: Arc<State>,
}

#[async_trait]
impl PolicyStore for CachingPolicy {
    async fn put_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        self.inner.policy().put_set(bundle, at, by, audit).await
    }
    async fn active_set(&self) -> Result<Option<StoredPolicySet>> {
        self.inner.policy().active_set().await
    }
    async fn put_entities(&self, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()> {
        self.inner.policy().put_entities(entities, audit).await
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<StoredEntity>> {
        let key = (etype.to_owned(), id_or_alias.to_owned());
        if let Some(e) = self.state.get(|m| &m.entities, &key) {
            return Ok(e);
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let e = self.inner.policy().entity(etype, id_or_alias).await?;
        self.state.fill_entity(generation, key, e.clone());
        Ok(e)
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<StoredEntity>> {
        self.inner.policy().list_entities(etype, after, limit).await
    }
}
