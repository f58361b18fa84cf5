//! The leases area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{LeaseId, TaskId};
use remit_core::lease::{EngineKind, Lease, LeaseState, MAX_LEASES_PER_TASK, STUCK_AFTER_ATTEMPTS};
use remit_core::time::UnixMillis;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{LEASE_COLS, LeaseCounts, LeaseFilter, LeaseStore};
use crate::identity::WALK_CHUNK;
use crate::sqlite::rows::{bad, id, ms, ms_opt};
use crate::sqlite::{SqliteStore, map_err};
use crate::{MAX_PAGE, Result, StoreError};

/// Moves the active leases of `tasks` to `revoking`, due at once; returns how many. Called
/// inside a kill's (or a task end's) transaction.
pub(crate) fn mark_revoking(c: &Connection, tasks: &[TaskId], at: UnixMillis, reason: &str) -> Result<u64> {
    let mut n = 0u64;
    for chunk in tasks.chunks(WALK_CHUNK) {
        let marks = (0..chunk.len()).map(|i| format!("?{}", i + 3)).collect::<Vec<_>>().join(",");
        let sql = format!(
            "UPDATE leases SET state = 'revoking', revoke_requested_at = ?1, revoke_reason = ?2, \
             next_attempt_at = MAX(?1, COALESCE(next_attempt_at, ?1)) WHERE state = 'active' AND task IN ({marks})"
        );
        let mut s = c.prepare_cached(&sql).map_err(map_err)?;
        let ids: Vec<&str> = chunk.iter().map(|t| t.as_str()).collect();
        let mut args: Vec<&dyn ToSql> = vec![&at.0, &reason];
        args.extend(ids.iter().map(|v| v as &dyn ToSql));
        n += s.execute(args.as_slice()).map_err(map_err)? as u64;
    }
    Ok(n)
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn create_lease(&self, l: Lease, audits: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            let live: Option<(String, i64)> = c
                .conn
                .query_row("SELECT state, expires_at FROM tasks WHERE id = ?1", [l.task.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(map_err)?;
            match live {
                None => return Err(StoreError::not_found("task", &l.task)),
                Some((s, exp)) if s != "active" || exp <= l.created_at.0 => {
                    return Err(StoreError::Conflict(format!("task `{}` is not active", l.task)));
                }
                _ => {}
            }
            let tool: Option<String> = c
                .conn
                .query_row("SELECT state FROM tools WHERE name = ?1", [l.tool.as_str()], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            if tool.as_deref() != Some("active") {
                return Err(StoreError::Conflict(format!("tool `{}` is not active", l.tool)));
            }
            let held: u32 = c
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM leases WHERE task = ?1 AND state <> 'revoked'",
                    [l.task.as_str()],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if held >= MAX_LEASES_PER_TASK {
                return Err(StoreError::Conflict(format!("a task holds at most {MAX_LEASES_PER_TASK} leases")));
            }
            c.conn
                .execute(
                    &format!(
                        "INSERT INTO leases ({LEASE_COLS}) VALUES \
                         (?1,?2,?3,?4,?5,?6,?7,'active',?8,?9,NULL,NULL,0,?10,NULL,NULL,?11)"
                    ),
                    params![
                        l.id.as_str(),
                        l.tool.as_str(),
                        l.task.as_str(),
                        l.workflow.as_str(),
                        l.agent.as_str(),
                        l.engine.as_str(),
                        l.handle,
                        l.created_at.0,
                        l.expires_at.0,
                        l.next_attempt_at.map(|t| t.0),
                        l.target
                    ],
                )
                .map_err(map_err)?;
            for a in audits {
                c.audit(a)?;
            }
            Ok(())
        })
        .await
    }

    async fn lease_made(&self, lid: &LeaseId) -> Result<bool> {
        let lid = lid.clone();
        self.write(move |c| {
            let n = c
                .conn
                .execute("UPDATE leases SET next_attempt_at = NULL WHERE id = ?1 AND state = 'active'", [lid.as_str()])
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn lease(&self, lid: &LeaseId) -> Result<Option<Lease>> {
        let lid = lid.clone();
        self.read(move |c| {
            c.query_row(&format!("SELECT {LEASE_COLS} FROM leases WHERE id = ?1"), [lid.as_str()], row)
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn list_leases(&self, f: LeaseFilter) -> Result<Vec<Lease>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {LEASE_COLS} FROM leases WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR workflow = ?2) \
                 AND (?3 IS NULL OR tool = ?3) AND (?4 IS NULL OR state = ?4) \
                 AND (?5 = 0 OR (state = 'revoking' AND attempts >= ?6)) \
                 ORDER BY created_at DESC, id LIMIT ?7"
            );
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = s
                .query_map(
                    params![
                        f.task.as_ref().map(|t| t.as_str()),
                        f.workflow.as_ref().map(|w| w.as_str()),
                        f.tool.as_ref().map(|t| t.as_str()),
                        f.state.map(|s| s.as_str()),
                        f.stuck,
                        STUCK_AFTER_ATTEMPTS,
                        f.limit.min(MAX_PAGE)
                    ],
                    row,
                )
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn revoke_lease(
        &self,
        lid: &LeaseId,
        at: UnixMillis,
        reason: &str,
        audit: Option<AuditEvent>,
    ) -> Result<bool> {
        let (lid, reason) = (lid.clone(), reason.to_owned());
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE leases SET state = 'revoking', revoke_requested_at = ?1, revoke_reason = ?2, \
                     next_attempt_at = MAX(?1, COALESCE(next_attempt_at, ?1)) WHERE id = ?3 AND state = 'active'",
                    params![at.0, reason, lid.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                let exists: bool = c
                    .conn
                    .query_row("SELECT EXISTS (SELECT 1 FROM leases WHERE id = ?1)", [lid.as_str()], |r| r.get(0))
                    .map_err(map_err)?;
                return if exists { Ok(false) } else { Err(StoreError::not_found("lease", &lid)) };
            }
            if let Some(a) = audit {
                c.audit(a)?;
            }
            Ok(true)
        })
        .await
    }

    async fn claim_revocations(&self, now: UnixMillis, limit: u32, hold_until: UnixMillis) -> Result<Vec<Lease>> {
        self.write(move |c| {
            c.conn
                .execute(
                    "UPDATE leases SET state = 'revoking', revoke_requested_at = ?1, revoke_reason = 'expired', \
                     next_attempt_at = MAX(?1, COALESCE(next_attempt_at, ?1)) WHERE id IN (SELECT id FROM leases WHERE state = 'active' \
                     AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
                    params![now.0, limit],
                )
                .map_err(map_err)?;
            let sql = format!(
                "UPDATE leases SET next_attempt_at = ?2 WHERE id IN (SELECT id FROM leases \
                 WHERE state = 'revoking' AND next_attempt_at <= ?1 ORDER BY attempts, next_attempt_at, id LIMIT ?3) \
                 RETURNING {LEASE_COLS}"
            );
            let mut s = c.conn.prepare_cached(&sql).map_err(map_err)?;
            let rows = s.query_map(params![now.0, hold_until.0, limit], row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn revoked(&self, ids: Vec<LeaseId>, at: UnixMillis, audits: Vec<AuditEvent>) -> Result<u64> {
        self.write(move |c| {
            let mut n = 0u64;
            let mut s = c
                .conn
                .prepare_cached(
                    "UPDATE leases SET state = 'revoked', revoked_at = ?1, next_attempt_at = NULL \
                     WHERE id = ?2 AND state = 'revoking'",
                )
                .map_err(map_err)?;
            for lid in &ids {
                n += s.execute(params![at.0, lid.as_str()]).map_err(map_err)? as u64;
            }
            drop(s);
            for a in audits {
                c.audit(a)?;
            }
            Ok(n)
        })
        .await
    }

    async fn revocation_failed(
        &self,
        lid: &LeaseId,
        error: &str,
        next_at: UnixMillis,
        audit: Option<AuditEvent>,
    ) -> Result<u32> {
        let (lid, error) = (lid.clone(), remit_core::lease::error_text(error));
        self.write(move |c| {
            let attempts: Option<u32> = c
                .conn
                .query_row(
                    "UPDATE leases SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2 \
                     WHERE id = ?3 AND state = 'revoking' RETURNING attempts",
                    params![error, next_at.0, lid.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            let Some(attempts) = attempts else { return Err(StoreError::not_found("revoking lease", &lid)) };
            if let Some(a) = audit {
                c.audit(a.with_detail_field("attempts", attempts.into()))?;
            }
            Ok(attempts)
        })
        .await
    }

    async fn lease_counts(&self) -> Result<LeaseCounts> {
        self.read(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(state = 'active'), 0), COALESCE(SUM(state = 'revoking'), 0), \
                 COALESCE(SUM(state = 'revoking' AND attempts >= ?1), 0) FROM leases WHERE state <> 'revoked'",
                [STUCK_AFTER_ATTEMPTS],
                |r| {
                    Ok(LeaseCounts {
                        active: r.get::<_, i64>(0)?.max(0) as u64,
                        revoking: r.get::<_, i64>(1)?.max(0) as u64,
                        stuck: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                },
            )
            .map_err(map_err)
        })
        .await
    }

    async fn revocation_due(&self, now: UnixMillis) -> Result<bool> {
        self.read(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM leases WHERE state = 'revoking' AND next_attempt_at <= ?1) \
                 OR EXISTS (SELECT 1 FROM leases WHERE state = 'active' AND expires_at <= ?1)",
                [now.0],
                |r| r.get(0),
            )
            .map_err(map_err)
        })
        .await
    }

    async fn prune_leases(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .conn
                .execute("DELETE FROM leases WHERE state = 'revoked' AND revoked_at < ?1", [before.0])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<Lease> {
    let engine: String = r.get(5)?;
    let state: String = r.get(7)?;
    Ok(Lease {
        id: id(r, 0)?,
        tool: id(r, 1)?,
        task: id(r, 2)?,
        workflow: id(r, 3)?,
        agent: id(r, 4)?,
        engine: EngineKind::parse(&engine).ok_or_else(|| bad(5, format!("unknown engine `{engine}`")))?,
        handle: r.get(6)?,
        state: LeaseState::parse(&state).ok_or_else(|| bad(7, format!("unknown lease state `{state}`")))?,
        created_at: ms(r, 8)?,
        expires_at: ms(r, 9)?,
        revoke_requested_at: ms_opt(r, 10)?,
        revoke_reason: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_at: ms_opt(r, 13)?,
        last_error: r.get(14)?,
        revoked_at: ms_opt(r, 15)?,
        target: r.get(16)?,
    })
}
