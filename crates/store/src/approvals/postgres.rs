//! The approvals area on PostgreSQL.

use async_trait::async_trait;
use remit_core::approval::{self, Approval, ApprovalState, Consumed, Decision};
use remit_core::audit::AuditEvent;
use remit_core::ids::{ApprovalId, TaskId, WorkflowName};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{APPROVAL_COLS, ApprovalStore, Presentation, presented, proof, refused};
use crate::postgres::rows::{corrupt, ms, ms_opt, s, so, unsigned};
use crate::postgres::{PgStore, WriteCtx, i64_of, map_err, pg_read};
use crate::{Change, Result, StoreError};

#[async_trait]
impl ApprovalStore for PgStore {
    async fn create(&self, a: Approval, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(create(c, a, audit))).await
    }
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>> {
        pg_read!(self, |c| get(c, id))
    }
    async fn list(&self, state: Option<ApprovalState>, limit: u32) -> Result<Vec<Approval>> {
        pg_read!(self, |c| list(c, state, limit))
    }
    async fn decide(&self, id: &ApprovalId, d: Decision, audit: AuditEvent) -> Result<Approval> {
        let id = id.clone();
        self.write(move |c| Box::pin(decide(c, id, d, audit))).await
    }
    async fn consume(&self, id: &ApprovalId, p: Presentation, audit: AuditEvent) -> Result<Consumed> {
        let id = id.clone();
        self.write(move |c| Box::pin(consume(c, id, p, audit))).await
    }
}

fn row(r: &PgRow) -> Result<Approval> {
    let state = s(r, 1)?;
    let reasons = s(r, 5)?;
    Ok(Approval {
        id: ApprovalId::parse(&s(r, 0)?).map_err(|e| corrupt(0, e))?,
        state: ApprovalState::parse(&state).ok_or_else(|| corrupt(1, format!("unknown approval state `{state}`")))?,
        digest: s(r, 2)?,
        policy_version: unsigned(r, 3)?,
        request: s(r, 4)?,
        // Corrupt reasons are an error, never "no reasons".
        reasons: serde_json::from_str(&reasons).map_err(|e| corrupt(5, e))?,
        requested_by: s(r, 6)?,
        requested_at: ms(r, 7)?,
        expires_at: ms(r, 8)?,
        decided_by: so(r, 9)?,
        decided_at: ms_opt(r, 10)?,
        decision_reason: so(r, 11)?,
        used_at: ms_opt(r, 12)?,
        task: so(r, 13)?.map(|t| TaskId::parse(&t).map_err(|e| corrupt(13, e))).transpose()?,
        workflow: so(r, 14)?.map(|w| WorkflowName::parse(&w).map_err(|e| corrupt(14, e))).transpose()?,
    })
}

async fn create(ctx: &mut WriteCtx, a: Approval, audit: AuditEvent) -> Result<()> {
    if a.state != ApprovalState::Pending {
        return Err(StoreError::Internal("a new approval request must be pending".into()));
    }
    sqlx::query(
        "INSERT INTO approvals (id, state, digest, policy_version, request, reasons, requested_by, requested_at, \
         expires_at, task, workflow) VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(a.id.as_str())
    .bind(&a.digest)
    .bind(i64_of(a.policy_version)?)
    .bind(&a.request)
    .bind(serde_json::to_string(&a.reasons).map_err(|e| StoreError::Internal(e.to_string()))?)
    .bind(&a.requested_by)
    .bind(a.requested_at.0)
    .bind(a.expires_at.0)
    .bind(a.task.as_ref().map(TaskId::as_str))
    .bind(a.workflow.as_ref().map(WorkflowName::as_str))
    .execute(ctx.conn())
    .await
    .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

async fn get(c: &mut PgConnection, id: &ApprovalId) -> Result<Option<Approval>> {
    let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1");
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(row).transpose()
}

async fn list(c: &mut PgConnection, state: Option<ApprovalState>, limit: u32) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE ($1::text IS NULL OR state = $1) ORDER BY requested_at DESC, id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let rs = sqlx::query(&sql).bind(state.map(ApprovalState::as_str)).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(row).collect()
}

/// Moves the row from `from` to `to`'s state and fields; `Conflict` if it moved meanwhile.
async fn apply(ctx: &mut WriteCtx, from: ApprovalState, to: &Approval) -> Result<()> {
    let n = sqlx::query(
        "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3, decision_reason = $4, used_at = $5 \
         WHERE id = $6 AND state = $7",
    )
    .bind(to.state.as_str())
    .bind(&to.decided_by)
    .bind(to.decided_at.map(|t| t.0))
    .bind(&to.decision_reason)
    .bind(to.used_at.map(|t| t.0))
    .bind(to.id.as_str())
    .bind(from.as_str())
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!("approval `{}` changed meanwhile", to.id)));
    }
    ctx.changed([Change::Approval(to.id.clone())]);
    Ok(())
}

/// Reads the row locked for this transaction (concurrent decisions wait, then see the result).
async fn locked(ctx: &mut WriteCtx, id: &ApprovalId) -> Result<Approval> {
    let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1 FOR UPDATE");
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(ctx.conn()).await.map_err(map_err)?;
    r.as_ref().map(row).transpose()?.ok_or_else(|| StoreError::not_found("approval", id))
}

async fn decide(ctx: &mut WriteCtx, id: ApprovalId, d: Decision, audit: AuditEvent) -> Result<Approval> {
    let a = locked(ctx, &id).await?;
    let decided = approval::decide(&a, &d).map_err(refused)?;
    apply(ctx, a.state, &decided).await?;
    ctx.audit(audit)?;
    Ok(decided)
}

async fn consume(ctx: &mut WriteCtx, id: ApprovalId, p: Presentation, audit: AuditEvent) -> Result<Consumed> {
    let a = locked(ctx, &id).await?;
    let used = approval::consume(&a, presented(&p)).map_err(refused)?;
    apply(ctx, a.state, &used).await?;
    ctx.audit(audit)?;
    proof(&used)
}
