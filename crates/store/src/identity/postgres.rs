//! The identity area on PostgreSQL: workflows, agents, join tokens, instances, tasks, tool
//! uses and kills.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{AgentName, HumanId, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgArguments;

use super::postgres_kills::{end_task, kill_switch};
use super::{IdentityStore, StartContext, TaskFilter, TaskSnapshot};
use crate::postgres::rows::{self, arg};
use crate::postgres::{PgStore, WriteCtx, i64_of, map_err, pg_read};
use crate::{Change, Result, StoreError};

#[async_trait]
impl IdentityStore for PgStore {
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(create_workflow(c, wf, audit))).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        pg_read!(self, |c| workflow(c, name))
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        pg_read!(self, |c| list_workflows(c))
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(set_workflow_state(c, n, from, to, audit))).await
    }
    async fn set_workflow_tools(&self, name: &WorkflowName, tools: Vec<String>, audit: AuditEvent) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(set_workflow_json(c, n, "allowed_tools", json(&tools), audit))).await
    }
    async fn set_workflow_trust(
        &self,
        name: &WorkflowName,
        trust: remit_core::delegation::TrustRules,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(set_workflow_json(c, n, "trust", json(&trust), audit))).await
    }
    async fn set_owner(&self, target: super::Owned, owner: &str, proposed: HumanId, audit: AuditEvent) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let (table, name, kind) = target.table();
                let n = sqlx::query(&format!(
                    "UPDATE {table} SET owner = $1, orphaned_at = NULL, updated_at = $2 WHERE name = $3"
                ))
                .bind(&owner)
                .bind(audit.time.0)
                .bind(name)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::not_found(kind, name));
                }
                link_owner(c.conn(), table, name, &owner, Some(&proposed), audit.time).await?;
                c.audit(audit)?;
                c.changed(target.change());
                Ok(())
            })
        })
        .await
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(create_agent(c, agent, audit))).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        pg_read!(self, |c| agent(c, name))
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        pg_read!(self, |c| list_agents(c))
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| Box::pin(set_agent_state(c, n, from, to, audit))).await
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.write(move |c| Box::pin(create_join_token(c, jt, audit))).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        pg_read!(self, |c| join_token(c, id))
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| Box::pin(redeem_join_token(c, id, instance, audit))).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        pg_read!(self, |c| instance(c, id))
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let i = id.clone();
        self.write(move |c| Box::pin(renew_instance(c, i, expires_at, audit))).await
    }
    async fn renew_task(&self, id: &TaskId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE tasks SET expires_at = $1 WHERE id = $2 AND state = 'active' AND expires_at > $3 \
                     AND expires_at < $1 \
                     AND EXISTS (SELECT 1 FROM workflows WHERE name = tasks.workflow AND state = 'active') \
                     AND EXISTS (SELECT 1 FROM agents WHERE name = tasks.agent AND state = 'enabled')",
                )
                .bind(expires_at.0)
                .bind(id.as_str())
                .bind(audit.time.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(conflict(format!("task `{id}` is not live, or is not extended by this")));
                }
                c.audit(audit)?;
                c.changed([Change::Task(id)]);
                Ok(())
            })
        })
        .await
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        pg_read!(self, |c| start_context(c, workflow, agent, instance))
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        self.write_task(NewTask { task, audit }).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        pg_read!(self, |c| task(c, id))
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        pg_read!(self, |c| task_snapshot(c, id))
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        let f = &filter;
        pg_read!(self, |c| list_tasks(c, f))
    }
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport> {
        let (i, actor, reason) = (id.clone(), actor.to_owned(), reason.map(str::to_owned));
        self.write(move |c| Box::pin(end_task(c, i, to, at, actor, reason))).await
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        self.write(move |c| Box::pin(kill_switch(c, kill))).await
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let (task, tool) = (task.to_string(), tool.to_owned());
        self.write(move |c| Box::pin(record_tool_use(c, task, tool, at, audit))).await
    }
    async fn record_call(&self, task: &TaskId, tool: Option<&str>, at: UnixMillis, audit: AuditEvent) -> Result<bool> {
        let (task, tool) = (task.to_string(), tool.map(str::to_owned));
        self.write(move |c| {
            Box::pin(async move {
                if !charge_calls(c.conn(), &task).await? {
                    return Ok(false);
                }
                match tool {
                    Some(t) => record_tool_use(c, task, t, at, audit).await?,
                    None => {
                        c.audit(audit)?;
                    }
                }
                Ok(true)
            })
        })
        .await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        let task = task.to_string();
        pg_read!(self, |c| tools_used(c, &task))
    }
}

/// Charges one call to every budget above `task` (see `IdentityStore::record_call`); `false`,
/// with nothing written, when one is spent. Rows are locked (`FOR UPDATE`) so replicas racing
/// on one budget are serialized.
async fn charge_calls(c: &mut PgConnection, task: &str) -> Result<bool> {
    async fn delegation(c: &mut PgConnection, id: &str) -> Result<Option<(i64, remit_core::delegation::Delegation)>> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT calls, delegation FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *c)
            .await
            .map_err(map_err)?;
        row.map(|(n, d)| {
            Ok((n, serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("delegation: {e}")))?))
        })
        .transpose()
    }
    let Some((_, own)) = delegation(c, task).await? else { return Ok(false) };
    let mut charged = Vec::new();
    for id in std::iter::once(task.to_owned()).chain(own.chain.iter().map(|h| h.task.to_string())) {
        let Some((calls, d)) = delegation(c, &id).await? else { continue };
        if let Some(max) = d.authority.max_calls {
            if calls >= i64::try_from(max).unwrap_or(i64::MAX) {
                return Ok(false);
            }
            charged.push(id);
        }
    }
    if let Some(g) = &own.grant {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT calls, authority FROM grants WHERE id = $1 FOR UPDATE")
            .bind(g.as_str())
            .fetch_optional(&mut *c)
            .await
            .map_err(map_err)?;
        if let Some((calls, a)) = row {
            let a: remit_core::delegation::Authority =
                serde_json::from_str(&a).map_err(|e| StoreError::Corrupt(format!("grant authority: {e}")))?;
            if let Some(max) = a.max_calls {
                if calls >= i64::try_from(max).unwrap_or(i64::MAX) {
                    return Ok(false);
                }
                sqlx::query("UPDATE grants SET calls = calls + 1 WHERE id = $1")
                    .bind(g.as_str())
                    .execute(&mut *c)
                    .await
                    .map_err(map_err)?;
            }
        }
    }
    for id in charged {
        sqlx::query("UPDATE tasks SET calls = calls + 1 WHERE id = $1")
            .bind(&id)
            .execute(&mut *c)
            .await
            .map_err(map_err)?;
    }
    Ok(true)
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

async fn create_workflow(ctx: &mut WriteCtx, w: Workflow, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
         max_delegation_depth, state, created_at, updated_at, trust) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(w.name.as_str())
    .bind(&w.purpose)
    .bind(&w.owner)
    .bind(w.ceiling.as_str())
    .bind(json(&w.allowed_tools))
    .bind(i64_of(w.max_task_ttl_secs)?)
    .bind(i64::from(w.max_delegation_depth))
    .bind(w.state.as_str())
    .bind(w.created_at.0)
    .bind(w.updated_at.0)
    .bind(json(&w.trust))
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("workflow `{}` already exists", w.name)));
    }
    link_owner(ctx.conn(), "workflows", w.name.as_str(), &w.owner, w.owner_id.as_ref(), w.created_at).await?;
    ctx.audit(audit)?;
    Ok(())
}

async fn workflow(c: &mut PgConnection, name: &WorkflowName) -> Result<Option<Workflow>> {
    let sql = format!("SELECT {} FROM workflows WHERE name = $1", super::WORKFLOW_COLS);
    let r = sqlx::query(&sql).bind(name.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::workflow(&r, 0)).transpose()
}

async fn list_workflows(c: &mut PgConnection) -> Result<Vec<Workflow>> {
    let sql = format!("SELECT {} FROM workflows ORDER BY name", super::WORKFLOW_COLS);
    let rs = sqlx::query(&sql).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(|r| rows::workflow(r, 0)).collect()
}

async fn set_workflow_state(
    ctx: &mut WriteCtx,
    name: WorkflowName,
    from: WorkflowState,
    to: WorkflowState,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query("UPDATE workflows SET state = $1, updated_at = $2 WHERE name = $3 AND state = $4")
        .bind(to.as_str())
        .bind(audit.time.0)
        .bind(name.as_str())
        .bind(from.as_str())
        .execute(ctx.conn())
        .await
        .map_err(map_err)?
        .rows_affected();
    if n == 0 {
        return match workflow(ctx.conn(), &name).await? {
            None => Err(StoreError::not_found("workflow", &name)),
            Some(w) => Err(conflict(format!("workflow `{name}` is {}", w.state))),
        };
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Workflow(name)]);
    Ok(())
}

/// Replaces one of a workflow's JSON columns (`allowed_tools`, `trust`: fixed names).
async fn set_workflow_json(
    ctx: &mut WriteCtx,
    name: WorkflowName,
    col: &'static str,
    value: String,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query(&format!("UPDATE workflows SET {col} = $1, updated_at = $2 WHERE name = $3"))
        .bind(value)
        .bind(audit.time.0)
        .bind(name.as_str())
        .execute(ctx.conn())
        .await
        .map_err(map_err)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found("workflow", &name));
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Workflow(name)]);
    Ok(())
}

async fn create_agent(ctx: &mut WriteCtx, a: Agent, audit: AuditEvent) -> Result<()> {
    for wf in &a.workflows {
        if workflow(ctx.conn(), wf).await?.is_none() {
            return Err(StoreError::not_found("workflow", wf));
        }
    }
    let n = sqlx::query(
        "INSERT INTO agents (name, owner, workflows, state, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(a.name.as_str())
    .bind(&a.owner)
    .bind(json(&a.workflows))
    .bind(a.state.as_str())
    .bind(a.created_at.0)
    .bind(a.updated_at.0)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("agent `{}` already exists", a.name)));
    }
    link_owner(ctx.conn(), "agents", a.name.as_str(), &a.owner, a.owner_id.as_ref(), a.created_at).await?;
    ctx.audit(audit)?;
    Ok(())
}

async fn agent(c: &mut PgConnection, name: &AgentName) -> Result<Option<Agent>> {
    let sql = format!("SELECT {} FROM agents WHERE name = $1", super::AGENT_COLS);
    let r = sqlx::query(&sql).bind(name.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::agent(&r, 0)).transpose()
}

async fn list_agents(c: &mut PgConnection) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {} FROM agents ORDER BY name", super::AGENT_COLS);
    let rs = sqlx::query(&sql).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(|r| rows::agent(r, 0)).collect()
}

async fn set_agent_state(
    ctx: &mut WriteCtx,
    name: AgentName,
    from: AgentState,
    to: AgentState,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query("UPDATE agents SET state = $1, updated_at = $2 WHERE name = $3 AND state = $4")
        .bind(to.as_str())
        .bind(audit.time.0)
        .bind(name.as_str())
        .bind(from.as_str())
        .execute(ctx.conn())
        .await
        .map_err(map_err)?
        .rows_affected();
    if n == 0 {
        return match agent(ctx.conn(), &name).await? {
            None => Err(StoreError::not_found("agent", &name)),
            Some(a) => Err(conflict(format!("agent `{name}` is {}", a.state))),
        };
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Agent(name)]);
    Ok(())
}

async fn create_join_token(ctx: &mut WriteCtx, jt: JoinToken, audit: AuditEvent) -> Result<()> {
    // Lock the agent row: a concurrent kill either precedes this (and the token gets the
    // new generation) or follows it (and revokes the token).
    let sql = format!("SELECT {} FROM agents WHERE name = $1 FOR UPDATE", super::AGENT_COLS);
    let a = sqlx::query(&sql).bind(jt.agent.as_str()).fetch_optional(ctx.conn()).await.map_err(map_err)?;
    let generation = match a.map(|r| rows::agent(&r, 0)).transpose()? {
        None => return Err(StoreError::not_found("agent", &jt.agent)),
        Some(a) if a.state != AgentState::Enabled => return Err(conflict(format!("agent `{}` is disabled", a.name))),
        Some(a) => a.kill_generation,
    };
    sqlx::query(
        "INSERT INTO join_tokens (id, agent, secret_hash, created_at, expires_at, agent_generation) \
         VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(jt.id.as_str())
    .bind(jt.agent.as_str())
    .bind(&jt.secret_hash)
    .bind(jt.created_at.0)
    .bind(jt.expires_at.0)
    .bind(i64::try_from(generation).map_err(|_| StoreError::Corrupt("kill generation".into()))?)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

async fn join_token(c: &mut PgConnection, id: &JoinTokenId) -> Result<Option<JoinToken>> {
    let sql = format!("SELECT {} FROM join_tokens WHERE id = $1", super::JOIN_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::join_token(&r, 0)).transpose()
}

async fn redeem_join_token(ctx: &mut WriteCtx, id: JoinTokenId, inst: Instance, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "UPDATE join_tokens SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $1 AND agent = $4 AND EXISTS (SELECT 1 FROM agents WHERE name = $4 AND state = 'enabled' \
         AND kill_generation = join_tokens.agent_generation)",
    )
    .bind(inst.created_at.0)
    .bind(inst.id.as_str())
    .bind(id.as_str())
    .bind(inst.agent.as_str())
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict("join token is used, expired or revoked, or its agent is disabled"));
    }
    insert_instance(ctx.conn(), &inst).await?;
    ctx.audit(audit)?;
    Ok(())
}

pub(crate) async fn insert_instance(c: &mut PgConnection, inst: &Instance) -> Result<()> {
    sqlx::query(
        "INSERT INTO instances (id, agent, state, created_at, expires_at, workflow, renew_until) \
         VALUES ($1,$2,$3,$4,$5,$6,$7)",
    )
    .bind(inst.id.as_str())
    .bind(inst.agent.as_str())
    .bind(inst.state.as_str())
    .bind(inst.created_at.0)
    .bind(inst.expires_at.0)
    .bind(inst.workflow.as_ref().map(|w| w.as_str()))
    .bind(inst.renew_until.map(|t| t.0))
    .execute(c)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn instance(c: &mut PgConnection, id: &InstanceId) -> Result<Option<Instance>> {
    let sql = format!("SELECT {} FROM instances WHERE id = $1", super::INSTANCE_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::instance(&r, 0)).transpose()
}

async fn renew_instance(ctx: &mut WriteCtx, id: InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "UPDATE instances SET expires_at = LEAST($1, COALESCE(renew_until, $1)) WHERE id = $2 AND state = 'active' \
         AND expires_at > $3 \
         AND EXISTS (SELECT 1 FROM agents WHERE name = instances.agent AND state = 'enabled')",
    )
    .bind(expires_at.0)
    .bind(id.as_str())
    .bind(audit.time.0)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("instance `{id}` is not active")));
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Instance(id)]);
    Ok(())
}

/// Workflow, agent and instance in one round trip (each may be absent).
async fn start_context(
    c: &mut PgConnection,
    wf: &WorkflowName,
    ag: &AgentName,
    inst: Option<&InstanceId>,
) -> Result<StartContext> {
    let sql = format!(
        "SELECT {}, {}, {} FROM (SELECT 1) one \
         LEFT JOIN workflows w ON w.name = $1 LEFT JOIN agents a ON a.name = $2 LEFT JOIN instances i ON i.id = $3",
        rows::prefixed("w", super::WORKFLOW_COLS),
        rows::prefixed("a", super::AGENT_COLS),
        rows::prefixed("i", super::INSTANCE_COLS)
    );
    let r = sqlx::query(&sql)
        .bind(wf.as_str())
        .bind(ag.as_str())
        .bind(inst.map(|i| i.as_str()))
        .fetch_one(c)
        .await
        .map_err(map_err)?;
    let (oa, oi) = (rows::WORKFLOW_N, rows::WORKFLOW_N + rows::AGENT_N);
    Ok(StartContext {
        workflow: if rows::present(&r, 0)? { Some(rows::workflow(&r, 0)?) } else { None },
        agent: if rows::present(&r, oa)? { Some(rows::agent(&r, oa)?) } else { None },
        instance: if rows::present(&r, oi)? { Some(rows::instance(&r, oi)?) } else { None },
    })
}

/// Inserts the task only if, inside this transaction, its workflow is active, its agent
/// enabled, its instance and parent (if any) active: a concurrent kill always wins.
async fn create_task(ctx: &mut WriteCtx, t: Task, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "INSERT INTO tasks (id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
         state, started_by, delegation, created_at, expires_at) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, \
         $11::text, $14::text, $12::bigint, $13::bigint \
         WHERE EXISTS (SELECT 1 FROM workflows WHERE name = $2 AND state = 'active') \
         AND EXISTS (SELECT 1 FROM agents WHERE name = $3 AND state = 'enabled') \
         AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM instances WHERE id = $4 AND state = 'active' AND agent = $3)) \
         AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM tasks WHERE id = $5 AND state = 'active')) \
         AND (($14::jsonb->>'grant') IS NULL OR EXISTS (SELECT 1 FROM grants g \
              WHERE g.id = ($14::jsonb->>'grant') AND g.state = 'active' AND g.expires_at > $12))",
    )
    .bind(t.id.as_str())
    .bind(t.workflow.as_str())
    .bind(t.agent.as_str())
    .bind(t.instance.as_ref().map(|i| i.as_str()))
    .bind(t.parent.as_ref().map(|p| p.as_str()))
    .bind(&t.intent)
    .bind(&t.intent_hash)
    .bind(t.sensitivity.as_str())
    .bind(json(&t.audience))
    .bind(t.state.as_str())
    .bind(&t.started_by)
    .bind(t.created_at.0)
    .bind(t.expires_at.0)
    .bind(json(&t.delegation))
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict("workflow, agent, instance or parent task is no longer active"));
    }
    ctx.audit(audit)?;
    Ok(())
}

/// A task start waiting in the writer's queue.
pub(crate) struct NewTask {
    pub task: Task,
    pub audit: AuditEvent,
}

/// Inserts a batch's task starts with one statement, each only if its workflow, agent,
/// instance and parent are still live (checked inside this transaction, as in
/// [`create_task`]), and seals an audit record for each one inserted. Returns each task's
/// outcome in order. Should the statement fail (it cannot for well-formed input), falls back
/// to one savepoint-guarded insert per task so one bad task cannot fail the others.
pub(crate) async fn create_tasks(ctx: &mut WriteCtx, tasks: Vec<&NewTask>) -> Result<Vec<Result<()>>> {
    let n = tasks.len();
    let mut cols: [Vec<Option<String>>; 12] = Default::default();
    let (mut created, mut expires) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for NewTask { task: t, .. } in &tasks {
        let vals = [
            Some(t.id.to_string()),
            Some(t.workflow.to_string()),
            Some(t.agent.to_string()),
            t.instance.as_ref().map(|i| i.to_string()),
            t.parent.as_ref().map(|p| p.to_string()),
            Some(t.intent.clone()),
            Some(t.intent_hash.clone()),
            Some(t.sensitivity.as_str().to_owned()),
            Some(json(&t.audience)),
            Some(t.state.as_str().to_owned()),
            Some(t.started_by.clone()),
            Some(json(&t.delegation)),
        ];
        for (col, v) in cols.iter_mut().zip(vals) {
            col.push(v);
        }
        created.push(t.created_at.0);
        expires.push(t.expires_at.0);
    }
    sqlx::query("SAVEPOINT bulk_tasks").execute(ctx.conn()).await.map_err(map_err)?;
    let mut q = sqlx::query_scalar::<_, String>(
        "INSERT INTO tasks (id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
         state, started_by, delegation, created_at, expires_at) \
         SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[]) \
         AS u(id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, state, started_by, \
         delegation, created_at, expires_at) \
         WHERE EXISTS (SELECT 1 FROM workflows w WHERE w.name = u.workflow AND w.state = 'active') \
         AND EXISTS (SELECT 1 FROM agents a WHERE a.name = u.agent AND a.state = 'enabled') \
         AND (u.instance IS NULL OR EXISTS (SELECT 1 FROM instances i \
              WHERE i.id = u.instance AND i.state = 'active' AND i.agent = u.agent)) \
         AND (u.parent IS NULL OR EXISTS (SELECT 1 FROM tasks p WHERE p.id = u.parent AND p.state = 'active')) \
         AND ((u.delegation::jsonb->>'grant') IS NULL OR EXISTS (SELECT 1 FROM grants g \
              WHERE g.id = (u.delegation::jsonb->>'grant') AND g.state = 'active' AND g.expires_at > u.created_at)) \
         RETURNING id",
    );
    for col in cols {
        q = q.bind(col);
    }
    match q.bind(created).bind(expires).fetch_all(ctx.conn()).await {
        Ok(ids) => {
            sqlx::query("RELEASE SAVEPOINT bulk_tasks").execute(ctx.conn()).await.map_err(map_err)?;
            let inserted: std::collections::HashSet<String> = ids.into_iter().collect();
            let mut out = Vec::with_capacity(n);
            for nt in tasks {
                if inserted.contains(nt.task.id.as_str()) {
                    ctx.audit(nt.audit.clone())?;
                    out.push(Ok(()));
                } else {
                    out.push(Err(conflict("workflow, agent, instance or parent task is no longer active")));
                }
            }
            Ok(out)
        }
        Err(e) => {
            tracing::warn!(error = %map_err(e), tasks = n, "bulk task insert failed; inserting one by one");
            sqlx::query("ROLLBACK TO SAVEPOINT bulk_tasks").execute(ctx.conn()).await.map_err(map_err)?;
            sqlx::query("RELEASE SAVEPOINT bulk_tasks").execute(ctx.conn()).await.map_err(map_err)?;
            let mut out = Vec::with_capacity(n);
            for nt in tasks {
                sqlx::query("SAVEPOINT one_task").execute(ctx.conn()).await.map_err(map_err)?;
                let (head, records) = (ctx.head, ctx.records.len());
                let r = create_task(ctx, nt.task.clone(), nt.audit.clone()).await;
                if r.is_err() {
                    ctx.head = head;
                    ctx.records.truncate(records);
                    sqlx::query("ROLLBACK TO SAVEPOINT one_task").execute(ctx.conn()).await.map_err(map_err)?;
                }
                sqlx::query("RELEASE SAVEPOINT one_task").execute(ctx.conn()).await.map_err(map_err)?;
                out.push(r);
            }
            Ok(out)
        }
    }
}

pub(super) async fn task(c: &mut PgConnection, id: &TaskId) -> Result<Option<Task>> {
    let sql = format!("SELECT {} FROM tasks WHERE id = $1", super::TASK_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::task(&r, 0)).transpose()
}

/// Task, workflow, agent and instance in one statement (one consistent snapshot).
async fn task_snapshot(c: &mut PgConnection, id: &TaskId) -> Result<Option<TaskSnapshot>> {
    let sql = format!(
        "SELECT {}, {}, {}, {} FROM tasks t \
         LEFT JOIN workflows w ON w.name = t.workflow LEFT JOIN agents a ON a.name = t.agent \
         LEFT JOIN instances i ON i.id = t.instance WHERE t.id = $1",
        rows::prefixed("t", super::TASK_COLS),
        rows::prefixed("w", super::WORKFLOW_COLS),
        rows::prefixed("a", super::AGENT_COLS),
        rows::prefixed("i", super::INSTANCE_COLS)
    );
    let Some(r) = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)? else {
        return Ok(None);
    };
    let (ow, oa) = (rows::TASK_N, rows::TASK_N + rows::WORKFLOW_N);
    let oi = oa + rows::AGENT_N;
    if !rows::present(&r, ow)? {
        return Err(StoreError::Corrupt(format!("task `{id}` names a missing workflow")));
    }
    if !rows::present(&r, oa)? {
        return Err(StoreError::Corrupt(format!("task `{id}` names a missing agent")));
    }
    Ok(Some(TaskSnapshot {
        task: rows::task(&r, 0)?,
        workflow: rows::workflow(&r, ow)?,
        agent: rows::agent(&r, oa)?,
        instance: if rows::present(&r, oi)? { Some(rows::instance(&r, oi)?) } else { None },
    }))
}

async fn list_tasks(c: &mut PgConnection, f: &TaskFilter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {} FROM tasks WHERE TRUE", super::TASK_COLS);
    let mut args = PgArguments::default();
    for (col, v) in [
        ("workflow", f.workflow.as_ref().map(|w| w.to_string())),
        ("agent", f.agent.as_ref().map(|a| a.to_string())),
        ("instance", f.instance.as_ref().map(|i| i.to_string())),
        ("state", f.state.map(|s| s.as_str().to_owned())),
    ] {
        if let Some(v) = v {
            let n = arg(&mut args, v)?;
            sql.push_str(&format!(" AND {col} = ${n}"));
        }
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let rs = sqlx::query_with(&sql, args).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(|r| rows::task(r, 0)).collect()
}

async fn record_tool_use(
    ctx: &mut WriteCtx,
    task: String,
    tool: String,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE task_tools SET last_used_at = greatest(last_used_at, $3), uses = uses + 1 \
         WHERE task_id = $1 AND tool = $2",
    )
    .bind(&task)
    .bind(&tool)
    .bind(at.0)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        // Concurrent first uses of one tool by one task from two replicas: the second adds one use.
        sqlx::query(
            "INSERT INTO task_tools (task_id, tool, first_used_at, last_used_at, uses) SELECT $1, $2, $3, $3, 1 \
             WHERE (SELECT count(*) FROM task_tools WHERE task_id = $1) < $4 \
             ON CONFLICT (task_id, tool) DO UPDATE SET uses = task_tools.uses + 1",
        )
        .bind(&task)
        .bind(&tool)
        .bind(at.0)
        .bind(super::MAX_TOOLS_PER_TASK)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

async fn tools_used(c: &mut PgConnection, task: &str) -> Result<Vec<String>> {
    let rs = sqlx::query_scalar::<_, String>("SELECT tool FROM task_tools WHERE task_id = $1 ORDER BY tool")
        .bind(task)
        .fetch_all(c)
        .await
        .map_err(map_err)?;
    Ok(rs)
}

/// Links a new workflow or agent to the human holding its owner's email, inserting the
/// proposed (unverified) human when there is none; a deactivated human owns nothing new.
pub(crate) async fn link_owner(
    c: &mut PgConnection,
    table: &str,
    name: &str,
    email: &str,
    proposed: Option<&HumanId>,
    at: remit_core::time::UnixMillis,
) -> Result<()> {
    let Some(proposed) = proposed else { return Ok(()) };
    sqlx::query(
        "INSERT INTO humans (id, email, display_name, state, roles, member_of, created_at, updated_at) \
         VALUES ($1, $2, '', 'unverified', '[]', '[]', $3, $3) ON CONFLICT (email) DO NOTHING",
    )
    .bind(proposed.as_str())
    .bind(email)
    .bind(at.0)
    .execute(&mut *c)
    .await
    .map_err(map_err)?;
    let (id, state): (String, String) = sqlx::query_as("SELECT id, state FROM humans WHERE email = $1")
        .bind(email)
        .fetch_one(&mut *c)
        .await
        .map_err(map_err)?;
    if state == "deactivated" {
        return Err(conflict(format!("owner `{email}` is deactivated and can own nothing new")));
    }
    sqlx::query(&format!("UPDATE {table} SET owner_id = $1 WHERE name = $2"))
        .bind(&id)
        .bind(name)
        .execute(c)
        .await
        .map_err(map_err)?;
    Ok(())
}
