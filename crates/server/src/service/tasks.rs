//! Agent instances and tasks: joining with a join token, renewing an instance identity,
//! starting, completing, revoking and reading tasks.

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::delegation::{self, ChildRequest};
use remit_core::ids::{AgentName, JoinTokenId, SpiffeId, TaskId, WorkflowName};
use remit_core::model::{Instance, InstanceState, KillReport, KillTarget, Sensitivity, Task, TaskState};
use remit_core::rules::{self, StartTask};
use remit_store::{StoreError, TaskFilter};
use remit_token::{Claims, RemitClaims, SvidKind, jwt};
use subtle::ConstantTimeEq;

use remit_policy::admin::{AdminAction, AdminTarget};

use super::Caller;
use super::admin::hex;
use crate::app::App;
use crate::error::Error;
use crate::metrics::Metrics;

/// An issued identity: the token and what it says.
pub struct Issued<T> {
    pub subject: T,
    pub spiffe_id: String,
    pub token: String,
}

/// What a caller asks for when starting a task (already parsed from the wire).
pub struct StartTaskRequest {
    /// Required for a root task; a child's is its parent's.
    pub workflow: Option<WorkflowName>,
    /// Required for admin callers and for a child (the worker agent); an instance may only
    /// start root tasks as its own agent.
    pub agent: Option<AgentName>,
    pub intent: String,
    /// Default `internal` for a root task, the parent's for a child.
    pub sensitivity: Option<Sensitivity>,
    pub ttl_secs: Option<u64>,
    pub audience: Vec<String>,
    /// Start a child of this task (a task token starts children of itself only).
    pub parent: Option<TaskId>,
    /// What the child may use, narrowed from its parent's.
    pub narrow: ChildRequest,
    /// Start a root task under this human's grant (the grant's agent and workflow only).
    pub grant: Option<remit_core::ids::GrantId>,
    /// Bind the task token to this DPoP key (RFC 7638 thumbprint), from a verified proof.
    pub bind: Option<String>,
}

/// What a new task's token is held to beyond its own rules: a deadline it may not pass (its
/// parent's or its grant's) and the DPoP key it is bound to.
struct Bounds {
    expires_by: Option<remit_core::time::UnixMillis>,
    bind: Option<String>,
}

const BAD_JOIN: &str = "join token is invalid, expired or already used";

impl App {
    /// Trades a one-time join token for an instance identity.
    pub async fn join(&self, presented: &str) -> Result<Issued<Instance>, Error> {
        let bad = || Error::Unauthenticated(BAD_JOIN.into());
        let (id, secret) = presented.trim().split_once('.').ok_or_else(bad)?;
        let id = JoinTokenId::parse(id).map_err(|_| bad())?;
        let Some(jt) = self.store.identity().join_token(&id).await? else { return Err(bad()) };
        let hash = hex(&remit_token::sha256(secret.as_bytes()));
        if !bool::from(hash.as_bytes().ct_eq(jt.secret_hash.as_bytes())) {
            return Err(bad());
        }
        let now = self.clock.now();
        let agent = self.store.identity().agent(&jt.agent).await?.ok_or_else(bad)?;
        let actor = format!("join:{id}");
        if let Err(e) = rules::check_join_token(&jt, &agent, now) {
            let denied = AuditEvent::new(now, &actor, AuditAction::InstanceJoin)
                .agent(&jt.agent)
                .outcome(Outcome::Denied)
                .reason(e.to_string());
            self.store.audit().append(vec![denied]).await?;
            return Err(bad());
        }
        let inst = Instance {
            id: remit_core::ids::InstanceId::from_random(self.random_id()),
            agent: jt.agent.clone(),
            state: InstanceState::Active,
            created_at: now,
            expires_at: now.plus_secs(self.cfg.limits.instance_ttl.as_secs()),
            revoked_at: None,
            revoke_reason: None,
            workflow: None,
            renew_until: None,
        };
        let spiffe = SpiffeId::instance(&self.trust_domain, &inst.agent, &inst.id);
        let audit = AuditEvent::new(now, &actor, AuditAction::InstanceJoin)
            .agent(&inst.agent)
            .detail([("instance", inst.id.as_str().into()), ("spiffe_id", spiffe.as_str().into())]);
        match self.store.identity().redeem_join_token(&id, inst.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(bad()),
            Err(e) => return Err(e.into()),
        }
        let token = self.mint_instance_token(&inst, &spiffe);
        Ok(Issued { subject: inst, spiffe_id: spiffe.to_string(), token })
    }

    pub(crate) fn mint_instance_token(&self, inst: &Instance, spiffe: &SpiffeId) -> String {
        self.metrics.tokens_issued.get_or_create(&Metrics::label("instance")).inc();
        self.mint_instance_svid(&inst.agent, &inst.id, spiffe, vec![self.cfg.audience.clone()], inst.expires_at)
    }

    /// An instance's JWT-SVID for `aud` until `exp` (Remit's own audience: its credential
    /// on this API; another: what the Workload API's `FetchJWTSVID` hands out).
    pub(crate) fn mint_instance_svid(
        &self,
        agent: &AgentName,
        instance: &remit_core::ids::InstanceId,
        spiffe: &SpiffeId,
        aud: Vec<String>,
        exp: remit_core::time::UnixMillis,
    ) -> String {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: spiffe.to_string(),
            aud,
            exp: exp.secs(),
            iat: self.clock.now().secs(),
            jti: self.new_jti(),
            remit: RemitClaims {
                kind: SvidKind::Instance,
                agent: agent.to_string(),
                instance: Some(instance.to_string()),
                workflow: None,
                task: None,
                intent_hash: None,
                sensitivity: None,
                tool: None,
                on_behalf_of: None,
                resource_prefix: None,
                trust_domain: None,
            },
            scope: None,
            act: None,
            cnf: None,
        };
        jwt::mint(self.keyring().signer(), &claims)
    }

    /// Extends the calling instance's identity by the configured instance TTL.
    pub async fn renew_instance(&self, caller: &Caller) -> Result<Issued<Instance>, Error> {
        let Caller::Instance { id, .. } = caller else {
            return Err(Error::Denied("only an agent instance can renew its own identity".into()));
        };
        let now = self.clock.now();
        let expires = now.plus_secs(self.cfg.limits.instance_ttl.as_secs());
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::InstanceRenew);
        self.store.identity().renew_instance(id, expires, audit).await?;
        let inst = self
            .store
            .identity()
            .instance(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("instance `{id}` not found")))?;
        let spiffe = SpiffeId::instance(&self.trust_domain, &inst.agent, &inst.id);
        let token = self.mint_instance_token(&inst, &spiffe);
        Ok(Issued { subject: inst, spiffe_id: spiffe.to_string(), token })
    }

    /// Starts a task and issues its JWT-SVID.
    pub async fn start_task(&self, caller: &Caller, req: StartTaskRequest) -> Result<Issued<Task>, Error> {
        if req.parent.is_some() || matches!(caller, Caller::Task { .. }) {
            return self.start_child(caller, req).await;
        }
        let workflow = req.workflow.clone().ok_or_else(|| Error::Invalid("`workflow` is required".into()))?;
        let (wf, agent, instance) = match caller {
            Caller::Task { .. } => return Err(Error::Internal("a task's start is a child's".into())),
            Caller::Human { .. } => return Err(Error::Denied("humans start tasks through an agent".into())),
            Caller::Admin { .. } => {
                let a = req.agent.clone().ok_or_else(|| Error::Invalid("`agent` is required".into()))?;
                let ctx = self.store.identity().start_context(&workflow, &a, None).await?;
                (ctx.workflow, ctx.agent.ok_or_else(|| Error::NotFound(format!("agent `{a}` not found")))?, None)
            }
            Caller::Instance { agent, snapshot, .. } => {
                if req.agent.as_ref().is_some_and(|a| a != agent) {
                    return Err(Error::Denied("an instance can only start tasks as its own agent".into()));
                }
                let (inst, ag) = &**snapshot;
                (self.store.identity().workflow(&workflow).await?, ag.clone(), Some(inst.clone()))
            }
        };
        let wf = wf.ok_or_else(|| Error::NotFound(format!("workflow `{workflow}` not found")))?;
        // Under a human's grant: the grant's authority, on their behalf, never past its end.
        let (mut delegation, expires_by): (remit_core::delegation::Delegation, _) = match &req.grant {
            None => (Default::default(), None),
            Some(_) if !matches!(caller, Caller::Instance { .. }) => {
                return Err(Error::Denied("a grant is used by an instance of the agent it was given to".into()));
            }
            Some(id) => {
                let g = self.grant_of(id).await?;
                match remit_core::grant::task_delegation(&g, &agent.name, &workflow, self.clock.now()) {
                    Ok((d, by)) => (d, Some(by)),
                    Err(e) => return Err(Error::Denied(e.to_string())),
                }
            }
        };
        // A root task may take less than it could (least privilege from the start); never more.
        delegation.authority =
            remit_core::delegation::narrow(&delegation.authority, &req.narrow).map_err(|w| match w {
                remit_core::delegation::Widen::Invalid(m) => Error::Invalid(m),
                w => Error::Denied(w.to_string()),
            })?;
        let start = StartTask {
            workflow,
            intent: req.intent,
            sensitivity: req.sensitivity.unwrap_or_default(),
            ttl_secs: req.ttl_secs,
            audience: req.audience,
            parent: None,
            delegation,
        };
        self.issue_task(caller, start, &wf, &agent, instance.as_ref(), Bounds { expires_by, bind: req.bind }).await
    }

    /// Starts a child of a live task for a worker agent: its authority is the parent's,
    /// narrowed ([`delegation::child`]); a widening is refused naming the attribute, and
    /// audited.
    async fn start_child(&self, caller: &Caller, req: StartTaskRequest) -> Result<Issued<Task>, Error> {
        let parent = match (caller, &req.parent) {
            (Caller::Task { id, snapshot, .. }, p) => {
                if p.as_ref().is_some_and(|p| p != id) {
                    return Err(Error::Denied("a task starts children of itself only".into()));
                }
                (**snapshot).clone()
            }
            (Caller::Human { .. }, _) => return Err(Error::Denied("humans start tasks through an agent".into())),
            (_, None) => return Err(Error::Invalid("`parent` is required".into())),
            (Caller::Instance { id: me, .. }, Some(p)) => {
                let snap = self.store.identity().task_snapshot(p).await?;
                match snap {
                    Some(s) if s.task.instance.as_ref() == Some(me) => s,
                    _ => return Err(Error::NotFound(format!("task `{p}` not found"))),
                }
            }
            (Caller::Admin { .. }, Some(p)) => self
                .store
                .identity()
                .task_snapshot(p)
                .await?
                .ok_or_else(|| Error::NotFound(format!("task `{p}` not found")))?,
        };
        let now = self.clock.now();
        if let remit_core::rules::Liveness::Inactive(why) =
            rules::task_liveness(&parent.task, &parent.workflow, &parent.agent, parent.instance.as_ref(), now)
        {
            return Err(Error::Conflict(format!("the parent task can no longer delegate: {why}")));
        }
        if req.workflow.as_ref().is_some_and(|w| *w != parent.task.workflow) {
            return Err(Error::Invalid("a child task belongs to its parent's workflow".into()));
        }
        // A bound parent's children are bound to the same key: whoever starts one (the task
        // itself, its instance, the admin) proves possession of it.
        if let Some(j) = &parent.task.delegation.jkt
            && req.bind.as_ref() != Some(j)
        {
            return Err(Error::Denied(
                "the parent task's token is DPoP-bound: start its children with a DPoP proof from the same key".into(),
            ));
        }
        // A child's token is for no audience its parent's was not.
        if let Some(a) = req.audience.iter().find(|a| !parent.task.audience.contains(a)) {
            let why = format!("delegation would widen `audience`: `{}` is not among the parent's", a);
            let denied = AuditEvent::new(now, caller.actor(), AuditAction::TaskStart)
                .workflow(&parent.task.workflow)
                .outcome(Outcome::Denied)
                .reason(why.clone())
                .detail([("parent", parent.task.id.as_str().into())]);
            self.store.audit().append(vec![denied]).await?;
            return Err(Error::Denied(why));
        }
        let child_agent = req.agent.clone().ok_or_else(|| Error::Invalid("`agent` (the worker) is required".into()))?;
        let ctx = self.store.identity().start_context(&parent.task.workflow, &child_agent, None).await?;
        let wf =
            ctx.workflow.ok_or_else(|| Error::NotFound(format!("workflow `{}` not found", parent.task.workflow)))?;
        let agent = ctx.agent.ok_or_else(|| Error::NotFound(format!("agent `{child_agent}` not found")))?;
        let narrow = ChildRequest { ttl_secs: req.ttl_secs, sensitivity: req.sensitivity, ..req.narrow };
        let child = match delegation::child(&parent.task, &wf, &wf.trust, &child_agent, &narrow, now) {
            Ok(c) => c,
            Err(w) => {
                let denied = AuditEvent::new(now, caller.actor(), AuditAction::TaskStart)
                    .workflow(&wf.name)
                    .agent(&child_agent)
                    .outcome(Outcome::Denied)
                    .reason(w.to_string())
                    .detail([("parent", parent.task.id.as_str().into())]);
                self.store.audit().append(vec![denied]).await?;
                return Err(match w {
                    remit_core::delegation::Widen::Invalid(m) => Error::Invalid(m),
                    w => Error::Denied(w.to_string()),
                });
            }
        };
        let remaining = u64::try_from((child.expires_by.0 - now.0).max(0) / 1000).unwrap_or(0);
        let ttl = req.ttl_secs.unwrap_or_else(|| self.limits.default_task_ttl_secs.min(remaining));
        let start = StartTask {
            workflow: wf.name.clone(),
            intent: req.intent,
            sensitivity: child.sensitivity,
            ttl_secs: Some(ttl.min(remaining).max(1)),
            audience: req.audience,
            parent: Some(parent.task.id.clone()),
            delegation: child.delegation,
        };
        let bounds = Bounds { expires_by: Some(child.expires_by), bind: req.bind };
        self.issue_task(caller, start, &wf, &agent, None, bounds).await
    }

    /// Decides a task start, mints its token and stores it with its audit record.
    async fn issue_task(
        &self,
        caller: &Caller,
        start: StartTask,
        wf: &remit_core::model::Workflow,
        agent: &remit_core::model::Agent,
        instance: Option<&Instance>,
        limits: Bounds,
    ) -> Result<Issued<Task>, Error> {
        let Bounds { expires_by, bind } = limits;
        let now = self.clock.now();
        // A task token is never for a registered tool's audience: a tool gets a credential of
        // its own kind by token exchange (decided, scoped, on record), not the task's token.
        // (Only a URI can be one: `remit`-style audiences cost no store read on this hot path.)
        for a in start.audience.iter().filter(|a| remit_core::tool::is_tool_audience(a)) {
            if self.store.tools().tool_by_audience(a).await?.is_some() {
                return Err(Error::Invalid(format!(
                    "audience `{}` is a registered tool's: obtain a credential for it by token exchange",
                    remit_core::ids::truncate_for_error(a)
                )));
            }
        }
        let mut start = start;
        start.delegation.jkt = bind.clone();
        if wf.trust.require_dpop && bind.is_none() {
            return Err(Error::Denied(format!(
                "workflow `{}` requires DPoP: start its tasks with a `DPoP` proof header (RFC 9449)",
                wf.name
            )));
        }
        let id = TaskId::from_random(self.random_id());
        let task =
            match rules::start_task(start, wf, agent, instance, &self.limits, id, caller.actor(), now).map(|mut t| {
                if let Some(by) = expires_by {
                    t.expires_at = t.expires_at.min(by);
                }
                t
            }) {
                Ok(t) => t,
                Err(e) => {
                    let err = Error::from(e.clone());
                    if matches!(err, Error::Denied(_)) {
                        let denied = AuditEvent::new(now, caller.actor(), AuditAction::TaskStart)
                            .workflow(&wf.name)
                            .agent(&agent.name)
                            .outcome(Outcome::Denied)
                            .reason(e.to_string());
                        self.store.audit().append(vec![denied]).await?;
                    }
                    return Err(err);
                }
            };
        let spiffe = SpiffeId::task(&self.trust_domain, &task.workflow, &task.id);
        let claims = self.task_claims(&task, &spiffe, now);
        let token = jwt::mint(self.keyring().signer(), &claims);
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::TaskStart)
            .workflow(&task.workflow)
            .task(&task.id)
            .agent(&task.agent)
            .detail([
                ("spiffe_id", spiffe.as_str().into()),
                ("jti", claims.jti.clone().into()),
                ("intent_hash", task.intent_hash.clone().into()),
                ("sensitivity", task.sensitivity.as_str().into()),
                ("expires_at_ms", task.expires_at.0.into()),
                ("jkt", bind.clone().into()),
            ]);
        let audit = match (&task.delegation.grant, &task.delegation.on_behalf_of) {
            (Some(g), Some(h)) => {
                audit.with_detail_field("grant", g.as_str().into()).with_detail_field("on_behalf_of", h.as_str().into())
            }
            _ => audit,
        };
        let audit = match &task.parent {
            None => audit,
            Some(p) => audit
                .with_detail_field("parent", p.as_str().into())
                .with_detail_field("delegation_depth", task.delegation.depth.into())
                .with_detail_field(
                    "delegation_chain",
                    task.delegation.chain.iter().map(|h| h.task.to_string()).collect::<Vec<_>>().into(),
                )
                .with_detail_field("authority", serde_json::to_value(&task.delegation.authority).unwrap_or_default()),
        };
        self.store.identity().create_task(task.clone(), audit).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Denied(m),
            other => other.into(),
        })?;
        self.metrics.tokens_issued.get_or_create(&Metrics::label("task")).inc();
        Ok(Issued { subject: task, spiffe_id: spiffe.to_string(), token })
    }

    /// A task's JWT-SVID claims, valid until the task's current expiry (bound to its DPoP key,
    /// if it has one).
    pub(crate) fn task_claims(&self, task: &Task, spiffe: &SpiffeId, now: remit_core::time::UnixMillis) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            sub: spiffe.to_string(),
            aud: task.audience.clone(),
            exp: task.expires_at.secs(),
            iat: now.secs(),
            jti: self.new_jti(),
            remit: RemitClaims {
                kind: SvidKind::Task,
                agent: task.agent.to_string(),
                instance: task.instance.as_ref().map(ToString::to_string),
                workflow: Some(task.workflow.to_string()),
                task: Some(task.id.to_string()),
                intent_hash: Some(task.intent_hash.clone()),
                sensitivity: Some(task.sensitivity.as_str().to_owned()),
                tool: None,
                on_behalf_of: task.delegation.on_behalf_of.as_ref().map(ToString::to_string),
                resource_prefix: None,
                trust_domain: None,
            },
            scope: None,
            act: None,
            cnf: task.delegation.jkt.clone().map(|jkt| remit_token::Confirmation { jkt }),
        }
    }

    /// Loads a task the caller may see: any for an admin, its own for an instance, itself for
    /// a task.
    pub async fn task(&self, caller: &Caller, id: &TaskId) -> Result<Task, Error> {
        let not_found = || Error::NotFound(format!("task `{id}` not found"));
        let t = self.store.identity().task(id).await?.ok_or_else(not_found)?;
        match caller {
            Caller::Admin { .. } => Ok(t),
            Caller::Human { .. } => {
                self.allow(caller, AdminAction::TaskRead, AdminTarget::Installation).await?;
                Ok(t)
            }
            Caller::Instance { id: me, .. } if t.instance.as_ref() == Some(me) => Ok(t),
            Caller::Task { id: me, .. } if *me == t.id => Ok(t),
            Caller::Instance { .. } | Caller::Task { .. } => Err(not_found()),
        }
    }

    pub async fn list_tasks(&self, caller: &Caller, mut filter: TaskFilter) -> Result<Vec<Task>, Error> {
        match caller {
            Caller::Human { .. } => self.allow(caller, AdminAction::TaskRead, AdminTarget::Installation).await?,
            _ => caller.require_not_task()?,
        }
        if let Caller::Instance { id, .. } = caller {
            filter.instance = Some(id.clone());
        }
        Ok(self.store.identity().list_tasks(filter).await?)
    }

    /// Completes a task (admin, the instance that started it, or the task itself); its subtree
    /// ends with it.
    pub async fn complete_task(&self, caller: &Caller, id: &TaskId) -> Result<KillReport, Error> {
        if let Caller::Human { .. } = caller {
            self.allow(caller, AdminAction::TaskRevoke, AdminTarget::Installation).await?;
        }
        let t = self.task(caller, id).await?;
        let now = self.clock.now();
        rules::end_task(&t, TaskState::Completed, now)?;
        let report = self.store.identity().end_task(id, TaskState::Completed, now, &caller.actor(), None).await?;
        if report.leases_pending > 0 {
            self.lease_wake.notify_one();
        }
        Ok(report)
    }

    /// Kill switch: revokes a task and everything issued under it.
    pub async fn revoke_task(&self, caller: &Caller, id: &TaskId, reason: &str) -> Result<KillReport, Error> {
        self.allow(caller, AdminAction::TaskRevoke, AdminTarget::Installation).await?;
        let t = self.task(caller, id).await?;
        rules::end_task(&t, TaskState::Revoked, self.clock.now())?;
        self.kill(caller, KillTarget::Task(id.clone()), reason).await
    }
}
