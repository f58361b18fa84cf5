//! The audit area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint, Outcome};
use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, PgRow};

use super::{AuditFilter, AuditStore, CHECKPOINT_COLS};
use crate::postgres::rows::{arg, corrupt, ms, s, so, unsigned};
use crate::postgres::{PgStore, i64_of, map_err, pg_read};
use crate::{Result, StoreError};

#[async_trait]
impl AuditStore for PgStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                for e in events {
                    c.audit(e)?;
                }
                Ok(())
            })
        })
        .await
    }
    async fn head(&self) -> Result<(u64, String)> {
        pg_read!(self, |c| audit_head(c))
    }
    async fn list(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        let f = &filter;
        pg_read!(self, |c| list_audit(c, f))
    }
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.write(move |c| Box::pin(async move { put_checkpoint(c.conn(), cp).await })).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        pg_read!(self, |c| async move {
            let sql = format!("SELECT {CHECKPOINT_COLS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1");
            let r = sqlx::query(&sql).fetch_optional(&mut *c).await.map_err(map_err)?;
            r.as_ref().map(checkpoint_row).transpose()
        })
    }
    async fn checkpoints_after(&self, after: u64, limit: u32) -> Result<Vec<Checkpoint>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        pg_read!(self, |c| async move {
            let sql = format!(
                "SELECT {CHECKPOINT_COLS} FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT {}",
                limit.clamp(1, crate::MAX_PAGE)
            );
            let rs = sqlx::query(&sql).bind(after).fetch_all(&mut *c).await.map_err(map_err)?;
            rs.iter().map(checkpoint_row).collect()
        })
    }
}

fn audit_row(r: &PgRow) -> Result<AuditRecord> {
    let outcome = match s(r, 4)?.as_str() {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        other => return Err(corrupt(4, format!("unknown outcome `{other}`"))),
    };
    Ok(AuditRecord {
        seq: unsigned(r, 0)?,
        event: AuditEvent {
            time: ms(r, 1)?,
            actor: s(r, 2)?,
            action: s(r, 3)?,
            outcome,
            workflow: so(r, 5)?,
            task: so(r, 6)?,
            agent: so(r, 7)?,
            reason: so(r, 8)?,
            detail: s(r, 9)?,
        },
        prev_hash: s(r, 10)?,
        hash: s(r, 11)?,
    })
}

fn checkpoint_row(r: &PgRow) -> Result<Checkpoint> {
    Ok(Checkpoint { seq: unsigned(r, 0)?, head_hash: s(r, 1)?, time: ms(r, 2)?, key_id: s(r, 3)?, signature: s(r, 4)? })
}

async fn audit_head(c: &mut PgConnection) -> Result<(u64, String)> {
    let r: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(c)
        .await
        .map_err(map_err)?;
    match r {
        None => Ok((0, hex::encode(remit_core::audit::GENESIS_HASH))),
        Some((seq, h)) => Ok((u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative audit seq".into()))?, h)),
    }
}

async fn list_audit(c: &mut PgConnection, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = format!("SELECT {} FROM audit WHERE seq > $1", super::AUDIT_COLS);
    let mut args = PgArguments::default();
    arg(&mut args, i64::try_from(f.after_seq).unwrap_or(i64::MAX))?;
    for (clause, v) in [
        ("workflow =", f.workflow.as_ref().map(ToString::to_string)),
        ("task =", f.task.as_ref().map(ToString::to_string)),
        ("agent =", f.agent.as_ref().map(ToString::to_string)),
        ("action =", f.action.clone()),
    ] {
        if let Some(v) = v {
            let n = arg(&mut args, v)?;
            sql.push_str(&format!(" AND {clause} ${n}"));
        }
    }
    if let Some(t) = f.since {
        let n = arg(&mut args, t.0)?;
        sql.push_str(&format!(" AND time >= ${n}"));
    }
    if let Some(t) = f.until {
        let n = arg(&mut args, t.0)?;
        sql.push_str(&format!(" AND time < ${n}"));
    }
    let order = if f.newest_first { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY seq {order} LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let rs = sqlx::query_with(&sql, args).fetch_all(c).await.map_err(map_err)?;
    let mut out = rs.iter().map(audit_row).collect::<Result<Vec<_>>>()?;
    if f.newest_first {
        out.reverse();
    }
    Ok(out)
}

async fn put_checkpoint(c: &mut PgConnection, cp: Checkpoint) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES ($1,$2,$3,$4,$5) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(i64_of(cp.seq)?)
    .bind(&cp.head_hash)
    .bind(cp.time.0)
    .bind(&cp.key_id)
    .bind(&cp.signature)
    .execute(c)
    .await
    .map_err(map_err)?;
    Ok(())
}
