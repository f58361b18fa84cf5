//! The SQL behind each [`crate::Store`] method on PostgreSQL.
//!
//! Reads take a `&mut PgConnection` (from the pool). Writes take a [`WriteCtx`]: the writer's
//! open transaction, which already holds the audit chain head row lock, plus the audit
//! records and changes the batch will append and announce just before it commits.

use remit_core::audit::{AuditAction, AuditEvent, AuditRecord, Checkpoint, seal};
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, KillTarget, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection, Postgres, Transaction};

use super::rows::{self, map_err};
use crate::{
    Approval, AuditFilter, Change, Installation, Reseal, Result, RetiringKey, StartContext, StoreError, StoredEntity,
    StoredKey, StoredPolicySet, TaskFilter, TaskSnapshot,
};

/// The audit chain head.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// One batch's open transaction and what it will append before committing.
pub struct WriteCtx {
    pub tx: Transaction<'static, Postgres>,
    pub head: Head,
    pub records: Vec<AuditRecord>,
    pub changes: Vec<Change>,
}

impl WriteCtx {
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Seals `e` onto the chain; it is inserted with the rest of the batch.
    pub fn audit(&mut self, e: AuditEvent) -> Result<u64> {
        let seq = self.head.seq + 1;
        let (rec, hash) = seal(seq, e, &self.head.hash);
        self.records.push(rec);
        self.head = Head { seq, hash };
        Ok(seq)
    }
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Internal(format!("{v} does not fit a BIGINT")))
}

pub fn hex_decode(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Locks the chain head for this transaction and reads it.
pub async fn lock_head(tx: &mut PgConnection) -> Result<Head> {
    let (seq, hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    let hash = hex_decode(&hash).ok_or_else(|| StoreError::Corrupt("audit head hash is malformed".into()))?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit head seq is negative".into()))?;
    Ok(Head { seq, hash })
}

/// Inserts the batch's audit records, moves the head, and queues the batch's notification
/// (delivered by PostgreSQL only if and when the transaction commits).
pub async fn flush(ctx: &mut WriteCtx) -> Result<()> {
    if !ctx.records.is_empty() {
        let n = ctx.records.len();
        let mut seq = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let (mut actor, mut action, mut outcome, mut detail, mut prev, mut hash) =
            (Vec::with_capacity(n), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut wf, mut task, mut agent, mut reason) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in ctx.records.drain(..) {
            seq.push(i64_of(r.seq)?);
            time.push(r.event.time.0);
            actor.push(r.event.actor);
            action.push(r.event.action);
            outcome.push(r.event.outcome.as_str().to_owned());
            wf.push(r.event.workflow);
            task.push(r.event.task);
            agent.push(r.event.agent);
            reason.push(r.event.reason);
            detail.push(r.event.detail);
            prev.push(r.prev_hash);
            hash.push(r.hash);
        }
        sqlx::query(
            "INSERT INTO audit (seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])",
        )
        .bind(seq)
        .bind(time)
        .bind(actor)
        .bind(action)
        .bind(outcome)
        .bind(wf)
        .bind(task)
        .bind(agent)
        .bind(reason)
        .bind(detail)
        .bind(prev)
        .bind(hash)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
        let head_hash = hex::encode(ctx.head.hash);
        let head_seq = i64_of(ctx.head.seq)?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head_seq)
            .bind(head_hash)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    if !ctx.changes.is_empty() {
        let payload = Change::encode_all(&ctx.changes);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::CHANNEL)
            .bind(payload)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn conflict(msg: impl Into<String>) -> StoreError {
    StoreError::Conflict(msg.into())
}

// ---------------------------------------------------------------- installation and keys

pub async fn installation(c: &mut PgConnection) -> Result<Option<Installation>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, value FROM meta WHERE key IN \
             ('trust_domain', 'admin_hash', 'installed_at', 'issuer', 'installation_mac')",
    )
    .fetch_all(c)
    .await
    .map_err(map_err)?;
    let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let (Some(td), Some(h), Some(at)) = (get("trust_domain"), get("admin_hash"), get("installed_at")) else {
        return Ok(None);
    };
    let at = at.parse().map_err(|_| StoreError::Corrupt("installed_at".into()))?;
    Ok(Some(Installation {
        trust_domain: td,
        issuer: get("issuer"),
        admin_hash: h,
        installed_at: UnixMillis(at),
        mac: get("installation_mac"),
    }))
}

async fn put_meta(c: &mut PgConnection, k: &str, v: &str) -> Result<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(k)
        .bind(v)
        .execute(c)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn insert_key(c: &mut PgConnection, k: &StoredKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (kid, purpose, sealed, public, created_at, retire_after, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.kid)
    .bind(k.purpose.as_str())
    .bind(&k.sealed)
    .bind(&k.public)
    .bind(k.created_at.0)
    .bind(k.retire_after.map(|t| t.0))
    .bind(&k.mac)
    .execute(c)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub async fn install(ctx: &mut WriteCtx, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn()).await?.is_some() {
        return Err(conflict("remit is already initialized"));
    }
    put_meta(ctx.conn(), "trust_domain", &inst.trust_domain).await?;
    put_meta(ctx.conn(), "admin_hash", &inst.admin_hash).await?;
    put_meta(ctx.conn(), "installed_at", &inst.installed_at.0.to_string()).await?;
    if let Some(iss) = &inst.issuer {
        put_meta(ctx.conn(), "issuer", iss).await?;
    }
    if let Some(mac) = &inst.mac {
        put_meta(ctx.conn(), "installation_mac", mac).await?;
    }
    put_meta(ctx.conn(), "bundle_sequence", "1").await?;
    for k in &keys {
        insert_key(ctx.conn(), k).await?;
    }
    ctx.audit(audit)?;
    Ok(())
}

pub async fn keys(c: &mut PgConnection, now: UnixMillis) -> Result<Vec<StoredKey>> {
    let sql = format!(
        "SELECT {} FROM keys WHERE retire_after IS NULL OR retire_after > $1 ORDER BY created_at, kid",
        rows::KEY_COLS
    );
    let rs = sqlx::query(&sql).bind(now.0).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(rows::key).collect()
}

pub async fn bundle_sequence(c: &mut PgConnection) -> Result<u64> {
    let v: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'bundle_sequence'")
        .fetch_optional(c)
        .await
        .map_err(map_err)?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub async fn rotate_key(ctx: &mut WriteCtx, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64> {
    let n = sqlx::query(
        "UPDATE keys SET retire_after = $1, mac = $2 WHERE kid = $3 AND purpose = $4 AND retire_after IS NULL",
    )
    .bind(old.retire_after.0)
    .bind(&old.mac)
    .bind(&old.kid)
    .bind(new.purpose.as_str())
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("key `{}` is no longer the active {} key", old.kid, new.purpose.as_str())));
    }
    insert_key(ctx.conn(), &new).await?;
    let seq = bundle_sequence(ctx.conn()).await? + 1;
    put_meta(ctx.conn(), "bundle_sequence", &seq.to_string()).await?;
    ctx.audit(audit)?;
    ctx.changes.push(Change::Keys);
    Ok(seq)
}

pub async fn reseal(ctx: &mut WriteCtx, seal: Reseal, audit: AuditEvent) -> Result<()> {
    if installation(ctx.conn()).await?.is_none() {
        return Err(conflict("remit is not initialized"));
    }
    put_meta(ctx.conn(), "issuer", &seal.issuer).await?;
    put_meta(ctx.conn(), "installation_mac", &seal.installation_mac).await?;
    for (kid, mac) in &seal.key_macs {
        let n = sqlx::query("UPDATE keys SET mac = $1 WHERE kid = $2")
            .bind(mac)
            .bind(kid)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::not_found("key", kid));
        }
    }
    ctx.audit(audit)?;
    ctx.changes.push(Change::Keys);
    Ok(())
}

// ---------------------------------------------------------------- workflows and agents

pub async fn create_workflow(ctx: &mut WriteCtx, w: Workflow, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "INSERT INTO workflows (name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, \
         max_delegation_depth, state, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) \
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
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("workflow `{}` already exists", w.name)));
    }
    ctx.audit(audit)?;
    Ok(())
}

pub async fn workflow(c: &mut PgConnection, name: &WorkflowName) -> Result<Option<Workflow>> {
    let sql = format!("SELECT {} FROM workflows WHERE name = $1", rows::WORKFLOW_COLS);
    let r = sqlx::query(&sql).bind(name.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::workflow(&r, 0)).transpose()
}

pub async fn list_workflows(c: &mut PgConnection) -> Result<Vec<Workflow>> {
    let sql = format!("SELECT {} FROM workflows ORDER BY name", rows::WORKFLOW_COLS);
    let rs = sqlx::query(&sql).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(|r| rows::workflow(r, 0)).collect()
}

pub async fn set_workflow_state(
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
    ctx.changes.push(Change::Workflow(name));
    Ok(())
}

pub async fn create_agent(ctx: &mut WriteCtx, a: Agent, audit: AuditEvent) -> Result<()> {
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
    ctx.audit(audit)?;
    Ok(())
}

pub async fn agent(c: &mut PgConnection, name: &AgentName) -> Result<Option<Agent>> {
    let sql = format!("SELECT {} FROM agents WHERE name = $1", rows::AGENT_COLS);
    let r = sqlx::query(&sql).bind(name.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::agent(&r, 0)).transpose()
}

pub async fn list_agents(c: &mut PgConnection) -> Result<Vec<Agent>> {
    let sql = format!("SELECT {} FROM agents ORDER BY name", rows::AGENT_COLS);
    let rs = sqlx::query(&sql).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(|r| rows::agent(r, 0)).collect()
}

pub async fn set_agent_state(
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
    ctx.changes.push(Change::Agent(name));
    Ok(())
}

// ---------------------------------------------------------------- join tokens and instances

pub async fn create_join_token(ctx: &mut WriteCtx, jt: JoinToken, audit: AuditEvent) -> Result<()> {
    // Lock the agent row: a concurrent kill either precedes this (and the token gets the
    // new generation) or follows it (and revokes the token).
    let sql = format!("SELECT {} FROM agents WHERE name = $1 FOR UPDATE", rows::AGENT_COLS);
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

pub async fn join_token(c: &mut PgConnection, id: &JoinTokenId) -> Result<Option<JoinToken>> {
    let sql = format!("SELECT {} FROM join_tokens WHERE id = $1", rows::JOIN_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::join_token(&r, 0)).transpose()
}

pub async fn redeem_join_token(ctx: &mut WriteCtx, id: JoinTokenId, inst: Instance, audit: AuditEvent) -> Result<()> {
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
    sqlx::query("INSERT INTO instances (id, agent, state, created_at, expires_at) VALUES ($1,$2,$3,$4,$5)")
        .bind(inst.id.as_str())
        .bind(inst.agent.as_str())
        .bind(inst.state.as_str())
        .bind(inst.created_at.0)
        .bind(inst.expires_at.0)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

pub async fn instance(c: &mut PgConnection, id: &InstanceId) -> Result<Option<Instance>> {
    let sql = format!("SELECT {} FROM instances WHERE id = $1", rows::INSTANCE_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::instance(&r, 0)).transpose()
}

pub async fn renew_instance(
    ctx: &mut WriteCtx,
    id: InstanceId,
    expires_at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE instances SET expires_at = $1 WHERE id = $2 AND state = 'active' AND expires_at > $3 \
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
    ctx.changes.push(Change::Instance(id));
    Ok(())
}

// ---------------------------------------------------------------- tasks

/// Workflow, agent and instance in one round trip (each may be absent).
pub async fn start_context(
    c: &mut PgConnection,
    wf: &WorkflowName,
    ag: &AgentName,
    inst: Option<&InstanceId>,
) -> Result<StartContext> {
    let sql = format!(
        "SELECT {}, {}, {} FROM (SELECT 1) one \
         LEFT JOIN workflows w ON w.name = $1 LEFT JOIN agents a ON a.name = $2 LEFT JOIN instances i ON i.id = $3",
        rows::prefixed("w", rows::WORKFLOW_COLS),
        rows::prefixed("a", rows::AGENT_COLS),
        rows::prefixed("i", rows::INSTANCE_COLS)
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
pub async fn create_task(ctx: &mut WriteCtx, t: Task, audit: AuditEvent) -> Result<()> {
    let n = sqlx::query(
        "INSERT INTO tasks (id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, \
         state, started_by, created_at, expires_at) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, \
         $11::text, $12::bigint, $13::bigint \
         WHERE EXISTS (SELECT 1 FROM workflows WHERE name = $2 AND state = 'active') \
         AND EXISTS (SELECT 1 FROM agents WHERE name = $3 AND state = 'enabled') \
         AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM instances WHERE id = $4 AND state = 'active' AND agent = $3)) \
         AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM tasks WHERE id = $5 AND state = 'active'))",
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
pub struct NewTask {
    pub task: Task,
    pub audit: AuditEvent,
}

/// Inserts a batch's task starts with one statement, each only if its workflow, agent,
/// instance and parent are still live (checked inside this transaction, as in
/// [`create_task`]), and seals an audit record for each one inserted. Returns each task's
/// outcome in order. Should the statement fail (it cannot for well-formed input), falls back
/// to one savepoint-guarded insert per task so one bad task cannot fail the others.
pub async fn create_tasks(ctx: &mut WriteCtx, tasks: Vec<&NewTask>) -> Result<Vec<Result<()>>> {
    let n = tasks.len();
    let mut cols: [Vec<Option<String>>; 11] = Default::default();
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
         state, started_by, created_at, expires_at) \
         SELECT u.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[]) \
         AS u(id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, state, started_by, \
         created_at, expires_at) \
         WHERE EXISTS (SELECT 1 FROM workflows w WHERE w.name = u.workflow AND w.state = 'active') \
         AND EXISTS (SELECT 1 FROM agents a WHERE a.name = u.agent AND a.state = 'enabled') \
         AND (u.instance IS NULL OR EXISTS (SELECT 1 FROM instances i \
              WHERE i.id = u.instance AND i.state = 'active' AND i.agent = u.agent)) \
         AND (u.parent IS NULL OR EXISTS (SELECT 1 FROM tasks p WHERE p.id = u.parent AND p.state = 'active')) \
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

pub async fn task(c: &mut PgConnection, id: &TaskId) -> Result<Option<Task>> {
    let sql = format!("SELECT {} FROM tasks WHERE id = $1", rows::TASK_COLS);
    let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
    r.map(|r| rows::task(&r, 0)).transpose()
}

/// Task, workflow, agent and instance in one statement (one consistent snapshot).
pub async fn task_snapshot(c: &mut PgConnection, id: &TaskId) -> Result<Option<TaskSnapshot>> {
    let sql = format!(
        "SELECT {}, {}, {}, {} FROM tasks t \
         LEFT JOIN workflows w ON w.name = t.workflow LEFT JOIN agents a ON a.name = t.agent \
         LEFT JOIN instances i ON i.id = t.instance WHERE t.id = $1",
        rows::prefixed("t", rows::TASK_COLS),
        rows::prefixed("w", rows::WORKFLOW_COLS),
        rows::prefixed("a", rows::AGENT_COLS),
        rows::prefixed("i", rows::INSTANCE_COLS)
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

/// Adds a bound argument, mapping an encode failure into the store's error.
fn arg<'q, T>(args: &mut PgArguments, v: T) -> Result<usize>
where
    T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    args.add(v).map_err(|e| StoreError::Internal(format!("cannot bind argument: {e}")))?;
    Ok(args.len())
}

pub async fn list_tasks(c: &mut PgConnection, f: &TaskFilter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {} FROM tasks WHERE TRUE", rows::TASK_COLS);
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

/// Deepest delegation chain a cascade follows (a guard; the rules cap depth far lower).
const MAX_CASCADE_DEPTH: usize = 256;

/// Revokes every active, unexpired task in the subtrees rooted at the tasks `seed_sql`
/// selects (the roots included), audits each, and returns their ids.
///
/// Walks the tree a level at a time with `= ANY($1)` lookups on the primary key and the
/// parent index: a recursive CTE here was planned as hash joins over the whole table.
async fn revoke_subtrees(
    ctx: &mut WriteCtx,
    seed_sql: &str,
    seed: &str,
    kill: &Kill,
    cascade_from: &str,
) -> Result<Vec<TaskId>> {
    let mut frontier: Vec<String> =
        sqlx::query_scalar(seed_sql).bind(seed).fetch_all(ctx.conn()).await.map_err(map_err)?;
    let mut seen: std::collections::HashSet<String> = frontier.iter().cloned().collect();
    let mut victims: Vec<(String, String, String)> = Vec::new();
    for _ in 0..MAX_CASCADE_DEPTH {
        if frontier.is_empty() {
            break;
        }
        let mut hit: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE tasks SET state = 'revoked', ended_at = $2, end_reason = $3 \
             WHERE id = ANY($1) AND state = 'active' AND expires_at > $2 RETURNING id, workflow, agent",
        )
        .bind(&frontier)
        .bind(kill.at.0)
        .bind(&kill.reason)
        .fetch_all(ctx.conn())
        .await
        .map_err(map_err)?;
        hit.sort();
        victims.extend(hit);
        let children: Vec<String> = sqlx::query_scalar("SELECT id FROM tasks WHERE parent = ANY($1)")
            .bind(&frontier)
            .fetch_all(ctx.conn())
            .await
            .map_err(map_err)?;
        frontier = children.into_iter().filter(|c| seen.insert(c.clone())).collect();
    }
    let mut out = Vec::with_capacity(victims.len());
    for (id, wf, ag) in victims {
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

pub async fn end_task(
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
    let kill = Kill { target: KillTarget::Task(id.clone()), actor, reason: format!("parent task {to}"), at };
    let tasks_revoked =
        revoke_subtrees(ctx, "SELECT id FROM tasks WHERE parent = $1::text", id.as_str(), &kill, &format!("task:{id}"))
            .await?;
    let report = KillReport { tasks_revoked, ..Default::default() };
    ctx.changes.extend(Change::of_kill(&kill.target, &report));
    Ok(report)
}

pub async fn kill(ctx: &mut WriteCtx, k: Kill) -> Result<KillReport> {
    let mut report = KillReport::default();
    match &k.target {
        KillTarget::Task(id) => {
            let Some(t) = task(ctx.conn(), id).await? else { return Err(StoreError::not_found("task", id)) };
            if t.state != TaskState::Active {
                return Err(conflict(format!("task `{id}` is {}", t.state)));
            }
            if t.expires_at <= k.at {
                return Err(conflict(format!("task `{id}` is expired")));
            }
            report.tasks_revoked =
                revoke_subtrees(ctx, "SELECT $1::text", id.as_str(), &k, &format!("task:{id}")).await?;
        }
        KillTarget::Instance(id) => {
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
            let Some(inst) = instance(ctx.conn(), id).await? else {
                return Err(StoreError::not_found("instance", id));
            };
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
                "SELECT id FROM tasks WHERE instance = $1::text",
                id.as_str(),
                &k,
                &format!("instance:{id}"),
            )
            .await?;
        }
        KillTarget::Agent(name) => {
            if agent(ctx.conn(), name).await?.is_none() {
                return Err(StoreError::not_found("agent", name));
            }
            sqlx::query(
                "UPDATE agents SET state = 'disabled', updated_at = $1, kill_generation = kill_generation + 1 \
                 WHERE name = $2",
            )
            .bind(k.at.0)
            .bind(name.as_str())
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
            let mut unused: Vec<String> = sqlx::query_scalar(
                "UPDATE join_tokens SET revoked_at = $1 WHERE agent = $2 AND used_at IS NULL \
                 AND revoked_at IS NULL AND expires_at > $1 RETURNING id",
            )
            .bind(k.at.0)
            .bind(name.as_str())
            .fetch_all(ctx.conn())
            .await
            .map_err(map_err)?;
            unused.sort();
            for j in &unused {
                ctx.audit(
                    AuditEvent::new(k.at, &k.actor, AuditAction::JoinTokenRevoke)
                        .agent(name)
                        .reason(&k.reason)
                        .detail([("cascade_from", format!("agent:{name}").into()), ("join_token", j.as_str().into())]),
                )?;
                report.join_tokens_revoked.push(JoinTokenId::parse(j).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            let mut ids: Vec<String> = sqlx::query_scalar(
                "UPDATE instances SET state = 'revoked', revoked_at = $1, revoke_reason = $2 \
                 WHERE agent = $3 AND state = 'active' RETURNING id",
            )
            .bind(k.at.0)
            .bind(&k.reason)
            .bind(name.as_str())
            .fetch_all(ctx.conn())
            .await
            .map_err(map_err)?;
            ids.sort();
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
                "SELECT id FROM tasks WHERE agent = $1::text AND state = 'active'",
                name.as_str(),
                &k,
                &format!("agent:{name}"),
            )
            .await?;
            ctx.audit(
                AuditEvent::new(k.at, &k.actor, AuditAction::AgentDisable).agent(name).reason(&k.reason).detail([
                    ("instances_revoked", report.instances_revoked.len().into()),
                    ("tasks_revoked", report.tasks_revoked.len().into()),
                    ("join_tokens_revoked", report.join_tokens_revoked.len().into()),
                ]),
            )?;
        }
        KillTarget::Workflow(name) => {
            if workflow(ctx.conn(), name).await?.is_none() {
                return Err(StoreError::not_found("workflow", name));
            }
            sqlx::query("UPDATE workflows SET state = 'suspended', updated_at = $1 WHERE name = $2")
                .bind(k.at.0)
                .bind(name.as_str())
                .execute(ctx.conn())
                .await
                .map_err(map_err)?;
            report.tasks_revoked = revoke_subtrees(
                ctx,
                "SELECT id FROM tasks WHERE workflow = $1::text AND state = 'active'",
                name.as_str(),
                &k,
                &format!("workflow:{name}"),
            )
            .await?;
            ctx.audit(
                AuditEvent::new(k.at, &k.actor, AuditAction::WorkflowSuspend)
                    .workflow(name)
                    .reason(&k.reason)
                    .detail([("tasks_revoked", report.tasks_revoked.len().into())]),
            )?;
        }
    }
    ctx.changes.extend(Change::of_kill(&k.target, &report));
    Ok(report)
}

// ---------------------------------------------------------------- audit

pub async fn audit_head(c: &mut PgConnection) -> Result<(u64, String)> {
    let r: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(c)
        .await
        .map_err(map_err)?;
    match r {
        None => Ok((0, hex::encode(remit_core::audit::GENESIS_HASH))),
        Some((seq, h)) => Ok((u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative audit seq".into()))?, h)),
    }
}

pub async fn list_audit(c: &mut PgConnection, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = format!("SELECT {} FROM audit WHERE seq > $1", rows::AUDIT_COLS);
    let mut args = PgArguments::default();
    arg(&mut args, i64::try_from(f.after_seq).unwrap_or(i64::MAX))?;
    for (clause, v) in [
        ("workflow =", f.workflow.clone()),
        ("task =", f.task.clone()),
        ("agent =", f.agent.clone()),
        ("action =", f.action.clone()),
    ] {
        if let Some(v) = v {
            let n = arg(&mut args, v)?;
            sql.push_str(&format!(" AND {clause} ${n}"));
        }
    }
    if let Some(t) = f.since {
        let n = arg(&mut args, t.0)?;
        sql.push_str(&format!(" AND time >= ${n}"));
    }
    if let Some(t) = f.until {
        let n = arg(&mut args, t.0)?;
        sql.push_str(&format!(" AND time < ${n}"));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {}", f.limit.clamp(1, crate::MAX_PAGE)));
    let rs = sqlx::query_with(&sql, args).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(rows::audit).collect()
}

pub async fn put_checkpoint(c: &mut PgConnection, cp: Checkpoint) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) VALUES ($1,$2,$3,$4,$5) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(i64_of(cp.seq)?)
    .bind(&cp.head_hash)
    .bind(cp.time.0)
    .bind(&cp.key_id)
    .bind(&cp.signature)
    .execute(c)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub async fn checkpoints(c: &mut PgConnection) -> Result<Vec<Checkpoint>> {
    let rs = sqlx::query("SELECT seq, head_hash, time, key_id, signature FROM audit_checkpoints ORDER BY seq")
        .fetch_all(c)
        .await
        .map_err(map_err)?;
    rs.iter().map(rows::checkpoint).collect()
}

// ---------------------------------------------------------------- policies and entities

pub async fn put_policy_set(
    ctx: &mut WriteCtx,
    bundle: String,
    at: UnixMillis,
    by: String,
    audit: AuditEvent,
) -> Result<u64> {
    // Writers hold the audit head lock, so MAX + 1 cannot race another replica.
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_sets")
        .fetch_one(ctx.conn())
        .await
        .map_err(map_err)?;
    sqlx::query("INSERT INTO policy_sets (version, bundle, created_at, created_by) VALUES ($1, $2, $3, $4)")
        .bind(version)
        .bind(&bundle)
        .bind(at.0)
        .bind(&by)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    let version = u64::try_from(version).map_err(|_| StoreError::Corrupt("negative policy version".into()))?;
    ctx.audit(audit.with_detail_field("version", version.into()))?;
    ctx.changes.push(Change::Policy);
    Ok(version)
}

pub async fn active_policy_set(c: &mut PgConnection) -> Result<Option<StoredPolicySet>> {
    let r: Option<(i64, String, i64, String)> =
        sqlx::query_as("SELECT version, bundle, created_at, created_by FROM policy_sets ORDER BY version DESC LIMIT 1")
            .fetch_optional(c)
            .await
            .map_err(map_err)?;
    r.map(|(v, bundle, at, by)| {
        Ok(StoredPolicySet {
            version: u64::try_from(v).map_err(|_| StoreError::Corrupt("negative policy version".into()))?,
            bundle,
            created_at: UnixMillis(at),
            created_by: by,
        })
    })
    .transpose()
}

pub async fn put_entities(ctx: &mut WriteCtx, entities: Vec<StoredEntity>, audit: AuditEvent) -> Result<()> {
    let at = audit.time.0;
    for e in &entities {
        sqlx::query(
            "INSERT INTO entities (etype, id, attrs, parents, aliases, updated_at) VALUES ($1,$2,$3,$4,$5,$6) \
             ON CONFLICT (etype, id) DO UPDATE SET attrs = excluded.attrs, parents = excluded.parents, \
             aliases = excluded.aliases, updated_at = excluded.updated_at",
        )
        .bind(&e.etype)
        .bind(&e.id)
        .bind(&e.attrs)
        .bind(&e.parents)
        .bind(json(&e.aliases))
        .bind(at)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
        sqlx::query("DELETE FROM entity_aliases WHERE etype = $1 AND id = $2")
            .bind(&e.etype)
            .bind(&e.id)
            .execute(ctx.conn())
            .await
            .map_err(map_err)?;
    }
    for e in &entities {
        for a in &e.aliases {
            let n =
                sqlx::query("INSERT INTO entity_aliases (etype, alias, id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(&e.etype)
                    .bind(a)
                    .bind(&e.id)
                    .execute(ctx.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            if n == 0 {
                return Err(conflict(format!("alias `{a}` already names another `{}` entity", e.etype)));
            }
        }
    }
    ctx.audit(audit)?;
    ctx.changes.push(Change::Entities);
    Ok(())
}

pub async fn entity(c: &mut PgConnection, etype: &str, key: &str) -> Result<Option<StoredEntity>> {
    let r: Option<(String, String, String, String)> = sqlx::query_as(
        "(SELECT e.id, e.attrs, e.parents, e.aliases FROM entities e WHERE e.etype = $1 AND e.id = $2) \
         UNION ALL (SELECT e.id, e.attrs, e.parents, e.aliases FROM entity_aliases a \
         JOIN entities e ON e.etype = a.etype AND e.id = a.id WHERE a.etype = $1 AND a.alias = $2) LIMIT 1",
    )
    .bind(etype)
    .bind(key)
    .fetch_optional(c)
    .await
    .map_err(map_err)?;
    r.map(|r| StoredEntity::from_row(etype, r)).transpose()
}

// ---------------------------------------------------------------- approvals

fn approval_row(r: &sqlx::postgres::PgRow) -> Result<Approval> {
    use sqlx::Row;
    let g = |e: sqlx::Error| map_err(e);
    let v: i64 = r.try_get(3).map_err(g)?;
    let reasons: String = r.try_get(5).map_err(g)?;
    Ok(Approval {
        id: r.try_get(0).map_err(g)?,
        state: r.try_get(1).map_err(g)?,
        digest: r.try_get(2).map_err(g)?,
        policy_version: u64::try_from(v).map_err(|_| StoreError::Corrupt("negative policy version".into()))?,
        request: r.try_get(4).map_err(g)?,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        requested_by: r.try_get(6).map_err(g)?,
        requested_at: UnixMillis(r.try_get(7).map_err(g)?),
        expires_at: UnixMillis(r.try_get(8).map_err(g)?),
        decided_by: r.try_get(9).map_err(g)?,
        decided_at: r.try_get::<Option<i64>, _>(10).map_err(g)?.map(UnixMillis),
        decision_reason: r.try_get(11).map_err(g)?,
        used_at: r.try_get::<Option<i64>, _>(12).map_err(g)?.map(UnixMillis),
        task: r.try_get(13).map_err(g)?,
        workflow: r.try_get(14).map_err(g)?,
    })
}

pub async fn create_approval(ctx: &mut WriteCtx, a: Approval, audit: AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO approvals (id, state, digest, policy_version, request, reasons, requested_by, requested_at, \
         expires_at, task, workflow) VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a.id)
    .bind(&a.digest)
    .bind(i64_of(a.policy_version)?)
    .bind(&a.request)
    .bind(json(&a.reasons))
    .bind(&a.requested_by)
    .bind(a.requested_at.0)
    .bind(a.expires_at.0)
    .bind(&a.task)
    .bind(&a.workflow)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?;
    ctx.audit(audit)?;
    Ok(())
}

pub async fn approval(c: &mut PgConnection, id: &str) -> Result<Option<Approval>> {
    let sql = format!("SELECT {} FROM approvals WHERE id = $1", rows::APPROVAL_COLS);
    let r = sqlx::query(&sql).bind(id).fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(approval_row).transpose()
}

pub async fn list_approvals(c: &mut PgConnection, state: Option<&str>, limit: u32) -> Result<Vec<Approval>> {
    let sql = format!(
        "SELECT {} FROM approvals WHERE ($1::text IS NULL OR state = $1) ORDER BY requested_at DESC, id LIMIT {}",
        rows::APPROVAL_COLS,
        limit.clamp(1, crate::MAX_PAGE)
    );
    let rs = sqlx::query(&sql).bind(state).fetch_all(c).await.map_err(map_err)?;
    rs.iter().map(approval_row).collect()
}

pub async fn decide_approval(
    ctx: &mut WriteCtx,
    id: String,
    approve: bool,
    by: String,
    reason: String,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let to = if approve { "approved" } else { "denied" };
    let n = sqlx::query(
        "UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3, decision_reason = $4 \
         WHERE id = $5 AND state = 'pending' AND expires_at > $3",
    )
    .bind(to)
    .bind(&by)
    .bind(at.0)
    .bind(&reason)
    .bind(&id)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return match approval(ctx.conn(), &id).await? {
            None => Err(StoreError::not_found("approval", &id)),
            Some(a) if a.expires_at <= at => Err(conflict(format!("approval `{id}` has expired"))),
            Some(a) => Err(conflict(format!("approval `{id}` is already {}", a.state))),
        };
    }
    ctx.audit(audit)?;
    Ok(())
}

pub async fn consume_approval(
    ctx: &mut WriteCtx,
    id: String,
    digest: String,
    policy_version: u64,
    at: UnixMillis,
    audit: AuditEvent,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE approvals SET state = 'used', used_at = $1 WHERE id = $2 AND state = 'approved' \
         AND digest = $3 AND policy_version = $4 AND expires_at > $1",
    )
    .bind(at.0)
    .bind(&id)
    .bind(&digest)
    .bind(i64_of(policy_version)?)
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(conflict(format!("approval `{id}` is not an unused, unexpired approval of this exact call")));
    }
    ctx.audit(audit)?;
    Ok(())
}

// ---------------------------------------------------------------- tool uses

pub async fn record_tool_use(
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
        .bind(crate::MAX_TOOLS_PER_TASK)
        .execute(ctx.conn())
        .await
        .map_err(map_err)?;
    }
    ctx.audit(audit)?;
    Ok(())
}

pub async fn tools_used(c: &mut PgConnection, task: &str) -> Result<Vec<String>> {
    let rs = sqlx::query_scalar::<_, String>("SELECT tool FROM task_tools WHERE task_id = $1 ORDER BY tool")
        .bind(task)
        .fetch_all(c)
        .await
        .map_err(map_err)?;
    Ok(rs)
}

pub async fn list_entities(
    c: &mut PgConnection,
    etype: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredEntity>> {
    let sql = format!(
        "SELECT id, attrs, parents, aliases FROM entities WHERE etype = $1 AND ($2::text IS NULL OR id > $2) \
         ORDER BY id LIMIT {}",
        limit.clamp(1, crate::MAX_PAGE)
    );
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as(&sql).bind(etype).bind(after).fetch_all(c).await.map_err(map_err)?;
    rows.into_iter().map(|r| StoredEntity::from_row(etype, r)).collect()
}
