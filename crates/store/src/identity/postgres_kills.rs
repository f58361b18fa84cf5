//! The identity area's kill switches on PostgreSQL: finding what a kill (or a task's end)
//! reaches — the task tree a level at a time, with no depth limit — and applying
//! [`remit_core::cascade::plan`] with its audit records.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::cascade::{self, Found, TaskNode};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{Kill, KillReport, KillTarget, TaskState};
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::postgres::{conflict, instance, task};
use super::{NODE_COLS, refused};
use crate::postgres::rows::{corrupt, ms, parsed, s, so};
use crate::postgres::{WriteCtx, map_err};
use crate::{Change, Result, StoreError};

fn node(r: &PgRow) -> Result<TaskNode> {
    Ok(TaskNode {
        id: TaskId::parse(&s(r, 0)?).map_err(|e| corrupt(0, e))?,
        parent: so(r, 1)?.map(|p| TaskId::parse(&p).map_err(|e| corrupt(1, e))).transpose()?,
        workflow: WorkflowName::parse(&s(r, 2)?).map_err(|e| corrupt(2, e))?,
        agent: AgentName::parse(&s(r, 3)?).map_err(|e| corrupt(3, e))?,
        state: parsed(r, 4)?,
        expires_at: ms(r, 5)?,
    })
}

/// Tasks whose `column` is one of `values` (one `= ANY($1)` statement: the primary key or
/// an index; a recursive CTE here was planned as hash joins over the whole table).
async fn nodes_where(c: &mut PgConnection, column: &str, values: &[String], extra: &str) -> Result<Vec<TaskNode>> {
    let sql = format!("SELECT {NODE_COLS} FROM tasks WHERE {column} = ANY($1){extra}");
    let rs = sqlx::query(&sql).bind(values).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(node).collect()
}

/// The roots plus every descendant, walked a level at a time with no depth limit (each id
/// visited once, so even corrupt parent cycles end).
async fn walk(c: &mut PgConnection, roots: Vec<TaskNode>) -> Result<Found> {
    let mut seen: std::collections::HashSet<TaskId> = roots.iter().map(|t| t.id.clone()).collect();
    let mut found = Found { roots: roots.iter().map(|t| t.id.clone()).collect(), ..Default::default() };
    let mut frontier: Vec<String> = roots.iter().map(|t| t.id.to_string()).collect();
    found.tasks = roots;
    while !frontier.is_empty() {
        let children = nodes_where(&mut *c, "parent", &frontier, "").await?;
        frontier = Vec::new();
        for ch in children {
            if seen.insert(ch.id.clone()) {
                frontier.push(ch.id.to_string());
                found.tasks.push(ch);
            }
        }
    }
    Ok(found)
}

/// Applies a cascade: revokes its tasks, records the plan's audit records and announces it.
async fn apply(ctx: &mut WriteCtx, k: &Kill, mut plan: cascade::Plan) -> Result<KillReport> {
    if !plan.report.tasks_revoked.is_empty() {
        plan.report.leases_pending =
            crate::leases::postgres::mark_revoking(ctx.conn(), &plan.report.tasks_revoked, k.at, &k.reason).await?;
        let ids: Vec<&str> = plan.report.tasks_revoked.iter().map(TaskId::as_str).collect();
        sqlx::query(
            "UPDATE tasks SET state = 'revoked', ended_at = $2, end_reason = $3 WHERE id = ANY($1) AND state = 'active'",
        )
        .bind(&ids)
        .bind(k.at.0)
        .bind(&k.reason)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    }
    for e in plan.audit {
        ctx.audit(e)?;
    }
    ctx.changed(Change::of_kill(&k.target, &plan.report));
    Ok(plan.report)
}

pub(super) async fn end_task(
    ctx: &mut WriteCtx,
    id: TaskId,
    to: TaskState,
    at: UnixMillis,
    actor: String,
    reason: Option<String>,
) -> Result<KillReport> {
    if !matches!(to, TaskState::Completed | TaskState::Expired) {
        return Err(StoreError::Internal(format!("end_task cannot move a task to {to}")));
    }
    let Some(t) = task(ctx.conn(), &id).await? else { return Err(StoreError::not_found("task", &id)) };
    let n =
        sqlx::query("UPDATE tasks SET state = $1, ended_at = $2, end_reason = $3 WHERE id = $4 AND state = 'active'")
            .bind(to.as_str())
            .bind(at.0)
            .bind(reason.as_deref())
            .bind(id.as_str())
            .execute(ctx.conn())
            .await
            .map_err(map_err)?
            .rows_affected();
    if n == 0 {
        return Err(conflict(format!("task `{id}` is {}", t.state)));
    }
    let action = if to == TaskState::Completed { AuditAction::TaskComplete } else { AuditAction::TaskRevoke };
    let mut e = AuditEvent::new(at, &actor, action).task(&id).workflow(&t.workflow).agent(&t.agent);
    if let Some(r) = &reason {
        e = e.reason(r);
    }
    ctx.audit(e)?;
    // Its subtree dies with it: a kill of each child.
    let kill = Kill { target: KillTarget::Task(id.clone()), actor, reason: format!("parent task {to}"), at };
    let children = nodes_where(ctx.conn(), "parent", &[id.to_string()], "").await?;
    let found = walk(ctx.conn(), children).await?;
    let plan = cascade::plan(&kill, &found).map_err(refused)?;
    let own = crate::leases::postgres::mark_revoking(ctx.conn(), std::slice::from_ref(&id), at, &format!("task {to}"))
        .await?;
    let mut report = apply(ctx, &kill, plan).await?;
    report.leases_pending += own;
    Ok(report)
}

pub(crate) async fn kill_switch(ctx: &mut WriteCtx, k: Kill) -> Result<KillReport> {
    let (found, pre) = match &k.target {
        KillTarget::Task(id) => {
            let roots = nodes_where(ctx.conn(), "id", &[id.to_string()], "").await?;
            if roots.is_empty() {
                return Err(StoreError::not_found("task", id));
            }
            (walk(ctx.conn(), roots).await?, vec![])
        }
        KillTarget::Instance(id) => {
            let Some(inst) = instance(ctx.conn(), id).await? else {
                return Err(StoreError::not_found("instance", id));
            };
            let n = sqlx::query(
                "UPDATE instances SET state = 'revoked', revoked_at = $1, revoke_reason = $2 \
                 WHERE id = $3 AND state = 'active'",
            )
            .bind(k.at.0)
            .bind(&k.reason)
            .bind(id.as_str())
            .execute(ctx.conn())
            .await
            .map_err(map_err)?
            .rows_affected();
            let roots = nodes_where(ctx.conn(), "instance", &[id.to_string()], "").await?;
            let mut found = walk(ctx.conn(), roots).await?;
            if n == 1 {
                found.instances.push(id.clone());
            }
            (found, vec![cascade::instance_record(&k, id, &inst.agent)])
        }
        KillTarget::Agent(name) => {
            let n = sqlx::query(
                "UPDATE agents SET state = 'disabled', updated_at = $1, kill_generation = kill_generation + 1 \
                 WHERE name = $2",
            )
            .bind(k.at.0)
            .bind(name.as_str())
            .execute(ctx.conn())
            .await
            .map_err(map_err)?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::not_found("agent", name));
            }
            let tokens: Vec<String> = sqlx::query_scalar(
                "UPDATE join_tokens SET revoked_at = $1 WHERE agent = $2 AND used_at IS NULL \
                 AND revoked_at IS NULL AND expires_at > $1 RETURNING id",
            )
            .bind(k.at.0)
            .bind(name.as_str())
            .fetch_all(ctx.conn())
            .await
            .map_err(map_err)?;
            let instances: Vec<String> = sqlx::query_scalar(
                "UPDATE instances SET state = 'revoked', revoked_at = $1, revoke_reason = $2 \
                 WHERE agent = $3 AND state = 'active' RETURNING id",
            )
            .bind(k.at.0)
            .bind(&k.reason)
            .bind(name.as_str())
            .fetch_all(ctx.conn())
            .await
            .map_err(map_err)?;
            let roots = nodes_where(ctx.conn(), "agent", &[name.to_string()], " AND state = 'active'").await?;
            let mut found = walk(ctx.conn(), roots).await?;
            found.join_tokens = parse_all(&tokens, JoinTokenId::parse)?;
            found.instances = parse_all(&instances, InstanceId::parse)?;
            (found, vec![])
        }
        KillTarget::Workflow(name) => {
            let n = sqlx::query("UPDATE workflows SET state = 'suspended', updated_at = $1 WHERE name = $2")
                .bind(k.at.0)
                .bind(name.as_str())
                .execute(ctx.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::not_found("workflow", name));
            }
            let roots = nodes_where(ctx.conn(), "workflow", &[name.to_string()], " AND state = 'active'").await?;
            (walk(ctx.conn(), roots).await?, vec![])
        }
    };
    let plan = cascade::plan(&k, &found).map_err(refused)?;
    for e in pre {
        ctx.audit(e)?;
    }
    apply(ctx, &k, plan).await
}

fn parse_all<T>(v: &[String], parse: fn(&str) -> std::result::Result<T, remit_core::DomainError>) -> Result<Vec<T>> {
    v.iter().map(|s| parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
}
