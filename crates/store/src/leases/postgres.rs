//! The leases area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{AgentName, LeaseId, TaskId, ToolName, WorkflowName};
use remit_core::lease::{EngineKind, Lease, LeaseState, MAX_LEASES_PER_TASK, STUCK_AFTER_ATTEMPTS};
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{LEASE_COLS, LeaseCounts, LeaseFilter, LeaseStore};
use crate::postgres::rows::{corrupt, ms, ms_opt, s, so, typed, unsigned};
use crate::postgres::{PgStore, map_err, pg_read};
use crate::{MAX_PAGE, Result, StoreError};

/// Moves the active leases of `tasks` to `revoking`, due at once; returns how many. Called
/// inside a kill's (or a task end's) transaction.
pub(crate) async fn mark_revoking(c: &mut PgConnection, tasks: &[TaskId], at: UnixMillis, reason: &str) -> Result<u64> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = tasks.iter().map(TaskId::as_str).collect();
    let n = sqlx::query(
        "UPDATE leases SET state = 'revoking', revoke_requested_at = $2, revoke_reason = $3, \
         next_attempt_at = GREATEST($2, COALESCE(next_attempt_at, $2)) WHERE state = 'active' AND task = ANY($1)",
    )
    .bind(&ids)
    .bind(at.0)
    .bind(reason)
    .execute(c)
    .await
    .map_err(map_err)?
    .rows_affected();
    Ok(n)
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn create_lease(&self, l: Lease, audits: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                // Locks the task's row: a concurrent kill either ran first (the task is no
                // longer active) or waits for this lease and then marks it.
                let live: Option<(String, i64)> =
                    sqlx::query_as("SELECT state, expires_at FROM tasks WHERE id = $1 FOR UPDATE")
                        .bind(l.task.as_str())
                        .fetch_optional(c.conn())
                        .await
                        .map_err(map_err)?;
                match live {
                    None => return Err(StoreError::not_found("task", &l.task)),
                    Some((s, exp)) if s != "active" || exp <= l.created_at.0 => {
                        return Err(StoreError::Conflict(format!("task `{}` is not active", l.task)));
                    }
                    _ => {}
                }
                let tool: Option<String> = sqlx::query_scalar("SELECT state FROM tools WHERE name = $1")
                    .bind(l.tool.as_str())
                    .fetch_optional(c.conn())
                    .await
                    .map_err(map_err)?;
                if tool.as_deref() != Some("active") {
                    return Err(StoreError::Conflict(format!("tool `{}` is not active", l.tool)));
                }
                let held: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE task = $1 AND state <> 'revoked'")
                        .bind(l.task.as_str())
                        .fetch_one(c.conn())
                        .await
                        .map_err(map_err)?;
                if held >= i64::from(MAX_LEASES_PER_TASK) {
                    return Err(StoreError::Conflict(format!("a task holds at most {MAX_LEASES_PER_TASK} leases")));
                }
                sqlx::query(&format!(
                    "INSERT INTO leases ({LEASE_COLS}) VALUES \
                     ($1,$2,$3,$4,$5,$6,$7,'active',$8,$9,NULL,NULL,0,$10,NULL,NULL,$11)"
                ))
                .bind(l.id.as_str())
                .bind(l.tool.as_str())
                .bind(l.task.as_str())
                .bind(l.workflow.as_str())
                .bind(l.agent.as_str())
                .bind(l.engine.as_str())
                .bind(&l.handle)
                .bind(l.created_at.0)
                .bind(l.expires_at.0)
                .bind(l.next_attempt_at.map(|t| t.0))
                .bind(&l.target)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                for a in audits {
                    c.audit(a)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn lease_made(&self, lid: &LeaseId) -> Result<bool> {
        let lid = lid.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE leases SET next_attempt_at = NULL WHERE id = $1 AND state = 'active'")
                    .bind(lid.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                Ok(n == 1)
            })
        })
        .await
    }

    async fn lease(&self, lid: &LeaseId) -> Result<Option<Lease>> {
        let sql = format!("SELECT {LEASE_COLS} FROM leases WHERE id = $1");
        pg_read!(self, |c| async {
            let r = sqlx::query(&sql).bind(lid.as_str()).fetch_optional(c).await.map_err(map_err)?;
            r.as_ref().map(row).transpose()
        })
    }

    async fn list_leases(&self, f: LeaseFilter) -> Result<Vec<Lease>> {
        let sql = format!(
            "SELECT {LEASE_COLS} FROM leases WHERE ($1::text IS NULL OR task = $1) AND ($2::text IS NULL OR workflow = $2) \
             AND ($3::text IS NULL OR tool = $3) AND ($4::text IS NULL OR state = $4) \
             AND (NOT $5 OR (state = 'revoking' AND attempts >= $6)) \
             ORDER BY created_at DESC, id LIMIT $7"
        );
        pg_read!(self, |c| async {
            let rs = sqlx::query(&sql)
                .bind(f.task.as_ref().map(|t| t.as_str()))
                .bind(f.workflow.as_ref().map(|w| w.as_str()))
                .bind(f.tool.as_ref().map(|t| t.as_str()))
                .bind(f.state.map(|s| s.as_str()))
                .bind(f.stuck)
                .bind(i64::from(STUCK_AFTER_ATTEMPTS))
                .bind(i64::from(f.limit.min(MAX_PAGE)))
                .fetch_all(c)
                .await
                .map_err(map_err)?;
            rs.iter().map(row).collect()
        })
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
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE leases SET state = 'revoking', revoke_requested_at = $1, revoke_reason = $2, \
                     next_attempt_at = GREATEST($1, COALESCE(next_attempt_at, $1)) WHERE id = $3 AND state = 'active'",
                )
                .bind(at.0)
                .bind(&reason)
                .bind(lid.as_str())
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM leases WHERE id = $1)")
                        .bind(lid.as_str())
                        .fetch_one(c.conn())
                        .await
                        .map_err(map_err)?;
                    return if exists { Ok(false) } else { Err(StoreError::not_found("lease", &lid)) };
                }
                if let Some(a) = audit {
                    c.audit(a)?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn claim_revocations(&self, now: UnixMillis, limit: u32, hold_until: UnixMillis) -> Result<Vec<Lease>> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE leases SET state = 'revoking', revoke_requested_at = $1, revoke_reason = 'expired', \
                     next_attempt_at = GREATEST($1, COALESCE(next_attempt_at, $1)) WHERE id IN (SELECT id FROM leases WHERE state = 'active' \
                     AND expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                )
                .bind(now.0)
                .bind(i64::from(limit))
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                let rs = sqlx::query(&format!(
                    "UPDATE leases SET next_attempt_at = $2 WHERE id IN (SELECT id FROM leases \
                     WHERE state = 'revoking' AND next_attempt_at <= $1 ORDER BY attempts, next_attempt_at, id LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) RETURNING {LEASE_COLS}"
                ))
                .bind(now.0)
                .bind(hold_until.0)
                .bind(i64::from(limit))
                .fetch_all(c.conn())
                .await
                .map_err(map_err)?;
                rs.iter().map(row).collect()
            })
        })
        .await
    }

    async fn revoked(&self, ids: Vec<LeaseId>, at: UnixMillis, audits: Vec<AuditEvent>) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                let ids: Vec<&str> = ids.iter().map(LeaseId::as_str).collect();
                let n = sqlx::query(
                    "UPDATE leases SET state = 'revoked', revoked_at = $1, next_attempt_at = NULL \
                     WHERE id = ANY($2) AND state = 'revoking'",
                )
                .bind(at.0)
                .bind(&ids)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                for a in audits {
                    c.audit(a)?;
                }
                Ok(n)
            })
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
            Box::pin(async move {
                let attempts: Option<i64> = sqlx::query_scalar(
                    "UPDATE leases SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 \
                     WHERE id = $3 AND state = 'revoking' RETURNING attempts",
                )
                .bind(&error)
                .bind(next_at.0)
                .bind(lid.as_str())
                .fetch_optional(c.conn())
                .await
                .map_err(map_err)?;
                let Some(attempts) = attempts else { return Err(StoreError::not_found("revoking lease", &lid)) };
                let attempts = u32::try_from(attempts).map_err(|e| corrupt(12, e))?;
                if let Some(a) = audit {
                    c.audit(a.with_detail_field("attempts", attempts.into()))?;
                }
                Ok(attempts)
            })
        })
        .await
    }

    async fn lease_counts(&self) -> Result<LeaseCounts> {
        pg_read!(self, |c| async {
            let (a, r, s): (i64, i64, i64) = sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE state = 'active'), COUNT(*) FILTER (WHERE state = 'revoking'), \
                 COUNT(*) FILTER (WHERE state = 'revoking' AND attempts >= $1) FROM leases WHERE state <> 'revoked'",
            )
            .bind(i64::from(STUCK_AFTER_ATTEMPTS))
            .fetch_one(c)
            .await
            .map_err(map_err)?;
            Ok(LeaseCounts { active: a.max(0) as u64, revoking: r.max(0) as u64, stuck: s.max(0) as u64 })
        })
    }

    async fn revocation_due(&self, now: UnixMillis) -> Result<bool> {
        pg_read!(self, |c| async {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM leases WHERE state = 'revoking' AND next_attempt_at <= $1) \
                 OR EXISTS (SELECT 1 FROM leases WHERE state = 'active' AND expires_at <= $1)",
            )
            .bind(now.0)
            .fetch_one(c)
            .await
            .map_err(map_err)
        })
    }

    async fn prune_leases(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM leases WHERE state = 'revoked' AND revoked_at < $1")
                    .bind(before.0)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                Ok(n)
            })
        })
        .await
    }
}

fn row(r: &PgRow) -> Result<Lease> {
    let engine = s(r, 5)?;
    let state = s(r, 7)?;
    Ok(Lease {
        id: typed(r, 0, LeaseId::parse)?,
        tool: typed(r, 1, ToolName::parse)?,
        task: typed(r, 2, TaskId::parse)?,
        workflow: typed(r, 3, WorkflowName::parse)?,
        agent: typed(r, 4, AgentName::parse)?,
        engine: EngineKind::parse(&engine).ok_or_else(|| corrupt(5, format!("unknown engine `{engine}`")))?,
        handle: s(r, 6)?,
        state: LeaseState::parse(&state).ok_or_else(|| corrupt(7, format!("unknown lease state `{state}`")))?,
        created_at: ms(r, 8)?,
        expires_at: ms(r, 9)?,
        revoke_requested_at: ms_opt(r, 10)?,
        revoke_reason: so(r, 11)?,
        attempts: unsigned(r, 12)?,
        next_attempt_at: ms_opt(r, 13)?,
        last_error: so(r, 14)?,
        revoked_at: ms_opt(r, 15)?,
        target: s(r, 16)?,
    })
}
