//! Agent instances and tasks: joining with a join token, renewing an instance identity,
//! starting, completing, revoking and reading tasks.

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
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
    pub workflow: WorkflowName,
    /// Required for admin callers; an instance may only start tasks as its own agent.
    pub agent: Option<AgentName>,
    pub intent: String,
    pub sensitivity: Sensitivity,
    pub ttl_secs: Option<u64>,
    pub audience: Vec<String>,
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

    fn mint_instance_token(&self, inst: &Instance, spiffe: &SpiffeId) -> String {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: spiffe.to_string(),
            aud: vec![self.cfg.audience.clone()],
            exp: inst.expires_at.secs(),
            iat: self.clock.now().secs(),
            jti: self.new_jti(),
            remit: RemitClaims {
                kind: SvidKind::Instance,
                agent: inst.agent.to_string(),
                instance: Some(inst.id.to_string()),
                workflow: None,
                task: None,
                intent_hash: None,
                sensitivity: None,
                tool: None,
                on_behalf_of: None,
            },
            scope: None,
            act: None,
            cnf: None,
        };
        self.metrics.tokens_issued.get_or_create(&Metrics::label("instance")).inc();
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
        let (wf, agent, instance) = match caller {
            Caller::Task { .. } => {
                return Err(Error::Denied("a task cannot start tasks with its own token".into()));
            }
            Caller::Human { .. } => return Err(Error::Denied("humans start tasks through an agent".into())),
            Caller::Admin { .. } => {
                let a = req.agent.clone().ok_or_else(|| Error::Invalid("`agent` is required".into()))?;
                let ctx = self.store.identity().start_context(&req.workflow, &a, None).await?;
                (ctx.workflow, ctx.agent.ok_or_else(|| Error::NotFound(format!("agent `{a}` not found")))?, None)
            }
            Caller::Instance { agent, snapshot, .. } => {
                if req.agent.as_ref().is_some_and(|a| a != agent) {
                    return Err(Error::Denied("an instance can only start tasks as its own agent".into()));
                }
                let (inst, ag) = &**snapshot;
                (self.store.identity().workflow(&req.workflow).await?, ag.clone(), Some(inst.clone()))
            }
        };
        let wf = wf.ok_or_else(|| Error::NotFound(format!("workflow `{}` not found", req.workflow)))?;
        let now = self.clock.now();
        let start = StartTask {
            workflow: req.workflow,
            intent: req.intent,
            sensitivity: req.sensitivity,
            ttl_secs: req.ttl_secs,
            audience: req.audience,
            parent: None,
        };
        let id = TaskId::from_random(self.random_id());
        let task = match rules::start_task(start, &wf, &agent, instance.as_ref(), &self.limits, id, caller.actor(), now)
        {
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
        let claims = Claims {
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
                on_behalf_of: None,
            },
            scope: None,
            act: None,
            cnf: None,
        };
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
            ]);
        self.store.identity().create_task(task.clone(), audit).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Denied(m),
            other => other.into(),
        })?;
        self.metrics.tokens_issued.get_or_create(&Metrics::label("task")).inc();
        Ok(Issued { subject: task, spiffe_id: spiffe.to_string(), token })
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
        Ok(self.store.identity().end_task(id, TaskState::Completed, now, &caller.actor(), None).await?)
    }

    /// Kill switch: revokes a task and everything issued under it.
    pub async fn revoke_task(&self, caller: &Caller, id: &TaskId, reason: &str) -> Result<KillReport, Error> {
        self.allow(caller, AdminAction::TaskRevoke, AdminTarget::Installation).await?;
        let t = self.task(caller, id).await?;
        rules::end_task(&t, TaskState::Revoked, self.clock.now())?;
        self.kill(caller, KillTarget::Task(id.clone()), reason).await
    }
}
