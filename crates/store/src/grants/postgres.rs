//! The grants area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::grant::{Grant, GrantState};
use remit_core::ids::{AgentName, GrantId, HumanId, TaskId, WorkflowName};
use remit_core::model::{Kill, KillReport, KillTarget};
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{GRANT_COLS, GrantStore, Revocation};
use crate::identity::postgres_kills::kill_switch;
use crate::postgres::rows::{corrupt, json, ms, ms_opt, s, typed, unsigned};
use crate::postgres::{PgStore, WriteCtx, map_err, pg_read};
use crate::{Result, StoreError};

#[async_trait]
impl GrantStore for PgStore {
    async fn create(&self, g: Grant, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO grants (id, human, human_email, agent, workflow, authority, max_depth, state, \
                     confirmation_hash, created_at, expires_at) SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11 \
                     WHERE EXISTS (SELECT 1 FROM humans WHERE id = $2 AND state = 'active')",
                )
                .bind(g.id.as_str())
                .bind(g.human.as_str())
                .bind(&g.human_email)
                .bind(g.agent.as_str())
                .bind(g.workflow.as_str())
                .bind(serde_json::to_string(&g.authority).unwrap_or_default())
                .bind(i64::from(g.max_depth))
                .bind(g.state.as_str())
                .bind(&g.confirmation_hash)
                .bind(g.created_at.0)
                .bind(g.expires_at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(format!("human `{}` is not active", g.human)));
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn get(&self, id: &GrantId) -> Result<Option<Grant>> {
        pg_read!(self, |c| one(c, id))
    }

    async fn list(&self, human: Option<&HumanId>, limit: u32) -> Result<Vec<Grant>> {
        let sql = format!(
            "SELECT {GRANT_COLS} FROM grants WHERE ($1::text IS NULL OR human = $1) ORDER BY created_at DESC, id LIMIT $2"
        );
        let human = human.map(|h| h.to_string());
        let rs: Result<Vec<PgRow>> = pg_read!(self, |c| async {
            sqlx::query(&sql)
                .bind(human.as_deref())
                .bind(i64::from(limit.min(crate::MAX_PAGE)))
                .fetch_all(c)
                .await
                .map_err(map_err)
        });
        rs?.iter().map(row).collect()
    }

    async fn confirm(&self, id: &GrantId, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE grants SET state = 'active', confirmed_at = $1 WHERE id = $2 AND state = 'proposed' \
                     AND expires_at > $1 AND EXISTS (SELECT 1 FROM humans h WHERE h.id = grants.human AND h.state = 'active')",
                )
                .bind(at.0)
                .bind(id.as_str())
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(format!("grant `{id}` is no longer waiting for confirmation")));
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn revoke(&self, id: &GrantId, r: Revocation, audit: AuditEvent) -> Result<KillReport> {
        let id = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let (ids, report) = revoke_where(c, "id = $1", id.as_str(), &r).await?;
                if ids.is_empty() {
                    return Err(match one(c.conn(), &id).await? {
                        None => StoreError::not_found("grant", &id),
                        Some(_) => StoreError::Conflict(format!("grant `{id}` is already revoked")),
                    });
                }
                c.audit(audit)?;
                Ok(report)
            })
        })
        .await
    }
}

/// Revokes the grants matching `cond` (bound to `$1 = value`) not revoked yet, and kills every
/// live task under them with its subtree (see the SQLite twin).
pub(crate) async fn revoke_where(
    c: &mut WriteCtx,
    cond: &str,
    value: &str,
    r: &Revocation,
) -> Result<(Vec<GrantId>, KillReport)> {
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE grants SET state = 'revoked', revoked_at = $2 WHERE {cond} AND state != 'revoked' RETURNING id"
    ))
    .bind(value)
    .bind(r.at.0)
    .fetch_all(c.conn())
    .await
    .map_err(map_err)?;
    let mut report = KillReport::default();
    for g in &ids {
        let tasks: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE grant_id = $1 AND state = 'active' ORDER BY created_at, id")
                .bind(g)
                .fetch_all(c.conn())
                .await
                .map_err(map_err)?;
        for t in tasks {
            let live: Option<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE id = $1 AND state = 'active'")
                .bind(&t)
                .fetch_optional(c.conn())
                .await
                .map_err(map_err)?;
            if live.is_none() {
                continue;
            }
            let id = TaskId::parse(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let k = Kill { target: KillTarget::Task(id), actor: r.actor.clone(), reason: r.reason.clone(), at: r.at };
            let rep = kill_switch(c, k).await?;
            report.tasks_revoked.extend(rep.tasks_revoked);
            report.leases_pending += rep.leases_pending;
        }
        if cond != "id = $1" {
            let e = AuditEvent::new(r.at, r.actor.clone(), AuditAction::GrantRevoke)
                .reason(r.reason.clone())
                .detail([("grant", g.as_str().into())]);
            c.audit(e)?;
        }
    }
    report.tasks_revoked.sort();
    let ids = ids
        .iter()
        .map(|s| GrantId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Ok((ids, report))
}

async fn one(c: &mut PgConnection, id: &GrantId) -> Result<Option<Grant>> {
    let sql = format!("SELECT {GRANT_COLS} FROM grants WHERE id = $1");
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(row).transpose()
}

fn row(r: &PgRow) -> Result<Grant> {
    let state = s(r, 7)?;
    Ok(Grant {
        id: typed(r, 0, GrantId::parse)?,
        human: typed(r, 1, HumanId::parse)?,
        human_email: s(r, 2)?,
        agent: typed(r, 3, AgentName::parse)?,
        workflow: typed(r, 4, WorkflowName::parse)?,
        authority: json(r, 5)?,
        max_depth: unsigned(r, 6)?,
        state: GrantState::parse(&state).ok_or_else(|| corrupt(7, format!("unknown grant state `{state}`")))?,
        confirmation_hash: s(r, 8)?,
        created_at: ms(r, 9)?,
        expires_at: ms(r, 10)?,
        confirmed_at: ms_opt(r, 11)?,
        revoked_at: ms_opt(r, 12)?,
    })
}
