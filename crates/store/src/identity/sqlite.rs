//! The identity area on SQLite: workflows, agents, join tokens, instances, tasks, tool uses
//! and kills.

use async_trait::async_trait;
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::cascade::{self, Found, TaskNode};
use remit_core::delegation::Delegation;
use remit_core::ids::{AgentName, HumanId, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::{IdentityStore, NODE_COLS, StartContext, TaskFilter, TaskSnapshot, WALK_CHUNK, refused};
use crate::sqlite::rows::{self, bad, ms, parsed};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Result, StoreError};

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.write(move |c| create_workflow(c, wf, audit)).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        let name = name.clone();
        self.read(move |c| workflow(c, &name)).await
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        self.read(list_workflows).await
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| set_workflow_state(c, &n, from, to, audit)).await
    }
    async fn set_workflow_tools(&self, name: &WorkflowName, tools: Vec<String>, audit: AuditEvent) -> Result<()> {
        let n = name.clone();
        self.write(move |c| set_workflow_json(c, &n, "allowed_tools", json(&tools), audit)).await
    }
    async fn set_workflow_trust(
        &self,
        name: &WorkflowName,
        trust: remit_core::delegation::TrustRules,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| set_workflow_json(c, &n, "trust", json(&trust), audit)).await
    }
    async fn set_owner(&self, target: super::Owned, owner: &str, proposed: HumanId, audit: AuditEvent) -> Result<()> {
        let owner = owner.to_owned();
        self.write(move |c| {
            let (table, name, kind) = target.table();
            let n = c
                .conn
                .execute(
                    &format!("UPDATE {table} SET owner = ?1, orphaned_at = NULL, updated_at = ?2 WHERE name = ?3"),
                    params![owner, audit.time.0, name],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found(kind, name));
            }
            link_owner(c.conn, table, name, &owner, Some(&proposed), audit.time)?;
            c.audit(audit)?;
            c.changed(target.change());
            Ok(())
        })
        .await
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.write(move |c| create_agent(c, agent, audit)).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        let name = name.clone();
        self.read(move |c| agent(c, &name)).await
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.read(list_agents).await
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        let n = name.clone();
        self.write(move |c| set_agent_state(c, &n, from, to, audit)).await
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.write(move |c| create_join_token(c, jt, audit)).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        let id = id.clone();
        self.read(move |c| join_token(c, &id)).await
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| redeem_join_token(c, &id, instance, audit)).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let id = id.clone();
        self.read(move |c| instance(c, &id)).await
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let i = id.clone();
        self.write(move |c| renew_instance(c, &i, expires_at, audit)).await
    }
    async fn renew_task(&self, id: &TaskId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE tasks SET expires_at = ?1 WHERE id = ?2 AND state = 'active' AND expires_at > ?3 \
                     AND expires_at < ?1 \
                     AND EXISTS (SELECT 1 FROM workflows WHERE name = tasks.workflow AND state = 'active') \
                     AND EXISTS (SELECT 1 FROM agents WHERE name = tasks.agent AND state = 'enabled')",
                    params![expires_at.0, id.as_str(), audit.time.0],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(conflict(format!("task `{id}` is not live, or is not extended by this")));
            }
            c.audit(audit)?;
            c.changed([Change::Task(id)]);
            Ok(())
        })
        .await
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        let (w, a, i) = (workflow.clone(), agent.clone(), instance.cloned());
        self.read(move |c| start_context(c, &w, &a, i.as_ref())).await
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        self.write(move |c| create_task(c, task, audit)).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = id.clone();
        self.read(move |c| task(c, &id)).await
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        let id = id.clone();
        self.read(move |c| task_snapshot(c, &id)).await
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        self.read(move |c| list_tasks(c, &filter)).await
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
        self.write(move |c| end_task(c, &i, to, at, &actor, reason.as_deref())).await
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        self.write(move |c| kill_switch(c, kill)).await
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let (task, tool) = (task.to_string(), tool.to_owned());
        self.write(move |c| record_tool_use(c, &task, &tool, at, audit)).await
    }
    async fn record_call(&self, task: &TaskId, tool: Option<&str>, at: UnixMillis, audit: AuditEvent) -> Result<bool> {
        let (task, tool) = (task.to_string(), tool.map(str::to_owned));
        self.write(move |c| {
            if !charge_calls(c.conn, &task)? {
                return Ok(false);
            }
            match tool {
                Some(t) => record_tool_use(c, &task, &t, at, audit)?,
                None => {
                    c.audit(audit)?;
                }
            }
            Ok(true)
        })
        .await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        let task = task.to_string();
        self.read(move |c| tools_used(c, &task)).await
    }
}

/// Charges one call to every budget above `task` (see `IdentityStore::record_call`); `false`,
/// with nothing written, when one is spent.
fn charge_calls(c: &Connection, task: &str) -> Result<bool> {
    let delegation = |id: &str| -> Result<Option<(i64, Delegation)>> {
        let row: Option<(i64, String)> = c
            .query_row("SELECT calls, delegation FROM tasks WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(map_err)?;
        row.map(|(n, d)| {
            Ok((n, serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("delegation: {e}")))?))
        })
        .transpose()
    };
    let Some((_, own)) = delegation(task)? else { return Ok(false) };
    let mut charged = Vec::new();
    for id in std::iter::once(task.to_owned()).chain(own.chain.iter().map(|h| h.task.to_string())) {
        let Some((calls, d)) = delegation(&id)? else { continue };
        if let Some(max) = d.authority.max_calls {
            if calls >= i64::try_from(max).unwrap_or(i64::MAX) {
                return Ok(false);
            }
            charged.push(id);
        }
    }
    if let Some(g) = &own.grant {
        let row: Option<(i64, String)> = c
            .query_row("SELECT calls, authority FROM grants WHERE id = ?1", [g.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(map_err)?;
        if let Some((calls, a)) = row {
            let a: remit_core::delegation::Authority =
                serde_json::from_str(&a).map_err(|e| StoreError::Corrupt(format!("grant authority: {e}")))?;
            if let Some(max) = a.max_calls {
                if calls >= i64::try_from(max).unwrap_or(i64::MAX) {
                    return Ok(false);
                }
                c.execute("UPDATE grants SET calls = calls + 1 WHERE id = ?1", [g.as_str()]).map_err(map_err)?;
            }
        }
    }
    for id in charged {
        c.execute("UPDATE tasks SET calls = calls + 1 WHERE id = ?1", [&id]).map_err(map_err)?;
    }
    Ok(true)
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

fn create_workflow(ctx: &mut WriteCtx<'_>, w: Workflow, audit: AuditEvent) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
             max_delegation_depth, state, created_at, updated_at, trust) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11) \
             ON CONFLICT (name) DO NOTHING",
            params![
                w.name.as_str(),
                w.purpose,
                w.owner,
                w.ceiling.as_str(),
                json(&w.allowed_tools),
                w.max_task_ttl_secs,
                w.max_delegation_depth,
                w.state.as_str(),
                w.created_at.0,
                w.updated_at.0,
                json(&w.trust)
            ],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("workflow `{}` already exists", w.name)));
    }
    link_owner(ctx.conn, "workflows", w.name.as_str(), &w.owner, w.owner_id.as_ref(), w.created_at)?;
    ctx.audit(audit)?;
    Ok(())
}

/// Links a new workflow or agent to the human holding its owner's email, inserting the
/// proposed (unverified) human when there is none; a deactivated human owns nothing new.
pub(crate) fn link_owner(
    c: &Connection,
    table: &str,
    name: &str,
    email: &str,
    proposed: Option<&HumanId>,
    at: remit_core::time::UnixMillis,
) -> Result<()> {
    let Some(proposed) = proposed else { return Ok(()) };
    c.execute(
        "INSERT INTO humans (id, email, display_name, state, roles, member_of, created_at, updated_at) \
         VALUES (?1, ?2, '', 'unverified', '[]', '[]', ?3, ?3) ON CONFLICT (email) DO NOTHING",
        params![proposed.as_str(), email, at.0],
    )
    .map_err(map_err)?;
    let (id, state): (String, String) = c
        .query_row("SELECT id, state FROM humans WHERE email = ?1", [email], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_err)?;
    if state == "deactivated" {
        return Err(conflict(format!("owner `{email}` is deactivated and can own nothing new")));
    }
    c.execute(&format!("UPDATE {table} SET owner_id = ?1 WHERE name = ?2"), params![id, name]).map_err(map_err)?;
    Ok(())
}

fn workflow(c: &Connection, name: &WorkflowName) -> Result<Option<Workflow>> {
    let sql = format!("SELECT {} FROM workflows WHERE name = ?1", super::WORKFLOW_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([name.as_str()], rows::workflow).optional()).map_err(map_err)
}

fn list_workflows(c: &Connection) -> Result<Vec<Workflow>> {
    let sql = format!("SELECT {} FROM workflows ORDER BY name", super::WORKFLOW_COLS);
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([], rows::workflow).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

fn set_workflow_state(
    ctx: &mut WriteCtx<'_>,
    name: &WorkflowName,
    from: WorkflowState,
    to: WorkflowState,
    audit: AuditEvent,
) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE workflows SET state = ?1, updated_at = ?2 WHERE name = ?3 AND state = ?4",
            params![to.as_str(), audit.time.0, name.as_str(), from.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return match workflow(ctx.conn, name)? {
            None => Err(StoreError::not_found("workflow", name)),
            Some(w) => Err(conflict(format!("workflow `{name}` is {}", w.state))),
        };
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Workflow(name.clone())]);
    Ok(())
}

/// Replaces one of a workflow's JSON columns (`allowed_tools`, `trust`: fixed names).
fn set_workflow_json(
    ctx: &mut WriteCtx<'_>,
    name: &WorkflowName,
    col: &'static str,
    value: String,
    audit: AuditEvent,
) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            &format!("UPDATE workflows SET {col} = ?1, updated_at = ?2 WHERE name = ?3"),
            params![value, audit.time.0, name.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::not_found("workflow", name));
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Workflow(name.clone())]);
    Ok(())
}

fn create_agent(ctx: &mut WriteCtx<'_>, a: Agent, audit: AuditEvent) -> Result<()> {
    for wf in &a.workflows {
        if workflow(ctx.conn, wf)?.is_none() {
            return Err(StoreError::not_found("workflow", wf));
        }
    }
    let n = ctx
        .conn
        .execute(
            "INSERT INTO agents (name, owner, workflows, state, created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6) \
             ON CONFLICT (name) DO NOTHING",
            params![a.name.as_str(), a.owner, json(&a.workflows), a.state.as_str(), a.created_at.0, a.updated_at.0],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("agent `{}` already exists", a.name)));
    }
    link_owner(ctx.conn, "agents", a.name.as_str(), &a.owner, a.owner_id.as_ref(), a.created_at)?;
    ctx.audit(audit)?;
    Ok(())
}

fn agent(c: &Connection, name: &AgentName) -> Result<Option<Agent>> {
    let sql = format!("SELECT {} FROM agents WHERE name = ?1", super::AGENT_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([name.as_str()], rows::agent).optional()).map_err(map_err)
}

fn list_agents(c: &Connection) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {} FROM agents ORDER BY name", super::AGENT_COLS);
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([], rows::agent).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

fn set_agent_state(
    ctx: &mut WriteCtx<'_>,
    name: &AgentName,
    from: AgentState,
    to: AgentState,
    audit: AuditEvent,
) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE agents SET state = ?1, updated_at = ?2 WHERE name = ?3 AND state = ?4",
            params![to.as_str(), audit.time.0, name.as_str(), from.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return match agent(ctx.conn, name)? {
            None => Err(StoreError::not_found("agent", name)),
            Some(a) => Err(conflict(format!("agent `{name}` is {}", a.state))),
        };
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Agent(name.clone())]);
    Ok(())
}

fn create_join_token(ctx: &mut WriteCtx<'_>, jt: JoinToken, audit: AuditEvent) -> Result<()> {
    let generation = match agent(ctx.conn, &jt.agent)? {
        None => return Err(StoreError::not_found("agent", &jt.agent)),
        Some(a) if a.state != AgentState::Enabled => return Err(conflict(format!("agent `{}` is disabled", a.name))),
        Some(a) => a.kill_generation,
    };
    // The token belongs to the agent's current kill generation, whatever the caller read.
    ctx.conn
        .execute(
            "INSERT INTO join_tokens (id, agent, secret_hash, created_at, expires_at, agent_generation) \
             VALUES (?1,?2,?3,?4,?5,?6)",
            params![jt.id.as_str(), jt.agent.as_str(), jt.secret_hash, jt.created_at.0, jt.expires_at.0, generation],
        )
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

fn join_token(c: &Connection, id: &JoinTokenId) -> Result<Option<JoinToken>> {
    let sql = format!("SELECT {} FROM join_tokens WHERE id = ?1", super::JOIN_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::join_token).optional()).map_err(map_err)
}

pub(crate) fn insert_instance(c: &Connection, i: &Instance) -> Result<()> {
    c.execute(
        "INSERT INTO instances (id, agent, state, created_at, expires_at, workflow, renew_until) \
         VALUES (?1,?2,?3,?4,?5,?6,?7)",
        params![
            i.id.as_str(),
            i.agent.as_str(),
            i.state.as_str(),
            i.created_at.0,
            i.expires_at.0,
            i.workflow.as_ref().map(|w| w.as_str()),
            i.renew_until.map(|t| t.0)
        ],
    )
    .map_err(map_err)?;
    Ok(())
}

fn redeem_join_token(ctx: &mut WriteCtx<'_>, id: &JoinTokenId, inst: Instance, audit: AuditEvent) -> Result<()> {
    let now = inst.created_at.0;
    let n = ctx
        .conn
        .execute(
            "UPDATE join_tokens SET used_at = ?1, used_by = ?2 WHERE id = ?3 AND used_at IS NULL AND revoked_at IS NULL \
             AND expires_at > ?1 AND agent = ?4 AND EXISTS (SELECT 1 FROM agents WHERE name = ?4 AND state = 'enabled' \
             AND kill_generation = join_tokens.agent_generation)",
            params![now, inst.id.as_str(), id.as_str(), inst.agent.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict("join token is used, expired or revoked, or its agent is disabled"));
    }
    insert_instance(ctx.conn, &inst)?;
    ctx.audit(audit)?;
    Ok(())
}

fn instance(c: &Connection, id: &InstanceId) -> Result<Option<Instance>> {
    let sql = format!("SELECT {} FROM instances WHERE id = ?1", super::INSTANCE_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::instance).optional()).map_err(map_err)
}

fn renew_instance(ctx: &mut WriteCtx<'_>, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE instances SET expires_at = MIN(?1, COALESCE(renew_until, ?1)) WHERE id = ?2 AND state = 'active' AND expires_at > ?3 \
             AND EXISTS (SELECT 1 FROM agents WHERE name = instances.agent AND state = 'enabled')",
            params![expires_at.0, id.as_str(), audit.time.0],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("instance `{id}` is not active")));
    }
    ctx.audit(audit)?;
    ctx.changed([Change::Instance(id.clone())]);
    Ok(())
}

fn start_context(c: &Connection, wf: &WorkflowName, ag: &AgentName, inst: Option<&InstanceId>) -> Result<StartContext> {
    Ok(StartContext {
        workflow: workflow(c, wf)?,
        agent: agent(c, ag)?,
        instance: match inst {
            Some(i) => instance(c, i)?,
            None => None,
        },
    })
}

fn create_task(ctx: &mut WriteCtx<'_>, t: Task, audit: AuditEvent) -> Result<()> {
    // The kill switches are checked again here, inside the write transaction: a task can
    // never be created after (in commit order) its workflow, agent or instance was killed.
    let live: bool = ctx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE name = ?1 AND state = 'active') \
             AND EXISTS (SELECT 1 FROM agents WHERE name = ?2 AND state = 'enabled') \
             AND (?3 IS NULL OR EXISTS (SELECT 1 FROM instances WHERE id = ?3 AND state = 'active' AND agent = ?2)) \
             AND (?4 IS NULL OR EXISTS (SELECT 1 FROM tasks WHERE id = ?4 AND state = 'active')) \
             AND (?5 IS NULL OR EXISTS (SELECT 1 FROM grants WHERE id = ?5 AND state = 'active' AND expires_at > ?6))",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    t.workflow.as_str(),
                    t.agent.as_str(),
                    t.instance.as_ref().map(|i| i.as_str()),
                    t.parent.as_ref().map(|p| p.as_str()),
                    t.delegation.grant.as_ref().map(|g| g.as_str()),
                    t.created_at.0
                ],
                |r| r.get(0),
            )
        })
        .map_err(map_err)?;
    if !live {
        return Err(conflict("workflow, agent, instance, parent task or grant is no longer active"));
    }
    ctx.conn
        .prepare_cached(
            "INSERT INTO tasks (id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
             state, started_by, created_at, expires_at, delegation) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                t.id.as_str(),
                t.workflow.as_str(),
                t.agent.as_str(),
                t.instance.as_ref().map(|i| i.as_str()),
                t.parent.as_ref().map(|p| p.as_str()),
                t.intent,
                t.intent_hash,
                t.sensitivity.as_str(),
                json(&t.audience),
                t.state.as_str(),
                t.started_by,
                t.created_at.0,
                t.expires_at.0,
                json(&t.delegation)
            ])
        })
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

fn task(c: &Connection, id: &TaskId) -> Result<Option<Task>> {
    let sql = format!("SELECT {} FROM tasks WHERE id = ?1", super::TASK_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::task).optional()).map_err(map_err)
}

fn task_snapshot(c: &Connection, id: &TaskId) -> Result<Option<TaskSnapshot>> {
    let Some(task) = task(c, id)? else { return Ok(None) };
    let workflow = workflow(c, &task.workflow)?
        .ok_or_else(|| StoreError::Corrupt(format!("task `{id}` names a missing workflow")))?;
    let agent =
        agent(c, &task.agent)?.ok_or_else(|| StoreError::Corrupt(format!("task `{id}` names a missing agent")))?;
    let instance = match &task.instance {
        Some(i) => instance(c, i)?,
        None => None,
    };
    Ok(Some(TaskSnapshot { task, workflow, agent, instance }))
}

fn list_tasks(c: &Connection, f: &TaskFilter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {} FROM tasks WHERE 1=1", super::TASK_COLS);
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    let mut add = |clause: &str, v: String| {
        args.push(Box::new(v));
        sql.push_str(&format!(" AND {clause} = ?{}", args.len()));
    };
    if let Some(w) = &f.workflow {
        add("workflow", w.to_string());
    }
    if let Some(a) = &f.agent {
        add("agent", a.to_string());
    }
    if let Some(i) = &f.instance {
        add("instance", i.to_string());
    }
    if let Some(s) = f.state {
        add("state", s.as_str().to_owned());
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|b| &**b).collect();
    let out = s.query_map(refs.as_slice(), rows::task).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

fn record_tool_use(ctx: &mut WriteCtx<'_>, task: &str, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
    let n = ctx
        .conn
        .prepare_cached(
            "UPDATE task_tools SET last_used_at = max(last_used_at, ?3), uses = uses + 1 WHERE task_id = ?1 AND tool = ?2",
        )
        .and_then(|mut s| s.execute(params![task, tool, at.0]))
        .map_err(map_err)?;
    if n == 0 {
        ctx.conn
            .prepare_cached(
                "INSERT INTO task_tools (task_id, tool, first_used_at, last_used_at, uses) SELECT ?1, ?2, ?3, ?3, 1 \
                 WHERE (SELECT count(*) FROM task_tools WHERE task_id = ?1) < ?4",
            )
            .and_then(|mut s| s.execute(params![task, tool, at.0, super::MAX_TOOLS_PER_TASK]))
            .map_err(map_err)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

fn tools_used(c: &Connection, task: &str) -> Result<Vec<String>> {
    let mut s = c.prepare_cached("SELECT tool FROM task_tools WHERE task_id = ?1 ORDER BY tool").map_err(map_err)?;
    let out = s.query_map([task], |r| r.get::<_, String>(0)).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

// ---------------------------------------------------------------- kills

fn node(r: &Row<'_>) -> rusqlite::Result<TaskNode> {
    let parent: Option<String> = r.get(1)?;
    let id: String = r.get(0)?;
    let wf: String = r.get(2)?;
    let ag: String = r.get(3)?;
    Ok(TaskNode {
        id: TaskId::parse(&id).map_err(|e| bad(0, e))?,
        parent: parent.map(|p| TaskId::parse(&p).map_err(|e| bad(1, e))).transpose()?,
        workflow: WorkflowName::parse(&wf).map_err(|e| bad(2, e))?,
        agent: AgentName::parse(&ag).map_err(|e| bad(3, e))?,
        state: parsed(r, 4)?,
        expires_at: ms(r, 5)?,
    })
}

/// Tasks whose `column` is one of `values`, `chunk` ids per statement.
fn nodes_where(c: &Connection, column: &str, values: &[String], extra: &str) -> Result<Vec<TaskNode>> {
    let mut out = Vec::new();
    for chunk in values.chunks(WALK_CHUNK) {
        let marks = (1..=chunk.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT {NODE_COLS} FROM tasks WHERE {column} IN ({marks}){extra}");
        let mut s = c.prepare_cached(&sql).map_err(map_err)?;
        let args: Vec<&dyn ToSql> = chunk.iter().map(|v| v as &dyn ToSql).collect();
        let rows = s.query_map(args.as_slice(), node).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
        out.extend(rows.map_err(map_err)?);
    }
    Ok(out)
}

/// The roots plus every descendant, walked a level at a time with no depth limit (each id
/// visited once, so even corrupt parent cycles end).
fn walk(c: &Connection, roots: Vec<TaskNode>) -> Result<Found> {
    let mut seen: std::collections::HashSet<TaskId> = roots.iter().map(|t| t.id.clone()).collect();
    let mut found = Found { roots: roots.iter().map(|t| t.id.clone()).collect(), ..Default::default() };
    let mut frontier: Vec<String> = roots.iter().map(|t| t.id.to_string()).collect();
    found.tasks = roots;
    while !frontier.is_empty() {
        let children = nodes_where(c, "parent", &frontier, "")?;
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
fn apply(ctx: &mut WriteCtx<'_>, k: &Kill, mut plan: cascade::Plan) -> Result<KillReport> {
    plan.report.leases_pending =
        crate::leases::sqlite::mark_revoking(ctx.conn, &plan.report.tasks_revoked, k.at, &k.reason)?;
    for id in &plan.report.tasks_revoked {
        ctx.conn
            .prepare_cached(
                "UPDATE tasks SET state = 'revoked', ended_at = ?1, end_reason = ?2 WHERE id = ?3 AND state = 'active'",
            )
            .and_then(|mut s| s.execute(params![k.at.0, k.reason, id.as_str()]))
            .map_err(map_err)?;
    }
    for e in plan.audit {
        ctx.audit(e)?;
    }
    ctx.changed(Change::of_kill(&k.target, &plan.report));
    Ok(plan.report)
}

fn end_task(
    ctx: &mut WriteCtx<'_>,
    id: &TaskId,
    to: TaskState,
    at: UnixMillis,
    actor: &str,
    reason: Option<&str>,
) -> Result<KillReport> {
    if !matches!(to, TaskState::Completed | TaskState::Expired) {
        return Err(StoreError::Internal(format!("end_task cannot move a task to {to}")));
    }
    let Some(t) = task(ctx.conn, id)? else { return Err(StoreError::not_found("task", id)) };
    let n = ctx
        .conn
        .execute(
            "UPDATE tasks SET state = ?1, ended_at = ?2, end_reason = ?3 WHERE id = ?4 AND state = 'active'",
            params![to.as_str(), at.0, reason, id.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("task `{id}` is {}", t.state)));
    }
    let action = if to == TaskState::Completed { AuditAction::TaskComplete } else { AuditAction::TaskRevoke };
    let mut e = AuditEvent::new(at, actor, action).task(id).workflow(&t.workflow).agent(&t.agent);
    if let Some(r) = reason {
        e = e.reason(r);
    }
    ctx.audit(e)?;
    // Its subtree dies with it: a kill of each child.
    let kill =
        Kill { target: KillTarget::Task(id.clone()), actor: actor.to_owned(), reason: format!("parent task {to}"), at };
    let children = nodes_where(ctx.conn, "parent", &[id.to_string()], "")?;
    let found = walk(ctx.conn, children)?;
    let plan = cascade::plan(&kill, &found).map_err(refused)?;
    let own = crate::leases::sqlite::mark_revoking(ctx.conn, std::slice::from_ref(id), at, &format!("task {to}"))?;
    let mut report = apply(ctx, &kill, plan)?;
    report.leases_pending += own;
    Ok(report)
}

pub(crate) fn kill_switch(ctx: &mut WriteCtx<'_>, k: Kill) -> Result<KillReport> {
    let (found, pre) = match &k.target {
        KillTarget::Task(id) => {
            let roots = nodes_where(ctx.conn, "id", &[id.to_string()], "")?;
            if roots.is_empty() {
                return Err(StoreError::not_found("task", id));
            }
            (walk(ctx.conn, roots)?, vec![])
        }
        KillTarget::Instance(id) => {
            let Some(inst) = instance(ctx.conn, id)? else { return Err(StoreError::not_found("instance", id)) };
            let n = ctx
                .conn
                .execute(
                    "UPDATE instances SET state = 'revoked', revoked_at = ?1, revoke_reason = ?2 \
                     WHERE id = ?3 AND state = 'active'",
                    params![k.at.0, k.reason, id.as_str()],
                )
                .map_err(map_err)?;
            let roots = nodes_where(ctx.conn, "instance", &[id.to_string()], "")?;
            let mut found = walk(ctx.conn, roots)?;
            if n == 1 {
                found.instances.push(id.clone());
            }
            (found, vec![cascade::instance_record(&k, id, &inst.agent)])
        }
        KillTarget::Agent(name) => {
            let n = ctx
                .conn
                .execute(
                    "UPDATE agents SET state = 'disabled', updated_at = ?1, kill_generation = kill_generation + 1 \
                     WHERE name = ?2",
                    params![k.at.0, name.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found("agent", name));
            }
            let tokens = strings(
                ctx.conn,
                "UPDATE join_tokens SET revoked_at = ?1 WHERE agent = ?2 AND used_at IS NULL \
                 AND revoked_at IS NULL AND expires_at > ?1 RETURNING id",
                params![k.at.0, name.as_str()],
            )?;
            let instances = strings(
                ctx.conn,
                "UPDATE instances SET state = 'revoked', revoked_at = ?1, revoke_reason = ?2 \
                 WHERE agent = ?3 AND state = 'active' RETURNING id",
                params![k.at.0, k.reason, name.as_str()],
            )?;
            let roots = nodes_where(ctx.conn, "agent", &[name.to_string()], " AND state = 'active'")?;
            let mut found = walk(ctx.conn, roots)?;
            found.join_tokens = parse_all(&tokens, JoinTokenId::parse)?;
            found.instances = parse_all(&instances, InstanceId::parse)?;
            (found, vec![])
        }
        KillTarget::Workflow(name) => {
            let n = ctx
                .conn
                .execute(
                    "UPDATE workflows SET state = 'suspended', updated_at = ?1 WHERE name = ?2",
                    params![k.at.0, name.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found("workflow", name));
            }
            let roots = nodes_where(ctx.conn, "workflow", &[name.to_string()], " AND state = 'active'")?;
            (walk(ctx.conn, roots)?, vec![])
        }
    };
    let plan = cascade::plan(&k, &found).map_err(refused)?;
    for e in pre {
        ctx.audit(e)?;
    }
    apply(ctx, &k, plan)
}

/// The single text column of every row `sql` returns.
fn strings(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<String>> {
    let mut s = c.prepare(sql).map_err(map_err)?;
    let r: rusqlite::Result<Vec<String>> = s.query_map(args, |r| r.get(0)).map_err(map_err)?.collect();
    r.map_err(map_err)
}

fn parse_all<T>(v: &[String], parse: fn(&str) -> std::result::Result<T, remit_core::DomainError>) -> Result<Vec<T>> {
    v.iter().map(|s| parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
}
