//! The approvals area on SQLite.

use async_trait::async_trait;
use remit_core::approval::{self, Approval, ApprovalState, Consumed, Decision};
use remit_core::audit::AuditEvent;
use remit_core::ids::{ApprovalId, TaskId, WorkflowName};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{APPROVAL_COLS, ApprovalStore, Presentation, presented, proof, refused};
use crate::sqlite::rows::{bad, ms, ms_opt};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Result, StoreError};

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn create(&self, a: Approval, audit: AuditEvent) -> Result<()> {
        self.write(move |c| create(c, &a, audit)).await
    }
    async fn get(&self, id: &ApprovalId) -> Result<Option<Approval>> {
        let id = id.clone();
        self.read(move |c| get(c, &id)).await
    }
    async fn list(&self, state: Option<ApprovalState>, limit: u32) -> Result<Vec<Approval>> {
        self.read(move |c| list(c, state, limit)).await
    }
    async fn decide(&self, id: &ApprovalId, d: Decision, audit: AuditEvent) -> Result<Approval> {
        let id = id.clone();
        self.write(move |c| decide(c, &id, &d, audit)).await
    }
    async fn consume(&self, id: &ApprovalId, p: Presentation, audit: AuditEvent) -> Result<Consumed> {
        let id = id.clone();
        self.write(move |c| consume(c, &id, &p, audit)).await
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    let id: String = r.get(0)?;
    let state: String = r.get(1)?;
    let reasons: String = r.get(5)?;
    let task: Option<String> = r.get(13)?;
    let workflow: Option<String> = r.get(14)?;
    Ok(Approval {
        id: ApprovalId::parse(&id).map_err(|e| bad(0, e))?,
        state: ApprovalState::parse(&state).ok_or_else(|| bad(1, format!("unknown approval state `{state}`")))?,
        digest: r.get(2)?,
        policy_version: r.get(3)?,
        request: r.get(4)?,
        // Corrupt reasons are an error, never "no reasons".
        reasons: serde_json::from_str(&reasons).map_err(|e| bad(5, e))?,
        requested_by: r.get(6)?,
        requested_at: ms(r, 7)?,
        expires_at: ms(r, 8)?,
        decided_by: r.get(9)?,
        decided_at: ms_opt(r, 10)?,
        decision_reason: r.get(11)?,
        used_at: ms_opt(r, 12)?,
        task: task.map(|t| TaskId::parse(&t).map_err(|e| bad(13, e))).transpose()?,
        workflow: workflow.map(|w| WorkflowName::parse(&w).map_err(|e| bad(14, e))).transpose()?,
    })
}

fn create(ctx: &mut WriteCtx<'_>, a: &Approval, audit: AuditEvent) -> Result<()> {
    if a.state != ApprovalState::Pending {
        return Err(StoreError::Internal("a new approval request must be pending".into()));
    }
    ctx.conn
        .execute(
            "INSERT INTO approvals (id, state, digest, policy_version, request, reasons, requested_by, requested_at, \
             expires_at, task, workflow) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                a.id.as_str(),
                a.digest,
                a.policy_version,
                a.request,
                serde_json::to_string(&a.reasons).map_err(|e| StoreError::Internal(e.to_string()))?,
                a.requested_by,
                a.requested_at.0,
                a.expires_at.0,
                a.task.as_ref().map(TaskId::as_str),
                a.workflow.as_ref().map(WorkflowName::as_str)
            ],
        )
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

fn get(c: &Connection, id: &ApprovalId) -> Result<Option<Approval>> {
    let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], row).optional()).map_err(map_err)
}

fn list(c: &Connection, state: Option<ApprovalState>, limit: u32) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {APPROVAL_COLS} FROM approvals WHERE (?1 IS NULL OR state = ?1) ORDER BY requested_at DESC, id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let out =
        s.query_map([state.map(ApprovalState::as_str)], row).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

/// Moves the row from `from` to `to`'s state and fields; `Conflict` if it moved meanwhile.
fn apply(ctx: &mut WriteCtx<'_>, from: ApprovalState, to: &Approval) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE approvals SET state = ?1, decided_by = ?2, decided_at = ?3, decision_reason = ?4, used_at = ?5 \
             WHERE id = ?6 AND state = ?7",
            params![
                to.state.as_str(),
                to.decided_by,
                to.decided_at.map(|t| t.0),
                to.decision_reason,
                to.used_at.map(|t| t.0),
                to.id.as_str(),
                from.as_str()
            ],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("approval `{}` changed meanwhile", to.id)));
    }
    ctx.changed([Change::Approval(to.id.clone())]);
    Ok(())
}

fn decide(ctx: &mut WriteCtx<'_>, id: &ApprovalId, d: &Decision, audit: AuditEvent) -> Result<Approval> {
    let a = get(ctx.conn, id)?.ok_or_else(|| StoreError::not_found("approval", id))?;
    let decided = approval::decide(&a, d).map_err(refused)?;
    apply(ctx, a.state, &decided)?;
    ctx.audit(audit)?;
    Ok(decided)
}

fn consume(ctx: &mut WriteCtx<'_>, id: &ApprovalId, p: &Presentation, audit: AuditEvent) -> Result<Consumed> {
    let a = get(ctx.conn, id)?.ok_or_else(|| StoreError::not_found("approval", id))?;
    let used = approval::consume(&a, presented(p)).map_err(refused)?;
    apply(ctx, a.state, &used)?;
    ctx.audit(audit)?;
    proof(&used)
}
