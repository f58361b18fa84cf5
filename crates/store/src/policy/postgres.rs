//! The policy area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use sqlx::PgConnection;

use super::{PolicyStore, StoredEntity, StoredPolicySet};
use crate::postgres::{PgStore, WriteCtx, map_err, pg_read};
use crate::{Change, Result, StoreError};

#[async_trait]
impl PolicyStore for PgStore {
    async fn put_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        let by = by.to_owned();
        self.write(move |c| Box::pin(put_policy_set(c, bundle, at, by, audit))).await
    }
    async fn active_set(&self) -> Result<Option<StoredPolicySet>> {
        pg_read!(self, |c| active_policy_set(c))
    }
    async fn put_entities(&self, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(put_entities(c, entities, audit))).await
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<StoredEntity>> {
        pg_read!(self, |c| entity(c, etype, id_or_alias))
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<StoredEntity>> {
        let a = after.as_deref();
        pg_read!(self, |c| list_entities(c, etype, a, limit))
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

async fn put_policy_set(
    ctx: &mut WriteCtx,
    bundle: String,
    at: UnixMillis,
    by: String,
    audit: AuditEvent,
) -> Result<u64> {
    // Writers hold the audit head lock, so MAX + 1 cannot race another replica.
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_sets")
        .fetch_one(ctx.conn())
        .await
        .map_err(map_err)?;
    sqlx::query("INSERT INTO policy_sets (version, bundle, created_at, created_by) VALUES ($1, $2, $3, $4)")
        .bind(version)
        .bind(&bundle)
        .bind(at.0)
        .bind(&by)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    let version = u64::try_from(version).map_err(|_| StoreError::Corrupt("negative policy version".into()))?;
    ctx.audit(audit.with_detail_field("version", version.into()))?;
    ctx.changed([Change::Policy]);
    Ok(version)
}

async fn active_policy_set(c: &mut PgConnection) -> Result<Option<StoredPolicySet>> {
    let r: Option<(i64, String, i64, String)> =
        sqlx::query_as("SELECT version, bundle, created_at, created_by FROM policy_sets ORDER BY version DESC LIMIT 1")
            .fetch_optional(c)
            .await
            .map_err(map_err)?;
    r.map(|(v, bundle, at, by)| {
        Ok(StoredPolicySet {
            version: u64::try_from(v).map_err(|_| StoreError::Corrupt("negative policy version".into()))?,
            bundle,
            created_at: UnixMillis(at),
            created_by: by,
        })
    })
    .transpose()
}

async fn put_entities(ctx: &mut WriteCtx, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()> {
    let at = audit.time.0;
    for e in &entities {
        sqlx::query(
            "INSERT INTO entities (etype, id, attrs, parents, aliases, updated_at) VALUES ($1,$2,$3,$4,$5,$6) \
             ON CONFLICT (etype, id) DO UPDATE SET attrs = excluded.attrs, parents = excluded.parents, \
             aliases = excluded.aliases, updated_at = excluded.updated_at",
        )
        .bind(&e.etype)
        .bind(&e.id)
        .bind(&e.attrs)
        .bind(&e.parents)
        .bind(json(&e.aliases))
        .bind(at)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
        sqlx::query("DELETE FROM entity_aliases WHERE etype = $1 AND id = $2")
            .bind(&e.etype)
            .bind(&e.id)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    for e in &entities {
        for a in &e.aliases {
            let n =
                sqlx::query("INSERT INTO entity_aliases (etype, alias, id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(&e.etype)
                    .bind(a)
                    .bind(&e.id)
                    .execute(ctx.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            if n == 0 {
                return Err(conflict(format!("alias `{a}` already names another `{}` entity", e.etype)));
            }
        }
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Entities]);
    Ok(())
}

async fn entity(c: &mut PgConnection, etype: &str, key: &str) -> Result<Option<StoredEntity>> {
    let r: Option<(String, String, String, String)> = sqlx::query_as(
        "(SELECT e.id, e.attrs, e.parents, e.aliases FROM entities e WHERE e.etype = $1 AND e.id = $2) \
         UNION ALL (SELECT e.id, e.attrs, e.parents, e.aliases FROM entity_aliases a \
         JOIN entities e ON e.etype = a.etype AND e.id = a.id WHERE a.etype = $1 AND a.alias = $2) LIMIT 1",
    )
    .bind(etype)
    .bind(key)
    .fetch_optional(c)
    .await
    .map_err(map_err)?;
    r.map(|r| StoredEntity::from_row(etype, r)).transpose()
}

async fn list_entities(
    c: &mut PgConnection,
    etype: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredEntity>> {
    let sql = format!(
        "SELECT id, attrs, parents, aliases FROM entities WHERE etype = $1 AND ($2::text IS NULL OR id > $2) \
         ORDER BY id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as(&sql).bind(etype).bind(after).fetch_all(c).await.map_err(map_err)?;
    rows.into_iter().map(|r| StoredEntity::from_row(etype, r)).collect()
}
