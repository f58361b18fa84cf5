//! The policy area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, params};

use super::{PolicyStore, StoredEntity, StoredPolicySet};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Result, StoreError};

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn put_set(&self, bundle: String, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
        let by = by.to_owned();
        self.write(move |c| put_policy_set(c, &bundle, at, &by, audit)).await
    }
    async fn active_set(&self) -> Result<Option<StoredPolicySet>> {
        self.read(active_policy_set).await
    }
    async fn put_entities(&self, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()> {
        let at = audit.time;
        self.write(move |c| put_entities(c, &entities, at, audit)).await
    }
    async fn entity(&self, etype: &str, id_or_alias: &str) -> Result<Option<StoredEntity>> {
        let (t, k) = (etype.to_owned(), id_or_alias.to_owned());
        self.read(move |c| entity(c, &t, &k)).await
    }
    async fn list_entities(&self, etype: &str, after: Option<String>, limit: u32) -> Result<Vec<StoredEntity>> {
        let t = etype.to_owned();
        self.read(move |c| list_entities(c, &t, after.as_deref(), limit)).await
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

fn put_policy_set(ctx: &mut WriteCtx<'_>, bundle: &str, at: UnixMillis, by: &str, audit: AuditEvent) -> Result<u64> {
    let version: u64 = ctx
        .conn
        .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_sets", [], |r| r.get(0))
        .map_err(map_err)?;
    ctx.conn
        .execute(
            "INSERT INTO policy_sets (version, bundle, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![version, bundle, at.0, by],
        )
        .map_err(map_err)?;
    ctx.audit(audit.with_detail_field("version", version.into()))?;
    ctx.changed([Change::Policy]);
    Ok(version)
}

fn active_policy_set(c: &Connection) -> Result<Option<StoredPolicySet>> {
    c.query_row(
        "SELECT version, bundle, created_at, created_by FROM policy_sets ORDER BY version DESC LIMIT 1",
        [],
        |r| {
            Ok(StoredPolicySet {
                version: r.get(0)?,
                bundle: r.get(1)?,
                created_at: UnixMillis(r.get(2)?),
                created_by: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(map_err)
}

fn put_entities(ctx: &mut WriteCtx<'_>, entities: &[StoredEntity], at: UnixMillis, audit: AuditEvent) -> Result<()> {
    for e in entities {
        ctx.conn
            .execute(
                "INSERT INTO entities (etype, id, attrs, parents, aliases, updated_at) VALUES (?1,?2,?3,?4,?5,?6) \
                 ON CONFLICT (etype, id) DO UPDATE SET attrs = excluded.attrs, parents = excluded.parents, \
                 aliases = excluded.aliases, updated_at = excluded.updated_at",
                params![e.etype, e.id, e.attrs, e.parents, json(&e.aliases), at.0],
            )
            .map_err(map_err)?;
        ctx.conn
            .execute("DELETE FROM entity_aliases WHERE etype = ?1 AND id = ?2", params![e.etype, e.id])
            .map_err(map_err)?;
    }
    for e in entities {
        for a in &e.aliases {
            let n = ctx
                .conn
                .execute(
                    "INSERT INTO entity_aliases (etype, alias, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![e.etype, a, e.id],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(conflict(format!("alias `{a}` already names another `{}` entity", e.etype)));
            }
        }
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Entities]);
    Ok(())
}

fn entity(c: &Connection, etype: &str, key: &str) -> Result<Option<StoredEntity>> {
    let row: Option<(String, String, String, String)> = c
        .prepare_cached(
            "SELECT e.id, e.attrs, e.parents, e.aliases FROM entities e WHERE e.etype = ?1 AND e.id = ?2 \
             UNION ALL SELECT e.id, e.attrs, e.parents, e.aliases FROM entity_aliases a \
             JOIN entities e ON e.etype = a.etype AND e.id = a.id WHERE a.etype = ?1 AND a.alias = ?2 LIMIT 1",
        )
        .and_then(|mut s| s.query_row([etype, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional())
        .map_err(map_err)?;
    row.map(|r| StoredEntity::from_row(etype, r)).transpose()
}

fn list_entities(c: &Connection, etype: &str, after: Option<&str>, limit: u32) -> Result<Vec<StoredEntity>> {
    let sql = format!(
        "SELECT id, attrs, parents, aliases FROM entities WHERE etype = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let rows = s
        .query_map(params![etype, after], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<(String, String, String, String)>>>()
        .map_err(map_err)?;
    rows.into_iter().map(|r| StoredEntity::from_row(etype, r)).collect()
}
