//! The SCIM area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::human::HumanState;
use remit_core::ids::HumanId;
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{HumanWrite, Membership, SCIM_COLS, ScimKind, ScimResource, ScimStore, with_group};
use crate::humans::postgres as humans;
use crate::postgres::rows::{corrupt, ms, s, so, unsigned};
use crate::postgres::{PgStore, WriteCtx, i64_of, map_err, pg_read};
use crate::{Change, Deactivation, Result, StoreError};

#[async_trait]
impl ScimStore for PgStore {
    async fn write_user(
        &self,
        r: ScimResource,
        prev_version: Option<u64>,
        human: HumanWrite,
        audit: AuditEvent,
    ) -> Result<Option<Deactivation>> {
        self.write(move |c| {
            Box::pin(async move {
                let id = HumanId::parse(&r.id).map_err(|e| StoreError::Internal(e.to_string()))?;
                match &human {
                    HumanWrite::Insert(h) => humans::insert(c.conn(), h).await?,
                    HumanWrite::Update { human, read_at } => humans::update(c.conn(), human, *read_at).await?,
                    HumanWrite::Reactivate { human } => {
                        humans::reactivate(c.conn(), &id, r.updated_at).await?;
                        humans::update(c.conn(), human, r.updated_at).await?;
                    }
                    HumanWrite::Deactivate { .. } | HumanWrite::Keep => {}
                }
                put(c.conn(), &r, prev_version).await?;
                let gone = match human {
                    HumanWrite::Deactivate { reason } => {
                        Some(humans::deactivate(c, id.clone(), r.updated_at, reason, audit).await?)
                    }
                    _ => {
                        c.audit(audit)?;
                        None
                    }
                };
                c.changed([Change::Human(id)]);
                Ok(gone)
            })
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
            Box::pin(async move {
                put(c.conn(), &r, prev_version).await?;
                regroup(c, &r.name, &members, r.updated_at).await?;
                c.audit(audit)?;
                Ok(())
            })
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
            Box::pin(async move {
                let r = get(c.conn(), kind, &id).await?.ok_or_else(|| StoreError::not_found("resource", &id))?;
                let n = sqlx::query(
                    "UPDATE scim_resources SET deleted_at = $1 WHERE id = $2 AND kind = $3 AND deleted_at IS NULL",
                )
                .bind(at.0)
                .bind(&id)
                .bind(kind.as_str())
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::not_found("resource", &id));
                }
                match kind {
                    ScimKind::User => {
                        let hid = HumanId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        let h = humans::one(c.conn(), "id = $1", &id, None)
                            .await?
                            .ok_or_else(|| StoreError::Corrupt(format!("SCIM user `{id}` has no human")))?;
                        if h.state == HumanState::Deactivated {
                            c.audit(audit)?;
                            return Ok(None);
                        }
                        let reason = "deleted by the identity provider (SCIM)".to_owned();
                        Ok(Some(humans::deactivate(c, hid, at, reason, audit).await?))
                    }
                    ScimKind::Group => {
                        let m = Membership { add: vec![], remove: members, old_name: Some(r.name.clone()) };
                        regroup(c, &r.name, &m, at).await?;
                        c.audit(audit)?;
                        Ok(None)
                    }
                }
            })
        })
        .await
    }

    async fn get(&self, kind: ScimKind, id: &str) -> Result<Option<ScimResource>> {
        pg_read!(self, |c| get(c, kind, id))
    }

    async fn list(
        &self,
        kind: ScimKind,
        name_eq: Option<String>,
        start: u64,
        count: u64,
    ) -> Result<(u64, Vec<ScimResource>)> {
        let limit = i64_of(count.min(crate::MAX_PAGE.into()))?;
        let offset = i64_of(start.saturating_sub(1))?;
        let sql = format!(
            "SELECT {SCIM_COLS}, count(*) OVER () FROM scim_resources WHERE kind = $1 AND deleted_at IS NULL \
             AND ($2::text IS NULL OR lower(name) = lower($2)) ORDER BY created_at, id LIMIT $3 OFFSET $4"
        );
        let rs: Result<Vec<PgRow>> = pg_read!(self, |c| async {
            sqlx::query(&sql)
                .bind(kind.as_str())
                .bind(name_eq.as_deref())
                .bind(limit)
                .bind(offset)
                .fetch_all(c)
                .await
                .map_err(map_err)
        });
        let rs = rs?;
        let list = rs.iter().map(row).collect::<Result<Vec<_>>>()?;
        let total = match rs.first() {
            Some(r) => unsigned(r, 8)?,
            // An empty page: count separately (the window function had no row to ride on).
            None => {
                let n: Result<i64> = pg_read!(self, |c| async {
                    sqlx::query_scalar(
                        "SELECT count(*) FROM scim_resources WHERE kind = $1 AND deleted_at IS NULL \
                         AND ($2::text IS NULL OR lower(name) = lower($2))",
                    )
                    .bind(kind.as_str())
                    .bind(name_eq.as_deref())
                    .fetch_one(c)
                    .await
                    .map_err(map_err)
                });
                u64::try_from(n?).unwrap_or(0)
            }
        };
        Ok((total, list))
    }
}

fn row(r: &PgRow) -> Result<ScimResource> {
    let kind = s(r, 1)?;
    Ok(ScimResource {
        id: s(r, 0)?,
        kind: ScimKind::parse(&kind).ok_or_else(|| corrupt(1, format!("unknown SCIM kind `{kind}`")))?,
        name: s(r, 2)?,
        external_id: so(r, 3)?,
        resource: s(r, 4)?,
        version: unsigned(r, 5)?,
        created_at: ms(r, 6)?,
        updated_at: ms(r, 7)?,
    })
}

async fn get(c: &mut PgConnection, kind: ScimKind, id: &str) -> Result<Option<ScimResource>> {
    let sql = format!("SELECT {SCIM_COLS} FROM scim_resources WHERE id = $1 AND kind = $2 AND deleted_at IS NULL");
    let r = sqlx::query(&sql).bind(id).bind(kind.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(row).transpose()
}

async fn put(c: &mut PgConnection, r: &ScimResource, prev: Option<u64>) -> Result<()> {
    let taken = || StoreError::Conflict(format!("a {} named `{}` exists", r.kind.as_str(), r.name));
    let q = match prev {
        None => sqlx::query(
            "INSERT INTO scim_resources (id, kind, name, external_id, resource, version, created_at, updated_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        )
        .bind(&r.id)
        .bind(r.kind.as_str())
        .bind(&r.name)
        .bind(&r.external_id)
        .bind(&r.resource)
        .bind(i64_of(r.version)?)
        .bind(r.created_at.0)
        .bind(r.updated_at.0),
        Some(v) => sqlx::query(
            "UPDATE scim_resources SET name = $1, external_id = $2, resource = $3, version = $4, updated_at = $5 \
             WHERE id = $6 AND kind = $7 AND version = $8 AND deleted_at IS NULL",
        )
        .bind(&r.name)
        .bind(&r.external_id)
        .bind(&r.resource)
        .bind(i64_of(r.version)?)
        .bind(r.updated_at.0)
        .bind(&r.id)
        .bind(r.kind.as_str())
        .bind(i64_of(v)?),
    };
    let n = q
        .execute(c)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => taken(),
            e => e,
        })?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!("{} `{}` changed meanwhile", r.kind.as_str(), r.id)));
    }
    Ok(())
}

async fn regroup(c: &mut WriteCtx, name: &str, m: &Membership, at: UnixMillis) -> Result<()> {
    let mut touched = Vec::new();
    for (id, add) in m.remove.iter().map(|i| (i, false)).chain(m.add.iter().map(|i| (i, true))) {
        let h = humans::one(c.conn(), "id = $1", id.as_str(), None)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("member `{id}` is not a human Remit knows")))?;
        if h.state == HumanState::Deactivated {
            continue;
        }
        let old = m.old_name.as_deref().unwrap_or(name);
        let next = if add {
            with_group(&h, Some(name), m.old_name.as_deref(), at)
        } else {
            with_group(&h, None, Some(old), at)
        };
        if next.groups != h.groups {
            humans::update(c.conn(), &next, h.updated_at).await?;
            touched.push(Change::Human(h.id.clone()));
        }
    }
    c.changed(touched);
    Ok(())
}
