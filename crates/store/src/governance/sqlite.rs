//! The governance area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use rusqlite::{OptionalExtension, Row, params};

use super::{GovernanceStore, OutboxRow, Recertification, ReuseAcceptance, STREAM_STATUSES, Stream};
use crate::sqlite::rows::{bad, ms};
use crate::sqlite::{SqliteStore, map_err};
use crate::{Change, MAX_PAGE, Result, StoreError};

const STREAM_COLS: &str = "id, owner, config, status, reason, created_at, updated_at, version";
const OUTBOX_COLS: &str = "stream, jti, seq, set_jwt, created_at, attempts, next_at, last_error";

fn stream_row(r: &Row<'_>) -> rusqlite::Result<Stream> {
    let status: String = r.get(3)?;
    if !STREAM_STATUSES.contains(&status.as_str()) {
        return Err(bad(3, format!("stream status `{status}`")));
    }
    Ok(Stream {
        id: r.get(0)?,
        owner: r.get(1)?,
        config: r.get(2)?,
        status,
        reason: r.get(4)?,
        created_at: ms(r, 5)?,
        updated_at: ms(r, 6)?,
        version: r.get::<_, i64>(7)?.try_into().map_err(|_| bad(7, "stream version"))?,
    })
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    let seq: i64 = r.get(2)?;
    let attempts: i64 = r.get(5)?;
    Ok(OutboxRow {
        stream: r.get(0)?,
        jti: r.get(1)?,
        seq: u64::try_from(seq).map_err(|e| bad(2, e))?,
        set: r.get(3)?,
        created_at: ms(r, 4)?,
        attempts: u32::try_from(attempts).map_err(|e| bad(5, e))?,
        next_at: ms(r, 6)?,
        last_error: r.get(7)?,
    })
}

/// Queues rows of existing streams; of enabled or paused ones only, unless `even_disabled`
/// (a disabled stream's notice of it).
fn insert_outbox(c: &rusqlite::Connection, rows: &[OutboxRow], even_disabled: bool) -> Result<usize> {
    let mut s = c
        .prepare_cached(&format!(
            "INSERT INTO ssf_outbox ({OUTBOX_COLS}) SELECT ?1,?2,?3,?4,?5,?6,?7,?8 \
             WHERE EXISTS (SELECT 1 FROM ssf_streams WHERE id = ?1 AND (?9 OR status <> 'disabled')) \
             ON CONFLICT DO NOTHING"
        ))
        .map_err(map_err)?;
    let mut n = 0;
    for o in rows {
        let seq = i64::try_from(o.seq).map_err(|_| StoreError::Internal("seq out of range".into()))?;
        n += s
            .execute(params![
                o.stream,
                o.jti,
                seq,
                o.set,
                o.created_at.0,
                o.attempts,
                o.next_at.0,
                o.last_error,
                even_disabled
            ])
            .map_err(map_err)?;
    }
    Ok(n)
}

#[async_trait]
impl GovernanceStore for SqliteStore {
    async fn take_job(&self, name: &str, holder: &str, now: UnixMillis, until: UnixMillis) -> Result<Option<u64>> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            c.conn
                .execute(
                    "INSERT INTO jobs (name, holder, held_until, cursor) VALUES (?1, ?2, ?3, 0) \
                     ON CONFLICT (name) DO UPDATE SET holder = ?2, held_until = ?3 \
                     WHERE jobs.holder = ?2 OR jobs.held_until <= ?4",
                    params![name, holder, until.0, now.0],
                )
                .map_err(map_err)?;
            let row: (String, i64) = c
                .conn
                .query_row("SELECT holder, cursor FROM jobs WHERE name = ?1", [&name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(map_err)?;
            (row.0 == holder)
                .then(|| u64::try_from(row.1).map_err(|_| StoreError::Corrupt(format!("job `{name}` cursor"))))
                .transpose()
        })
        .await
    }

    async fn jobs(&self) -> Result<Vec<super::Job>> {
        self.read(move |c| {
            let mut s =
                c.prepare_cached("SELECT name, holder, held_until, cursor FROM jobs ORDER BY name").map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    Ok(super::Job {
                        name: r.get(0)?,
                        holder: r.get(1)?,
                        held_until: ms(r, 2)?,
                        cursor: r.get::<_, i64>(3)?.try_into().map_err(|_| bad(3, "job cursor"))?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn release_job(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            c.conn
                .execute("UPDATE jobs SET held_until = 0 WHERE name = ?1 AND holder = ?2", params![name, holder])
                .map_err(map_err)?;
            Ok(())
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
        let (from, to) = (
            i64::try_from(from).map_err(|_| StoreError::Internal("cursor out of range".into()))?,
            i64::try_from(to).map_err(|_| StoreError::Internal("cursor out of range".into()))?,
        );
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE jobs SET cursor = ?4 WHERE name = ?1 AND holder = ?2 AND cursor = ?3",
                    params![name, holder, from, to],
                )
                .map_err(map_err)?;
            if n != 1 {
                return Err(StoreError::Conflict(format!("job `{name}` is no longer held at cursor {from}")));
            }
            if insert_outbox(c.conn, &outbox, false)? > 0 {
                c.changed([Change::Outbox]);
            }
            for a in audits {
                c.audit(a)?;
            }
            Ok(())
        })
        .await
    }

    async fn put_stream(&self, s: Stream, queue: Vec<OutboxRow>, audit: Option<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            let version =
                i64::try_from(s.version).map_err(|_| StoreError::Internal("a stream version out of range".into()))?;
            let n = if version == 0 {
                c.conn
                    .execute(
                        &format!(
                            "INSERT INTO ssf_streams ({STREAM_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,1) \
                             ON CONFLICT (id) DO NOTHING"
                        ),
                        params![s.id, s.owner, s.config, s.status, s.reason, s.created_at.0, s.updated_at.0],
                    )
                    .map_err(map_err)?
            } else {
                c.conn
                    .execute(
                        "UPDATE ssf_streams SET config = ?3, status = ?4, reason = ?5, updated_at = ?6, \
                         version = version + 1 WHERE id = ?1 AND owner = ?2 AND version = ?7",
                        params![s.id, s.owner, s.config, s.status, s.reason, s.updated_at.0, version],
                    )
                    .map_err(map_err)?
            };
            if n == 0 {
                return Err(StoreError::Conflict(format!("stream {} changed meanwhile", s.id)));
            }
            if s.status == "disabled" {
                c.conn.execute("DELETE FROM ssf_outbox WHERE stream = ?1", [&s.id]).map_err(map_err)?;
            }
            insert_outbox(c.conn, &queue, true)?;
            if let Some(a) = audit {
                c.audit(a)?;
            }
            c.changed([Change::Outbox]);
            Ok(())
        })
        .await
    }

    async fn stream(&self, id: &str) -> Result<Option<Stream>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(&format!("SELECT {STREAM_COLS} FROM ssf_streams WHERE id = ?1"), [id], stream_row)
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn streams(&self, owner: Option<&str>) -> Result<Vec<Stream>> {
        let owner = owner.map(str::to_owned);
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {STREAM_COLS} FROM ssf_streams WHERE (?1 IS NULL OR owner = ?1) ORDER BY created_at, id"
                ))
                .map_err(map_err)?;
            let rows = s.query_map([owner], stream_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn delete_stream(&self, id: &str, audit: AuditEvent) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            c.conn.execute("DELETE FROM ssf_outbox WHERE stream = ?1", [&id]).map_err(map_err)?;
            let n = c.conn.execute("DELETE FROM ssf_streams WHERE id = ?1", [&id]).map_err(map_err)?;
            if n == 1 {
                c.audit(audit)?;
                c.changed([Change::Outbox]);
            }
            Ok(n == 1)
        })
        .await
    }

    async fn enqueue(&self, rows: Vec<OutboxRow>) -> Result<()> {
        self.write(move |c| {
            if insert_outbox(c.conn, &rows, false)? > 0 {
                c.changed([Change::Outbox]);
            }
            Ok(())
        })
        .await
    }

    async fn outbox(&self, stream: &str, now: UnixMillis, limit: u32) -> Result<Vec<OutboxRow>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {OUTBOX_COLS} FROM ssf_outbox WHERE stream = ?1 AND next_at <= ?2 ORDER BY seq, jti LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = s.query_map(params![stream, now.0, limit.min(MAX_PAGE)], outbox_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn acknowledge(&self, stream: &str, jtis: Vec<String>) -> Result<u64> {
        let stream = stream.to_owned();
        self.write(move |c| {
            let mut s =
                c.conn.prepare_cached("DELETE FROM ssf_outbox WHERE stream = ?1 AND jti = ?2").map_err(map_err)?;
            let mut n = 0u64;
            for j in &jtis {
                n += s.execute(params![stream, j]).map_err(map_err)? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn outbox_failed(&self, stream: &str, jti: &str, next_at: UnixMillis, error: &str) -> Result<()> {
        let (stream, jti, error) = (stream.to_owned(), jti.to_owned(), error.to_owned());
        self.write(move |c| {
            c.conn
                .execute(
                    "UPDATE ssf_outbox SET attempts = attempts + 1, next_at = ?3, last_error = ?4 \
                     WHERE stream = ?1 AND jti = ?2",
                    params![stream, jti, next_at.0, error],
                )
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn outbox_depth(&self, stream: &str) -> Result<u64> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM ssf_outbox WHERE stream = ?1", [stream], |r| r.get(0))
                .map_err(map_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn bearer(
        &self,
        jti: &str,
        task: &str,
        presenter: &str,
        at: UnixMillis,
        expires: UnixMillis,
    ) -> Result<String> {
        let (jti, task, presenter) = (jti.to_owned(), task.to_owned(), presenter.to_owned());
        // Read first: the usual answer needs no write.
        let known = {
            let jti = jti.clone();
            self.read(move |c| {
                c.query_row("SELECT presenter FROM bearers WHERE jti = ?1", [jti], |r| r.get::<_, String>(0))
                    .optional()
                    .map_err(map_err)
            })
            .await?
        };
        if let Some(p) = known {
            return Ok(p);
        }
        self.write(move |c| {
            c.conn
                .execute(
                    "INSERT INTO bearers (jti, task, presenter, first_at, expires_at) VALUES (?1,?2,?3,?4,?5) \
                     ON CONFLICT (jti) DO NOTHING",
                    params![jti, task, presenter, at.0, expires.0],
                )
                .map_err(map_err)?;
            c.conn.query_row("SELECT presenter FROM bearers WHERE jti = ?1", [jti], |r| r.get(0)).map_err(map_err)
        })
        .await
    }

    async fn prune_bearers(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            Ok(c.conn.execute("DELETE FROM bearers WHERE expires_at < ?1", [before.0]).map_err(map_err)? as u64)
        })
        .await
    }

    async fn set_settings(&self, workflow: &str, settings: String, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let workflow = workflow.to_owned();
        self.write(move |c| {
            let exists: Option<i64> = c
                .conn
                .query_row("SELECT 1 FROM workflows WHERE name = ?1", [&workflow], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if exists.is_none() {
                return Err(StoreError::not_found("workflow", &workflow));
            }
            c.conn
                .execute(
                    "INSERT INTO governance_settings (workflow, settings, updated_at) VALUES (?1,?2,?3) \
                     ON CONFLICT (workflow) DO UPDATE SET settings = ?2, updated_at = ?3",
                    params![workflow, settings, at.0],
                )
                .map_err(map_err)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn settings(&self) -> Result<Vec<(String, String)>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT workflow, settings FROM governance_settings ORDER BY workflow")
                .map_err(map_err)?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn recertify(&self, r: Recertification, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            c.conn
                .execute(
                    "INSERT INTO recertifications (kind, id, at, by, reason) VALUES (?1,?2,?3,?4,?5) \
                     ON CONFLICT (kind, id) DO UPDATE SET at = ?3, by = ?4, reason = ?5 WHERE recertifications.at <= ?3",
                    params![r.kind, r.id, r.at.0, r.by, r.reason],
                )
                .map_err(map_err)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn recertifications(&self) -> Result<Vec<Recertification>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT kind, id, at, by, reason FROM recertifications ORDER BY kind, id")
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    Ok(Recertification {
                        kind: r.get(0)?,
                        id: r.get(1)?,
                        at: ms(r, 2)?,
                        by: r.get(3)?,
                        reason: r.get(4)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn accept_reuse(&self, a: ReuseAcceptance, audit: AuditEvent) -> Result<()> {
        let workflows = serde_json::to_string(&a.workflows).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.write(move |c| {
            let exists: Option<i64> = c
                .conn
                .query_row("SELECT 1 FROM agents WHERE name = ?1", [&a.agent], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if exists.is_none() {
                return Err(StoreError::not_found("agent", &a.agent));
            }
            c.conn
                .execute(
                    "INSERT INTO reuse_acceptances (agent, workflows, by, reason, at, expires_at) VALUES (?1,?2,?3,?4,?5,?6) \
                     ON CONFLICT (agent) DO UPDATE SET workflows = ?2, by = ?3, reason = ?4, at = ?5, expires_at = ?6",
                    params![a.agent, workflows, a.by, a.reason, a.at.0, a.expires_at.0],
                )
                .map_err(map_err)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn reuse_acceptances(&self) -> Result<Vec<ReuseAcceptance>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT agent, workflows, by, reason, at, expires_at FROM reuse_acceptances ORDER BY agent",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    let w: String = r.get(1)?;
                    Ok(ReuseAcceptance {
                        agent: r.get(0)?,
                        workflows: serde_json::from_str(&w).map_err(|e| bad(1, e))?,
                        by: r.get(2)?,
                        reason: r.get(3)?,
                        at: ms(r, 4)?,
                        expires_at: ms(r, 5)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
}
