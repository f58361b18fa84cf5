//! The SQL behind each [`crate::Store`] method, as plain functions over a connection.
//!
//! Reads take a `&Connection` from the reader pool. Writes take a [`WriteCtx`]: the writer
//! thread's connection inside an open transaction plus the audit chain head, so every
//! change and its audit records commit together.

use remit_core::audit::{AuditAction, AuditEvent, AuditRecord, Checkpoint, seal};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::rows::{self, map_err};
use crate::{
    Approval, AuditFilter, Installation, Reseal, Result, RetiringKey, StartContext, StoreError, StoredEntity,
    StoredKey, StoredPolicySet, TaskFilter, TaskSnapshot,
};

/// The audit chain head as the writer last committed (or is about to commit) it.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The writer's view inside one open transaction.
pub struct WriteCtx<'a> {
    pub conn: &'a Connection,
    pub head: &'a mut Head,
}

impl WriteCtx<'_> {
    /// Seals `e` onto the chain and inserts it.
    pub fn audit(&mut self, e: AuditEvent) -> Result<u64> {
        let seq = self.head.seq + 1;
        let (rec, hash) = seal(seq, e, &self.head.hash);
        insert_audit(self.conn, &rec)?;
        *self.head = Head { seq, hash };
        Ok(seq)
    }
}

fn insert_audit(c: &Connection, r: &AuditRecord) -> Result<()> {
    let e = &r.event;
    c.prepare_cached(
        "INSERT INTO audit (seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.seq,
            e.time.0,
            e.actor,
            e.action,
            e.outcome.as_str(),
            e.workflow,
            e.task,
            e.agent,
            e.reason,
            e.detail,
            r.prev_hash,
            r.hash
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

pub fn load_head(c: &Connection) -> Result<Head> {
    let row: Option<(u64, String)> = c
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(map_err)?;
    match row {
        None => Ok(Head { seq: 0, hash: remit_core::audit::GENESIS_HASH }),
        Some((seq, h)) => {
            let mut hash = [0u8; 32];
            let bytes =
                hex_decode(&h).ok_or_else(|| StoreError::Corrupt(format!("audit record {seq} has a bad hash")))?;
            hash.copy_from_slice(&bytes);
            Ok(Head { seq, hash })
        }
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()).collect()
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

// ---------------------------------------------------------------- installation and keys

pub fn installation(c: &Connection) -> Result<Option<Installation>> {
    let get = |k: &str| -> Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).optional().map_err(map_err)
    };
    let (Some(td), Some(h), Some(at)) = (get("trust_domain")?, get("admin_hash")?, get("installed_at")?) else {
        return Ok(None);
    };
    let at = at.parse().map_err(|_| StoreError::Corrupt("installed_at".into()))?;
    Ok(Some(Installation {
        trust_domain: td,
        issuer: get("issuer")?,
        admin_hash: h,
        installed_at: UnixMillis(at),
        mac: get("installation_mac")?,
    }))
}

fn put_meta(c: &Connection, k: &str, v: &str) -> Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [k, v],
    )
    .map_err(map_err)?;
    Ok(())
}

fn insert_key(c: &Connection, k: &StoredKey) -> Result<()> {
    c.execute(
        "INSERT INTO keys (kid, purpose, sealed, public, created_at, retire_after, mac) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![k.kid, k.purpose.as_str(), k.sealed, k.public, k.created_at.0, k.retire_after.map(|t| t.0), k.mac],
    )
    .map_err(map_err)?;
    Ok(())
}

pub fn install(ctx: &mut WriteCtx<'_>, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn)?.is_some() {
        return Err(conflict("remit is already initialized"));
    }
    put_meta(ctx.conn, "trust_domain", &inst.trust_domain)?;
    put_meta(ctx.conn, "admin_hash", &inst.admin_hash)?;
    put_meta(ctx.conn, "installed_at", &inst.installed_at.0.to_string())?;
    if let Some(iss) = &inst.issuer {
        put_meta(ctx.conn, "issuer", iss)?;
    }
    if let Some(mac) = &inst.mac {
        put_meta(ctx.conn, "installation_mac", mac)?;
    }
    put_meta(ctx.conn, "bundle_sequence", "1")?;
    for k in &keys {
        insert_key(ctx.conn, k)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

pub fn keys(c: &Connection, now: UnixMillis) -> Result<Vec<StoredKey>> {
    let sql = format!(
        "SELECT {} FROM keys WHERE retire_after IS NULL OR retire_after > ?1 ORDER BY created_at",
        rows::KEY_COLS
    );
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([now.0], rows::key).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn bundle_sequence(c: &Connection) -> Result<u64> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = 'bundle_sequence'", [], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn rotate_key(ctx: &mut WriteCtx<'_>, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
    let n = ctx
        .conn
        .execute(
            "UPDATE keys SET retire_after = ?1, mac = ?2 WHERE kid = ?3 AND purpose = ?4 AND retire_after IS NULL",
            params![old.retire_after.0, old.mac, old.kid, new.purpose.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("key `{}` is no longer the active {} key", old.kid, new.purpose.as_str())));
    }
    insert_key(ctx.conn, &new)?;
    let seq = bundle_sequence(ctx.conn)? + 1;
    put_meta(ctx.conn, "bundle_sequence", &seq.to_string())?;
    ctx.audit(audit)?;
    Ok(seq)
}

pub fn reseal(ctx: &mut WriteCtx<'_>, seal: Reseal, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn)?.is_none() {
        return Err(conflict("remit is not initialized"));
    }
    put_meta(ctx.conn, "issuer", &seal.issuer)?;
    put_meta(ctx.conn, "installation_mac", &seal.installation_mac)?;
    for (kid, mac) in &seal.key_macs {
        let n = ctx.conn.execute("UPDATE keys SET mac = ?1 WHERE kid = ?2", params![mac, kid]).map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::not_found("key", kid));
        }
    }
    ctx.audit(audit)?;
    Ok(())
}

// ---------------------------------------------------------------- workflows and agents

pub fn create_workflow(ctx: &mut WriteCtx<'_>, w: Workflow, audit: AuditEvent) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
             max_delegation_depth, state, created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) \
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
                w.updated_at.0
            ],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("workflow `{}` already exists", w.name)));
    }
    ctx.audit(audit)?;
    Ok(())
}

pub fn workflow(c: &Connection, name: &WorkflowName) -> Result<Option<Workflow>> {
    let sql = format!("SELECT {} FROM workflows WHERE name = ?1", rows::WORKFLOW_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([name.as_str()], rows::workflow).optional()).map_err(map_err)
}

pub fn list_workflows(c: &Connection) -> Result<Vec<Workflow>> {
    let sql = format!("SELECT {} FROM workflows ORDER BY name", rows::WORKFLOW_COLS);
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([], rows::workflow).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn set_workflow_state(
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
    Ok(())
}

pub fn create_agent(ctx: &mut WriteCtx<'_>, a: Agent, audit: AuditEvent) -> Result<()> {
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
    ctx.audit(audit)?;
    Ok(())
}

pub fn agent(c: &Connection, name: &AgentName) -> Result<Option<Agent>> {
    let sql = format!("SELECT {} FROM agents WHERE name = ?1", rows::AGENT_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([name.as_str()], rows::agent).optional()).map_err(map_err)
}

pub fn list_agents(c: &Connection) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {} FROM agents ORDER BY name", rows::AGENT_COLS);
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let out = s.query_map([], rows::agent).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn set_agent_state(
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
    Ok(())
}

// ---------------------------------------------------------------- join tokens and instances

pub fn create_join_token(ctx: &mut WriteCtx<'_>, jt: JoinToken, audit: AuditEvent) -> Result<()> {
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

pub fn join_token(c: &Connection, id: &JoinTokenId) -> Result<Option<JoinToken>> {
    let sql = format!("SELECT {} FROM join_tokens WHERE id = ?1", rows::JOIN_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::join_token).optional()).map_err(map_err)
}

fn insert_instance(c: &Connection, i: &Instance) -> Result<()> {
    c.execute(
        "INSERT INTO instances (id, agent, state, created_at, expires_at) VALUES (?1,?2,?3,?4,?5)",
        params![i.id.as_str(), i.agent.as_str(), i.state.as_str(), i.created_at.0, i.expires_at.0],
    )
    .map_err(map_err)?;
    Ok(())
}

pub fn redeem_join_token(ctx: &mut WriteCtx<'_>, id: &JoinTokenId, inst: Instance, audit: AuditEvent) -> Result<()> {
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

pub fn instance(c: &Connection, id: &InstanceId) -> Result<Option<Instance>> {
    let sql = format!("SELECT {} FROM instances WHERE id = ?1", rows::INSTANCE_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::instance).optional()).map_err(map_err)
}

pub fn renew_instance(
    ctx: &mut WriteCtx<'_>,
    id: &InstanceId,
    expires_at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE instances SET expires_at = ?1 WHERE id = ?2 AND state = 'active' AND expires_at > ?3 \
             AND EXISTS (SELECT 1 FROM agents WHERE name = instances.agent AND state = 'enabled')",
            params![expires_at.0, id.as_str(), audit.time.0],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("instance `{id}` is not active")));
    }
    ctx.audit(audit)?;
    Ok(())
}

// ---------------------------------------------------------------- tasks

pub fn start_context(
    c: &Connection,
    wf: &WorkflowName,
    ag: &AgentName,
    inst: Option<&InstanceId>,
) -> Result<StartContext> {
    Ok(StartContext {
        workflow: workflow(c, wf)?,
        agent: agent(c, ag)?,
        instance: match inst {
            Some(i) => instance(c, i)?,
            None => None,
        },
    })
}

pub fn create_task(ctx: &mut WriteCtx<'_>, t: Task, audit: AuditEvent) -> Result<()> {
    // The kill switches are checked again here, inside the write transaction: a task can
    // never be created after (in commit order) its workflow, agent or instance was killed.
    let live: bool = ctx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE name = ?1 AND state = 'active') \
             AND EXISTS (SELECT 1 FROM agents WHERE name = ?2 AND state = 'enabled') \
             AND (?3 IS NULL OR EXISTS (SELECT 1 FROM instances WHERE id = ?3 AND state = 'active' AND agent = ?2)) \
             AND (?4 IS NULL OR EXISTS (SELECT 1 FROM tasks WHERE id = ?4 AND state = 'active'))",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    t.workflow.as_str(),
                    t.agent.as_str(),
                    t.instance.as_ref().map(|i| i.as_str()),
                    t.parent.as_ref().map(|p| p.as_str())
                ],
                |r| r.get(0),
            )
        })
        .map_err(map_err)?;
    if !live {
        return Err(conflict("workflow, agent, instance or parent task is no longer active"));
    }
    ctx.conn
        .prepare_cached(
            "INSERT INTO tasks (id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
             state, started_by, created_at, expires_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
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
                t.expires_at.0
            ])
        })
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

pub fn task(c: &Connection, id: &TaskId) -> Result<Option<Task>> {
    let sql = format!("SELECT {} FROM tasks WHERE id = ?1", rows::TASK_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], rows::task).optional()).map_err(map_err)
}

pub fn task_snapshot(c: &Connection, id: &TaskId) -> Result<Option<TaskSnapshot>> {
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

pub fn list_tasks(c: &Connection, f: &TaskFilter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {} FROM tasks WHERE 1=1", rows::TASK_COLS);
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

/// Revokes every active, unexpired task in the subtrees rooted at the tasks `seed_sql`
/// selects (the roots included), audits each, and returns their ids.
fn revoke_subtrees(
    ctx: &mut WriteCtx<'_>,
    seed_sql: &str,
    seed: &dyn ToSql,
    kill: &Kill,
    cascade_from: &str,
) -> Result<Vec<TaskId>> {
    let sql = format!(
        "WITH RECURSIVE sub(id) AS ({seed_sql} UNION SELECT t.id FROM tasks t JOIN sub ON t.parent = sub.id) \
         SELECT t.id, t.workflow, t.agent FROM tasks t JOIN sub ON t.id = sub.id \
         WHERE t.state = 'active' AND t.expires_at > ?2"
    );
    let victims: Vec<(String, String, String)> = {
        let mut s = ctx.conn.prepare_cached(&sql).map_err(map_err)?;
        let rows = s
            .query_map(params![seed, kill.at.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows.map_err(map_err)?
    };
    let mut out = Vec::with_capacity(victims.len());
    for (id, wf, ag) in victims {
        ctx.conn
            .prepare_cached(
                "UPDATE tasks SET state = 'revoked', ended_at = ?1, end_reason = ?2 WHERE id = ?3 AND state = 'active'",
            )
            .and_then(|mut s| s.execute(params![kill.at.0, kill.reason, id]))
            .map_err(map_err)?;
        ctx.audit(
            AuditEvent::new(kill.at, &kill.actor, AuditAction::TaskRevoke)
                .task(&id)
                .workflow(&wf)
                .agent(&ag)
                .reason(&kill.reason)
                .detail([("cascade_from", cascade_from.into())]),
        )?;
        out.push(TaskId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

pub fn end_task(
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
    let kill =
        Kill { target: KillTarget::Task(id.clone()), actor: actor.to_owned(), reason: format!("parent task {to}"), at };
    let tasks_revoked =
        revoke_subtrees(ctx, "SELECT id FROM tasks WHERE parent = ?1", &id.as_str(), &kill, &format!("task:{id}"))?;
    Ok(KillReport { tasks_revoked, ..Default::default() })
}

pub fn kill(ctx: &mut WriteCtx<'_>, k: Kill) -> Result<KillReport> {
    let mut report = KillReport::default();
    match &k.target {
        KillTarget::Task(id) => {
            let Some(t) = task(ctx.conn, id)? else { return Err(StoreError::not_found("task", id)) };
            if t.state != TaskState::Active {
                return Err(conflict(format!("task `{id}` is {}", t.state)));
            }
            if t.expires_at <= k.at {
                return Err(conflict(format!("task `{id}` is expired")));
            }
            report.tasks_revoked = revoke_subtrees(ctx, "SELECT ?1", &id.as_str(), &k, &format!("task:{id}"))?;
        }
        KillTarget::Instance(id) => {
            let n = ctx
                .conn
                .execute(
                    "UPDATE instances SET state = 'revoked', revoked_at = ?1, revoke_reason = ?2 \
                     WHERE id = ?3 AND state = 'active'",
                    params![k.at.0, k.reason, id.as_str()],
                )
                .map_err(map_err)?;
            let Some(inst) = instance(ctx.conn, id)? else { return Err(StoreError::not_found("instance", id)) };
            if n == 1 {
                report.instances_revoked.push(id.clone());
            }
            ctx.audit(
                AuditEvent::new(k.at, &k.actor, AuditAction::InstanceRevoke)
                    .agent(&inst.agent)
                    .reason(&k.reason)
                    .detail([("instance", id.as_str().into())]),
            )?;
            report.tasks_revoked = revoke_subtrees(
                ctx,
                "SELECT id FROM tasks WHERE instance = ?1",
                &id.as_str(),
                &k,
                &format!("instance:{id}"),
            )?;
        }
        KillTarget::Agent(name) => {
            if agent(ctx.conn, name)?.is_none() {
                return Err(StoreError::not_found("agent", name));
            }
            ctx.conn
                .execute(
                    "UPDATE agents SET state = 'disabled', updated_at = ?1, kill_generation = kill_generation + 1 \
                     WHERE name = ?2",
                    params![k.at.0, name.as_str()],
                )
                .map_err(map_err)?;
            let unused: Vec<String> = {
                let mut s = ctx
                    .conn
                    .prepare(
                        "UPDATE join_tokens SET revoked_at = ?1 WHERE agent = ?2 AND used_at IS NULL \
                         AND revoked_at IS NULL AND expires_at > ?1 RETURNING id",
                    )
                    .map_err(map_err)?;
                let r: rusqlite::Result<Vec<String>> =
                    s.query_map(params![k.at.0, name.as_str()], |r| r.get(0)).map_err(map_err)?.collect();
                let mut r = r.map_err(map_err)?;
                r.sort();
                r
            };
            for j in &unused {
                ctx.audit(
                    AuditEvent::new(k.at, &k.actor, AuditAction::JoinTokenRevoke)
                        .agent(name)
                        .reason(&k.reason)
                        .detail([("cascade_from", format!("agent:{name}").into()), ("join_token", j.as_str().into())]),
                )?;
                report.join_tokens_revoked.push(JoinTokenId::parse(j).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            let ids: Vec<String> = {
                let mut s = ctx
                    .conn
                    .prepare("SELECT id FROM instances WHERE agent = ?1 AND state = 'active'")
                    .map_err(map_err)?;
                let r: rusqlite::Result<Vec<String>> =
                    s.query_map([name.as_str()], |r| r.get(0)).map_err(map_err)?.collect();
                r.map_err(map_err)?
            };
            ctx.conn
                .execute(
                    "UPDATE instances SET state = 'revoked', revoked_at = ?1, revoke_reason = ?2 \
                     WHERE agent = ?3 AND state = 'active'",
                    params![k.at.0, k.reason, name.as_str()],
                )
                .map_err(map_err)?;
            for i in &ids {
                ctx.audit(
                    AuditEvent::new(k.at, &k.actor, AuditAction::InstanceRevoke)
                        .agent(name)
                        .reason(&k.reason)
                        .detail([("cascade_from", format!("agent:{name}").into()), ("instance", i.as_str().into())]),
                )?;
                report.instances_revoked.push(InstanceId::parse(i).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            report.tasks_revoked = revoke_subtrees(
                ctx,
                "SELECT id FROM tasks WHERE agent = ?1 AND state = 'active'",
                &name.as_str(),
                &k,
                &format!("agent:{name}"),
            )?;
            ctx.audit(
                AuditEvent::new(k.at, &k.actor, AuditAction::AgentDisable).agent(name).reason(&k.reason).detail([
                    ("instances_revoked", report.instances_revoked.len().into()),
                    ("tasks_revoked", report.tasks_revoked.len().into()),
                    ("join_tokens_revoked", report.join_tokens_revoked.len().into()),
                ]),
            )?;
        }
        KillTarget::Workflow(name) => {
            if workflow(ctx.conn, name)?.is_none() {
                return Err(StoreError::not_found("workflow", name));
            }
            ctx.conn
                .execute(
                    "UPDATE workflows SET state = 'suspended', updated_at = ?1 WHERE name = ?2",
                    params![k.at.0, name.as_str()],
                )
                .map_err(map_err)?;
            report.tasks_revoked = revoke_subtrees(
                ctx,
                "SELECT id FROM tasks WHERE workflow = ?1 AND state = 'active'",
                &name.as_str(),
                &k,
                &format!("workflow:{name}"),
            )?;
            ctx.audit(
                AuditEvent::new(k.at, &k.actor, AuditAction::WorkflowSuspend)
                    .workflow(name)
                    .reason(&k.reason)
                    .detail([("tasks_revoked", report.tasks_revoked.len().into())]),
            )?;
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------- audit

pub fn list_audit(c: &Connection, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = format!("SELECT {} FROM audit WHERE seq > ?1", rows::AUDIT_COLS);
    // No record has a seq above i64::MAX: a larger `after` simply finds nothing.
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(i64::try_from(f.after_seq).unwrap_or(i64::MAX))];
    let mut add = |clause: &str, v: Box<dyn ToSql>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(w) = &f.workflow {
        add("workflow =", Box::new(w.clone()));
    }
    if let Some(t) = &f.task {
        add("task =", Box::new(t.clone()));
    }
    if let Some(a) = &f.agent {
        add("agent =", Box::new(a.clone()));
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
    sql.push_str(&format!(" ORDER BY seq LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|b| &**b).collect();
    let out = s.query_map(refs.as_slice(), rows::audit).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn put_checkpoint(c: &Connection, cp: &Checkpoint) -> Result<()> {
    c.execute(
        "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES (?1,?2,?3,?4,?5) \
         ON CONFLICT (seq) DO NOTHING",
        params![cp.seq, cp.head_hash, cp.time.0, cp.key_id, cp.signature],
    )
    .map_err(map_err)?;
    Ok(())
}

pub fn checkpoints(c: &Connection) -> Result<Vec<Checkpoint>> {
    let mut s = c
        .prepare_cached("SELECT seq, head_hash, time, key_id, signature FROM audit_checkpoints ORDER BY seq")
        .map_err(map_err)?;
    let out = s.query_map([], rows::checkpoint).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

// ---------------------------------------------------------------- policies and entities

pub fn put_policy_set(
    ctx: &mut WriteCtx<'_>,
    bundle: &str,
    at: UnixMillis,
    by: &str,
    audit: AuditEvent,
) -> Result<u64> {
    let version: u64 = ctx
        .conn
        .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_sets", [], |r| r.get(0))
        .map_err(map_err)?;
    ctx.conn
        .execute(
            "INSERT INTO policy_sets (version, bundle, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![version, bundle, at.0, by],
        )
        .map_err(map_err)?;
    ctx.audit(audit.with_detail_field("version", version.into()))?;
    Ok(version)
}

pub fn active_policy_set(c: &Connection) -> Result<Option<StoredPolicySet>> {
    c.query_row(
        "SELECT version, bundle, created_at, created_by FROM policy_sets ORDER BY version DESC LIMIT 1",
        [],
        |r| {
            Ok(StoredPolicySet {
                version: r.get(0)?,
                bundle: r.get(1)?,
                created_at: UnixMillis(r.get(2)?),
                created_by: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(map_err)
}

pub fn put_entities(
    ctx: &mut WriteCtx<'_>,
    entities: &[StoredEntity],
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    for e in entities {
        ctx.conn
            .execute(
                "INSERT INTO entities (etype, id, attrs, parents, aliases, updated_at) VALUES (?1,?2,?3,?4,?5,?6) \
                 ON CONFLICT (etype, id) DO UPDATE SET attrs = excluded.attrs, parents = excluded.parents, \
                 aliases = excluded.aliases, updated_at = excluded.updated_at",
                params![e.etype, e.id, e.attrs, e.parents, json(&e.aliases), at.0],
            )
            .map_err(map_err)?;
        ctx.conn
            .execute("DELETE FROM entity_aliases WHERE etype = ?1 AND id = ?2", params![e.etype, e.id])
            .map_err(map_err)?;
    }
    for e in entities {
        for a in &e.aliases {
            let n = ctx
                .conn
                .execute(
                    "INSERT INTO entity_aliases (etype, alias, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![e.etype, a, e.id],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(conflict(format!("alias `{a}` already names another `{}` entity", e.etype)));
            }
        }
    }
    ctx.audit(audit)?;
    Ok(())
}

pub fn entity(c: &Connection, etype: &str, key: &str) -> Result<Option<StoredEntity>> {
    let row: Option<(String, String, String, String)> = c
        .prepare_cached(
            "SELECT e.id, e.attrs, e.parents, e.aliases FROM entities e WHERE e.etype = ?1 AND e.id = ?2 \
             UNION ALL SELECT e.id, e.attrs, e.parents, e.aliases FROM entity_aliases a \
             JOIN entities e ON e.etype = a.etype AND e.id = a.id WHERE a.etype = ?1 AND a.alias = ?2 LIMIT 1",
        )
        .and_then(|mut s| s.query_row([etype, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional())
        .map_err(map_err)?;
    row.map(|r| StoredEntity::from_row(etype, r)).transpose()
}

// ---------------------------------------------------------------- approvals

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    let reasons: String = r.get(5)?;
    Ok(Approval {
        id: r.get(0)?,
        state: r.get(1)?,
        digest: r.get(2)?,
        policy_version: r.get(3)?,
        request: r.get(4)?,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        requested_by: r.get(6)?,
        requested_at: UnixMillis(r.get(7)?),
        expires_at: UnixMillis(r.get(8)?),
        decided_by: r.get(9)?,
        decided_at: r.get::<_, Option<i64>>(10)?.map(UnixMillis),
        decision_reason: r.get(11)?,
        used_at: r.get::<_, Option<i64>>(12)?.map(UnixMillis),
        task: r.get(13)?,
        workflow: r.get(14)?,
    })
}

pub fn create_approval(ctx: &mut WriteCtx<'_>, a: &Approval, audit: AuditEvent) -> Result<()> {
    ctx.conn
        .execute(
            "INSERT INTO approvals (id, state, digest, policy_version, request, reasons, requested_by, requested_at, \
             expires_at, task, workflow) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                a.id,
                a.digest,
                a.policy_version,
                a.request,
                json(&a.reasons),
                a.requested_by,
                a.requested_at.0,
                a.expires_at.0,
                a.task,
                a.workflow
            ],
        )
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

pub fn approval(c: &Connection, id: &str) -> Result<Option<Approval>> {
    let sql = format!("SELECT {} FROM approvals WHERE id = ?1", rows::APPROVAL_COLS);
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id], approval_row).optional()).map_err(map_err)
}

pub fn list_approvals(c: &Connection, state: Option<&str>, limit: u32) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {} FROM approvals WHERE (?1 IS NULL OR state = ?1) ORDER BY requested_at DESC, id LIMIT {}",
        rows::APPROVAL_COLS,
        limit.clamp(1, crate::MAX_PAGE)
    );
    let mut s = c.prepare(&sql).map_err(map_err)?;
    let out = s.query_map([state], approval_row).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn decide_approval(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    approve: bool,
    by: &str,
    reason: &str,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let to = if approve { "approved" } else { "denied" };
    let n = ctx
        .conn
        .execute(
            "UPDATE approvals SET state = ?1, decided_by = ?2, decided_at = ?3, decision_reason = ?4 \
             WHERE id = ?5 AND state = 'pending' AND expires_at > ?3",
            params![to, by, at.0, reason, id],
        )
        .map_err(map_err)?;
    if n == 0 {
        return match approval(ctx.conn, id)? {
            None => Err(StoreError::not_found("approval", id)),
            Some(a) if a.expires_at <= at => Err(conflict(format!("approval `{id}` has expired"))),
            Some(a) => Err(conflict(format!("approval `{id}` is already {}", a.state))),
        };
    }
    ctx.audit(audit)?;
    Ok(())
}

pub fn consume_approval(
    ctx: &mut WriteCtx<'_>,
    id: &str,
    digest: &str,
    policy_version: u64,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let n = ctx
        .conn
        .execute(
            "UPDATE approvals SET state = 'used', used_at = ?1 WHERE id = ?2 AND state = 'approved' \
             AND digest = ?3 AND policy_version = ?4 AND expires_at > ?1",
            params![at.0, id, digest, policy_version],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(conflict(format!("approval `{id}` is not an unused, unexpired approval of this exact call")));
    }
    ctx.audit(audit)?;
    Ok(())
}

// ---------------------------------------------------------------- tool uses

pub fn record_tool_use(
    ctx: &mut WriteCtx<'_>,
    task: &str,
    tool: &str,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
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
            .and_then(|mut s| s.execute(params![task, tool, at.0, crate::MAX_TOOLS_PER_TASK]))
            .map_err(map_err)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

pub fn tools_used(c: &Connection, task: &str) -> Result<Vec<String>> {
    let mut s = c.prepare_cached("SELECT tool FROM task_tools WHERE task_id = ?1 ORDER BY tool").map_err(map_err)?;
    let out = s.query_map([task], |r| r.get::<_, String>(0)).map_err(map_err)?.collect::<rusqlite::Result<Vec<_>>>();
    out.map_err(map_err)
}

pub fn list_entities(c: &Connection, etype: &str, after: Option<&str>, limit: u32) -> Result<Vec<StoredEntity>> {
    let sql = format!(
        "SELECT id, attrs, parents, aliases FROM entities WHERE etype = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let rows = s
        .query_map(params![etype, after], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<(String, String, String, String)>>>()
        .map_err(map_err)?;
    rows.into_iter().map(|r| StoredEntity::from_row(etype, r)).collect()
}
