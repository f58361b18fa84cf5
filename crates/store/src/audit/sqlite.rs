//! The audit area on SQLite.

use async_trait::async_trait;
use remit_core::audit::{AuditEvent, AuditRecord, Checkpoint, Outcome};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::{AuditFilter, AuditStore, CHECKPOINT_COLS};
use crate::Result;
use crate::sqlite::rows::{bad, ms};
use crate::sqlite::{SqliteStore, load_head, map_err};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            for e in events {
                c.audit(e)?;
            }
            Ok(())
        })
        .await
    }
    async fn head(&self) -> Result<(u64, String)> {
        self.read(|c| {
            let h = load_head(c)?;
            Ok((h.seq, hex::encode(h.hash)))
        })
        .await
    }
    async fn list(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        self.read(move |c| list_audit(c, &filter)).await
    }
    async fn put_checkpoint(&self, cp: Checkpoint) -> Result<()> {
        self.write(move |c| put_checkpoint(c.conn, &cp)).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.read(|c| {
            let sql = format!("SELECT {CHECKPOINT_COLS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1");
            c.prepare_cached(&sql).and_then(|mut s| s.query_row([], checkpoint_row).optional()).map_err(map_err)
        })
        .await
    }
    async fn checkpoints_after(&self, after: u64, limit: u32) -> Result<Vec<Checkpoint>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |c| {
            let sql = format!(
                "SELECT {CHECKPOINT_COLS} FROM audit_checkpoints WHERE seq > ?1 ORDER BY seq LIMIT {}",
                limit.clamp(1, crate::MAX_PAGE)
            );
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let out = s.query_map([after], checkpoint_row).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
            out.map_err(map_err)
        })
        .await
    }
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let outcome: String = r.get(4)?;
    let outcome = match outcome.as_str() {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        other => return Err(bad(4, format!("unknown outcome `{other}`"))),
    };
    Ok(AuditRecord {
        seq: r.get(0)?,
        event: AuditEvent {
            time: ms(r, 1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            outcome,
            workflow: r.get(5)?,
            task: r.get(6)?,
            agent: r.get(7)?,
            reason: r.get(8)?,
            detail: r.get(9)?,
        },
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

fn checkpoint_row(r: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint { seq: r.get(0)?, head_hash: r.get(1)?, time: ms(r, 2)?, key_id: r.get(3)?, signature: r.get(4)? })
}

fn list_audit(c: &Connection, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = format!("SELECT {} FROM audit WHERE seq > ?1", super::AUDIT_COLS);
    // No record has a seq above i64::MAX: a larger `after` simply finds nothing.
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(i64::try_from(f.after_seq).unwrap_or(i64::MAX))];
    let mut add = |clause: &str, v: Box<dyn ToSql>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(w) = &f.workflow {
        add("workflow =", Box::new(w.to_string()));
    }
    if let Some(t) = &f.task {
        add("task =", Box::new(t.to_string()));
    }
    if let Some(a) = &f.agent {
        add("agent =", Box::new(a.to_string()));
    }
    if let Some(a) = &f.action {
        add("action =", Box::new(a.clone()));
    }
    if let Some(t) = f.since {
        add("time >=", Box::new(t.0));
    }
    if let Some(t) = f.until {
        add("time <", Box::new(t.0));
    }
    let order = if f.newest_first { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY seq {order} LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|b| &**b).collect();
    let mut out = s
        .query_map(refs.as_slice(), audit_row)
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    if f.newest_first {
        out.reverse();
    }
    Ok(out)
}

fn put_checkpoint(c: &Connection, cp: &Checkpoint) -> Result<()> {
    c.execute(
        "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES (?1,?2,?3,?4,?5) \
         ON CONFLICT (seq) DO NOTHING",
        params![cp.seq, cp.head_hash, cp.time.0, cp.key_id, cp.signature],
    )
    .map_err(map_err)?;
    Ok(())
}
