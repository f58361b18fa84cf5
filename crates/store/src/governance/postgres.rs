//! The governance area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{GovernanceStore, OutboxRow, Recertification, ReuseAcceptance, STREAM_STATUSES, Stream};
use crate::postgres::rows::{corrupt, ms, s, so, unsigned};
use crate::postgres::{PgStore, i64_of, map_err, pg_read};
use crate::{Change, MAX_PAGE, Result, StoreError};

const STREAM_COLS: &str = "id, owner, config, status, reason, created_at, updated_at, version";
const OUTBOX_COLS: &str = "stream, jti, seq, set_jwt, created_at, attempts, next_at, last_error";

fn stream_row(r: &PgRow) -> Result<Stream> {
    let status = s(r, 3)?;
    if !STREAM_STATUSES.contains(&status.as_str()) {
        return Err(corrupt(3, format!("stream status `{status}`")));
    }
    Ok(Stream {
        id: s(r, 0)?,
        owner: s(r, 1)?,
        config: s(r, 2)?,
        status,
        reason: so(r, 4)?,
        created_at: ms(r, 5)?,
        updated_at: ms(r, 6)?,
        version: unsigned(r, 7)?,
    })
}

fn outbox_row(r: &PgRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        stream: s(r, 0)?,
        jti: s(r, 1)?,
        seq: unsigned(r, 2)?,
        set: s(r, 3)?,
        created_at: ms(r, 4)?,
        attempts: unsigned(r, 5)?,
        next_at: ms(r, 6)?,
        last_error: so(r, 7)?,
    })
}

/// Queues rows of existing streams; of enabled or paused ones only, unless `even_disabled`
/// (a disabled stream's notice of it).
async fn insert_outbox(c: &mut PgConnection, rows: &[OutboxRow], even_disabled: bool) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut streams, mut jtis, mut seqs, mut sets, mut due) = (vec![], vec![], vec![], vec![], vec![]);
    for o in rows {
        streams.push(o.stream.as_str());
        jtis.push(o.jti.as_str());
        seqs.push(i64_of(o.seq)?);
        sets.push(o.set.as_str());
        due.push(o.next_at.0);
    }
    let now = rows[0].created_at.0;
    let n = sqlx::query(&format!(
        "INSERT INTO ssf_outbox ({OUTBOX_COLS}) \
         SELECT u.stream, u.jti, u.seq, u.set_jwt, $6, 0, u.next_at, NULL \
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS u(stream, jti, seq, set_jwt, next_at) \
         WHERE EXISTS (SELECT 1 FROM ssf_streams WHERE id = u.stream AND ($7 OR status <> 'disabled')) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(&streams)
    .bind(&jtis)
    .bind(&seqs)
    .bind(&sets)
    .bind(&due)
    .bind(now)
    .bind(even_disabled)
    .execute(c)
    .await
    .map_err(map_err)?
    .rows_affected();
    Ok(n)
}

#[async_trait]
impl GovernanceStore for PgStore {
    async fn take_job(&self, name: &str, holder: &str, now: UnixMillis, until: UnixMillis) -> Result<Option<u64>> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let row: Option<(String, i64)> = sqlx::query_as(
                    "INSERT INTO jobs (name, holder, held_until, cursor) VALUES ($1, $2, $3, 0) \
                     ON CONFLICT (name) DO UPDATE SET holder = $2, held_until = $3 \
                     WHERE jobs.holder = $2 OR jobs.held_until <= $4 RETURNING holder, cursor",
                )
                .bind(&name)
                .bind(&holder)
                .bind(until.0)
                .bind(now.0)
                .fetch_optional(c.conn())
                .await
                .map_err(map_err)?;
                match row {
                    Some((h, cur)) if h == holder => Ok(Some(
                        u64::try_from(cur).map_err(|_| crate::StoreError::Corrupt(format!("job `{name}` cursor")))?,
                    )),
                    _ => Ok(None),
                }
            })
        })
        .await
    }

    async fn jobs(&self) -> Result<Vec<super::Job>> {
        pg_read!(self, |c| async {
            let rows = sqlx::query("SELECT name, holder, held_until, cursor FROM jobs ORDER BY name")
                .fetch_all(c)
                .await
                .map_err(map_err)?;
            rows.iter()
                .map(|r| {
                    Ok(super::Job { name: s(r, 0)?, holder: s(r, 1)?, held_until: ms(r, 2)?, cursor: unsigned(r, 3)? })
                })
                .collect()
        })
    }

    async fn release_job(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE jobs SET held_until = 0 WHERE name = $1 AND holder = $2")
                    .bind(&name)
                    .bind(&holder)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn advance_job(
        &self,
        name: &str,
        holder: &str,
        from: u64,
        to: u64,
        outbox: Vec<OutboxRow>,
        audits: Vec<AuditEvent>,
    ) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let (from, to) = (i64_of(from)?, i64_of(to)?);
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE jobs SET cursor = $4 WHERE name = $1 AND holder = $2 AND cursor = $3")
                    .bind(&name)
                    .bind(&holder)
                    .bind(from)
                    .bind(to)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n != 1 {
                    return Err(crate::StoreError::Conflict(format!(
                        "job `{name}` is no longer held at cursor {from}"
                    )));
                }
                if insert_outbox(c.conn(), &outbox, false).await? > 0 {
                    c.changed([Change::Outbox]);
                }
                for a in audits {
                    c.audit(a)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn put_stream(&self, st: Stream, queue: Vec<OutboxRow>, audit: Option<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let version = i64::try_from(st.version)
                    .map_err(|_| StoreError::Internal("a stream version out of range".into()))?;
                let n = if version == 0 {
                    sqlx::query(&format!(
                        "INSERT INTO ssf_streams ({STREAM_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,1) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(&st.id)
                    .bind(&st.owner)
                    .bind(&st.config)
                    .bind(&st.status)
                    .bind(&st.reason)
                    .bind(st.created_at.0)
                    .bind(st.updated_at.0)
                    .execute(c.conn())
                    .await
                } else {
                    sqlx::query(
                        "UPDATE ssf_streams SET config = $3, status = $4, reason = $5, updated_at = $6, \
                         version = version + 1 WHERE id = $1 AND owner = $2 AND version = $7",
                    )
                    .bind(&st.id)
                    .bind(&st.owner)
                    .bind(&st.config)
                    .bind(&st.status)
                    .bind(&st.reason)
                    .bind(st.updated_at.0)
                    .bind(version)
                    .execute(c.conn())
                    .await
                }
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(format!("stream {} changed meanwhile", st.id)));
                }
                if st.status == "disabled" {
                    sqlx::query("DELETE FROM ssf_outbox WHERE stream = $1")
                        .bind(&st.id)
                        .execute(c.conn())
                        .await
                        .map_err(map_err)?;
                }
                insert_outbox(c.conn(), &queue, true).await?;
                if let Some(a) = audit {
                    c.audit(a)?;
                }
                c.changed([Change::Outbox]);
                Ok(())
            })
        })
        .await
    }

    async fn stream(&self, id: &str) -> Result<Option<Stream>> {
        let sql = format!("SELECT {STREAM_COLS} FROM ssf_streams WHERE id = $1");
        pg_read!(self, |c| async {
            let r = sqlx::query(&sql).bind(id).fetch_optional(c).await.map_err(map_err)?;
            r.as_ref().map(stream_row).transpose()
        })
    }

    async fn streams(&self, owner: Option<&str>) -> Result<Vec<Stream>> {
        let sql = format!(
            "SELECT {STREAM_COLS} FROM ssf_streams WHERE ($1::text IS NULL OR owner = $1) ORDER BY created_at, id"
        );
        pg_read!(self, |c| async {
            let rows = sqlx::query(&sql).bind(owner).fetch_all(c).await.map_err(map_err)?;
            rows.iter().map(stream_row).collect()
        })
    }

    async fn delete_stream(&self, id: &str, audit: AuditEvent) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM ssf_outbox WHERE stream = $1")
                    .bind(&id)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                let n = sqlx::query("DELETE FROM ssf_streams WHERE id = $1")
                    .bind(&id)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 1 {
                    c.audit(audit)?;
                    c.changed([Change::Outbox]);
                }
                Ok(n == 1)
            })
        })
        .await
    }

    async fn enqueue(&self, rows: Vec<OutboxRow>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                if insert_outbox(c.conn(), &rows, false).await? > 0 {
                    c.changed([Change::Outbox]);
                }
                Ok(())
            })
        })
        .await
    }

    async fn outbox(&self, stream: &str, now: UnixMillis, limit: u32) -> Result<Vec<OutboxRow>> {
        let sql = format!(
            "SELECT {OUTBOX_COLS} FROM ssf_outbox WHERE stream = $1 AND next_at <= $2 ORDER BY seq, jti LIMIT $3"
        );
        let limit = i64::from(limit.min(MAX_PAGE));
        pg_read!(self, |c| async {
            let rows = sqlx::query(&sql).bind(stream).bind(now.0).bind(limit).fetch_all(c).await.map_err(map_err)?;
            rows.iter().map(outbox_row).collect()
        })
    }

    async fn acknowledge(&self, stream: &str, jtis: Vec<String>) -> Result<u64> {
        let stream = stream.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM ssf_outbox WHERE stream = $1 AND jti = ANY($2)")
                    .bind(&stream)
                    .bind(&jtis)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected())
            })
        })
        .await
    }

    async fn outbox_failed(&self, stream: &str, jti: &str, next_at: UnixMillis, error: &str) -> Result<()> {
        let (stream, jti, error) = (stream.to_owned(), jti.to_owned(), error.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE ssf_outbox SET attempts = attempts + 1, next_at = $3, last_error = $4 \
                     WHERE stream = $1 AND jti = $2",
                )
                .bind(&stream)
                .bind(&jti)
                .bind(next_at.0)
                .bind(&error)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn outbox_depth(&self, stream: &str) -> Result<u64> {
        pg_read!(self, |c| async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ssf_outbox WHERE stream = $1")
                .bind(stream)
                .fetch_one(c)
                .await
                .map_err(map_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    async fn bearer(
        &self,
        jti: &str,
        task: &str,
        presenter: &str,
        at: UnixMillis,
        expires: UnixMillis,
    ) -> Result<String> {
        let known: Option<String> = pg_read!(self, |c| async {
            sqlx::query_scalar("SELECT presenter FROM bearers WHERE jti = $1")
                .bind(jti)
                .fetch_optional(c)
                .await
                .map_err(map_err)
        })?;
        if let Some(p) = known {
            return Ok(p);
        }
        let (jti, task, presenter) = (jti.to_owned(), task.to_owned(), presenter.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO bearers (jti, task, presenter, first_at, expires_at) VALUES ($1,$2,$3,$4,$5) \
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(&jti)
                .bind(&task)
                .bind(&presenter)
                .bind(at.0)
                .bind(expires.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                sqlx::query_scalar("SELECT presenter FROM bearers WHERE jti = $1")
                    .bind(&jti)
                    .fetch_one(c.conn())
                    .await
                    .map_err(map_err)
            })
        })
        .await
    }

    async fn prune_bearers(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query("DELETE FROM bearers WHERE expires_at < $1")
                    .bind(before.0)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected())
            })
        })
        .await
    }

    async fn set_settings(&self, workflow: &str, settings: String, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let workflow = workflow.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM workflows WHERE name = $1")
                    .bind(&workflow)
                    .fetch_optional(c.conn())
                    .await
                    .map_err(map_err)?;
                if exists.is_none() {
                    return Err(crate::StoreError::not_found("workflow", &workflow));
                }
                sqlx::query(
                    "INSERT INTO governance_settings (workflow, settings, updated_at) VALUES ($1,$2,$3) \
                     ON CONFLICT (workflow) DO UPDATE SET settings = $2, updated_at = $3",
                )
                .bind(&workflow)
                .bind(&settings)
                .bind(at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn settings(&self) -> Result<Vec<(String, String)>> {
        pg_read!(self, |c| async {
            sqlx::query_as("SELECT workflow, settings FROM governance_settings ORDER BY workflow")
                .fetch_all(c)
                .await
                .map_err(map_err)
        })
    }

    async fn recertify(&self, r: Recertification, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO recertifications (kind, id, at, by, reason) VALUES ($1,$2,$3,$4,$5) \
                     ON CONFLICT (kind, id) DO UPDATE SET at = $3, by = $4, reason = $5 \
                     WHERE recertifications.at <= $3",
                )
                .bind(&r.kind)
                .bind(&r.id)
                .bind(r.at.0)
                .bind(&r.by)
                .bind(&r.reason)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn recertifications(&self) -> Result<Vec<Recertification>> {
        pg_read!(self, |c| async {
            let rows = sqlx::query("SELECT kind, id, at, by, reason FROM recertifications ORDER BY kind, id")
                .fetch_all(c)
                .await
                .map_err(map_err)?;
            rows.iter()
                .map(|r| {
                    Ok(Recertification { kind: s(r, 0)?, id: s(r, 1)?, at: ms(r, 2)?, by: s(r, 3)?, reason: s(r, 4)? })
                })
                .collect()
        })
    }

    async fn accept_reuse(&self, a: ReuseAcceptance, audit: AuditEvent) -> Result<()> {
        let workflows = serde_json::to_string(&a.workflows).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
        self.write(move |c| {
            Box::pin(async move {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM agents WHERE name = $1")
                    .bind(&a.agent)
                    .fetch_optional(c.conn())
                    .await
                    .map_err(map_err)?;
                if exists.is_none() {
                    return Err(crate::StoreError::not_found("agent", &a.agent));
                }
                sqlx::query(
                    "INSERT INTO reuse_acceptances (agent, workflows, by, reason, at, expires_at) VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (agent) DO UPDATE SET workflows = $2, by = $3, reason = $4, at = $5, expires_at = $6",
                )
                .bind(&a.agent)
                .bind(&workflows)
                .bind(&a.by)
                .bind(&a.reason)
                .bind(a.at.0)
                .bind(a.expires_at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn reuse_acceptances(&self) -> Result<Vec<ReuseAcceptance>> {
        pg_read!(self, |c| async {
            let rows = sqlx::query(
                "SELECT agent, workflows, by, reason, at, expires_at FROM reuse_acceptances ORDER BY agent",
            )
            .fetch_all(c)
            .await
            .map_err(map_err)?;
            rows.iter()
                .map(|r| {
                    Ok(ReuseAcceptance {
                        agent: s(r, 0)?,
                        workflows: serde_json::from_str(&s(r, 1)?).map_err(|e| corrupt(1, e))?,
                        by: s(r, 2)?,
                        reason: s(r, 3)?,
                        at: ms(r, 4)?,
                        expires_at: ms(r, 5)?,
                    })
                })
                .collect()
        })
    }
}
