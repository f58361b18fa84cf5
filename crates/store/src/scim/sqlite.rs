//! The SCIM area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::HumanId;
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{HumanWrite, Membership, SCIM_COLS, ScimKind, ScimResource, ScimStore, with_group};
use crate::humans::sqlite as humans;
use crate::sqlite::rows::{bad, ms};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Deactivation, Result, StoreError};

#[async_trait]
impl ScimStore for SqliteStore {
    async fn write_user(
        &self,
        r: ScimResource,
        prev_version: Option<u64>,
        human: HumanWrite,
        audit: AuditEvent,
    ) -> Result<Option<Deactivation>> {
        self.write(move |c| {
            let id = HumanId::parse(&r.id).map_err(|e| StoreError::Internal(e.to_string()))?;
            // The human first: a new resource names an existing row.
            let mut gone = None;
            match &human {
                HumanWrite::Insert(h) => humans::insert(c.conn, h)?,
                HumanWrite::Update { human, read_at } => humans::update(c.conn, human, *read_at)?,
                HumanWrite::Reactivate { human } => {
                    humans::reactivate(c.conn, &id, r.updated_at)?;
                    humans::update(c.conn, human, r.updated_at)?;
                }
                HumanWrite::Deactivate { .. } | HumanWrite::Keep => {}
            }
            put(c.conn, &r, prev_version)?;
            if let HumanWrite::Deactivate { reason } = &human {
                gone = Some(humans::deactivate(c, &id, r.updated_at, reason, audit)?);
            } else {
                c.audit(audit)?;
            }
            c.changed([Change::Human(id)]);
            Ok(gone)
        })
        .await
    }

    async fn write_group(
        &self,
        r: ScimResource,
        prev_version: Option<u64>,
        members: Membership,
        audit: AuditEvent,
    ) -> Result<()> {
        self.write(move |c| {
            put(c.conn, &r, prev_version)?;
            regroup(c, &r.name, &members, r.updated_at)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn delete(
        &self,
        kind: ScimKind,
        id: &str,
        members: Vec<HumanId>,
        at: UnixMillis,
        audit: AuditEvent,
    ) -> Result<Option<Deactivation>> {
        let id = id.to_owned();
        self.write(move |c| {
            let r = get(c.conn, kind, &id)?.ok_or_else(|| StoreError::not_found("resource", &id))?;
            let n = c
                .conn
                .execute(
                    "UPDATE scim_resources SET deleted_at = ?1 WHERE id = ?2 AND kind = ?3 AND deleted_at IS NULL",
                    params![at.0, id, kind.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found("resource", &id));
            }
            match kind {
                ScimKind::User => {
                    let hid = HumanId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let h = humans::one(c.conn, "id = ?1", params![id])?
                        .ok_or_else(|| StoreError::Corrupt(format!("SCIM user `{id}` has no human")))?;
                    if h.state == remit_core::human::HumanState::Deactivated {
                        c.audit(audit)?;
                        return Ok(None);
                    }
                    Ok(Some(humans::deactivate(c, &hid, at, "deleted by the identity provider (SCIM)", audit)?))
                }
                ScimKind::Group => {
                    let m = Membership { add: vec![], remove: members, old_name: None };
                    regroup(c, &r.name, &Membership { old_name: Some(r.name.clone()), ..m }, at)?;
                    c.audit(audit)?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn get(&self, kind: ScimKind, id: &str) -> Result<Option<ScimResource>> {
        let id = id.to_owned();
        self.read(move |c| get(c, kind, &id)).await
    }

    async fn list(
        &self,
        kind: ScimKind,
        name_eq: Option<String>,
        start: u64,
        count: u64,
    ) -> Result<(u64, Vec<ScimResource>)> {
        self.read(move |c| {
            let total: i64 = c
                .query_row(
                    "SELECT count(*) FROM scim_resources WHERE kind = ?1 AND deleted_at IS NULL \
                     AND (?2 IS NULL OR lower(name) = lower(?2))",
                    params![kind.as_str(), name_eq],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let sql = format!(
                "SELECT {SCIM_COLS} FROM scim_resources WHERE kind = ?1 AND deleted_at IS NULL \
                 AND (?2 IS NULL OR lower(name) = lower(?2)) ORDER BY created_at, id LIMIT ?3 OFFSET ?4"
            );
            let mut s = c.prepare(&sql).map_err(map_err)?;
            let limit = i64::try_from(count.min(crate::MAX_PAGE.into())).unwrap_or(0);
            let offset = i64::try_from(start.saturating_sub(1)).unwrap_or(i64::MAX);
            let rows = s.query_map(params![kind.as_str(), name_eq, limit, offset], row).map_err(map_err)?;
            let list = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?;
            Ok((u64::try_from(total).unwrap_or(0), list))
        })
        .await
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<ScimResource> {
    let kind: String = r.get(1)?;
    Ok(ScimResource {
        id: r.get(0)?,
        kind: ScimKind::parse(&kind).ok_or_else(|| bad(1, format!("unknown SCIM kind `{kind}`")))?,
        name: r.get(2)?,
        external_id: r.get(3)?,
        resource: r.get(4)?,
        version: r.get(5)?,
        created_at: ms(r, 6)?,
        updated_at: ms(r, 7)?,
    })
}

fn get(c: &Connection, kind: ScimKind, id: &str) -> Result<Option<ScimResource>> {
    let sql = format!("SELECT {SCIM_COLS} FROM scim_resources WHERE id = ?1 AND kind = ?2 AND deleted_at IS NULL");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row(params![id, kind.as_str()], row).optional()).map_err(map_err)
}

/// Inserts (`prev` `None`) or replaces the resource if it is still at version `prev`.
fn put(c: &Connection, r: &ScimResource, prev: Option<u64>) -> Result<()> {
    let taken = || StoreError::Conflict(format!("a {} named `{}` exists", r.kind.as_str(), r.name));
    let n = match prev {
        None => c
            .execute(
                "INSERT INTO scim_resources (id, kind, name, external_id, resource, version, created_at, updated_at) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                params![
                    r.id,
                    r.kind.as_str(),
                    r.name,
                    r.external_id,
                    r.resource,
                    r.version,
                    r.created_at.0,
                    r.updated_at.0
                ],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => taken(),
                e => e,
            })?,
        Some(v) => c
            .execute(
                "UPDATE scim_resources SET name = ?1, external_id = ?2, resource = ?3, version = ?4, updated_at = ?5 \
                 WHERE id = ?6 AND kind = ?7 AND version = ?8 AND deleted_at IS NULL",
                params![r.name, r.external_id, r.resource, r.version, r.updated_at.0, r.id, r.kind.as_str(), v],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => taken(),
                e => e,
            })?,
    };
    if n == 0 {
        return Err(StoreError::Conflict(format!("{} `{}` changed meanwhile", r.kind.as_str(), r.id)));
    }
    Ok(())
}

/// Applies a Group's membership change to its members' groups.
fn regroup(c: &mut WriteCtx<'_>, name: &str, m: &Membership, at: UnixMillis) -> Result<()> {
    let mut touched = Vec::new();
    for (id, add) in m.remove.iter().map(|i| (i, false)).chain(m.add.iter().map(|i| (i, true))) {
        let h = humans::one(c.conn, "id = ?1", params![id.as_str()])?
            .ok_or_else(|| StoreError::Conflict(format!("member `{id}` is not a human Remit knows")))?;
        if h.state == remit_core::human::HumanState::Deactivated {
            continue;
        }
        let old = m.old_name.as_deref().unwrap_or(name);
        let next = if add {
            with_group(&h, Some(name), m.old_name.as_deref(), at)
        } else {
            with_group(&h, None, Some(old), at)
        };
        if next.groups != h.groups {
            humans::update(c.conn, &next, h.updated_at)?;
            touched.push(Change::Human(h.id.clone()));
        }
    }
    c.changed(touched);
    Ok(())
}
