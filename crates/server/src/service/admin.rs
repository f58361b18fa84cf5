//! Administration: workflows, agents, join tokens, the kill switches and key rotation.
//! Every operation here requires the admin credential.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{AgentName, HumanId, JoinTokenId, WorkflowName};
use remit_core::model::{Agent, AgentState, JoinToken, Kill, KillReport, KillTarget, Workflow, WorkflowState};
use remit_core::rules::{self, NewWorkflow};
use remit_policy::admin::AdminAction;
use remit_store::{KeyPurpose, Owned};

use super::Caller;
use crate::app::{App, new_stored_key};
use crate::error::Error;

/// A created join token: its public record and the one-time secret string.
pub struct IssuedJoinToken {
    pub record: JoinToken,
    /// `<id>.<secret>`; shown once, never stored.
    pub token: String,
}

pub(crate) fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() {
        return Err(Error::Invalid("a reason is required".into()));
    }
    if reason.len() > 1024 || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::Invalid("reason must be at most 1024 bytes of printable text".into()));
    }
    Ok(())
}

impl App {
    pub async fn create_workflow(&self, caller: &Caller, req: NewWorkflow) -> Result<Workflow, Error> {
        self.allow(caller, AdminAction::WorkflowCreate, remit_policy::admin::AdminTarget::Installation).await?;
        let mut wf = rules::new_workflow(req, &self.limits, self.clock.now())?;
        // The owner's human record: this id if Remit does not know them yet (see the store).
        wf.owner_id = Some(HumanId::from_random(self.random.bytes16()));
        let audit =
            AuditEvent::new(wf.created_at, caller.actor(), AuditAction::WorkflowCreate).workflow(&wf.name).detail([
                ("owner", wf.owner.clone().into()),
                ("ceiling", wf.ceiling.as_str().into()),
                ("max_task_ttl_secs", wf.max_task_ttl_secs.into()),
            ]);
        self.store.identity().create_workflow(wf.clone(), audit).await?;
        self.workflow(caller, &wf.name).await
    }

    pub async fn workflow(&self, caller: &Caller, name: &WorkflowName) -> Result<Workflow, Error> {
        self.allow_on_workflow(caller, AdminAction::WorkflowRead, name).await?;
        self.store
            .identity()
            .workflow(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("workflow `{name}` not found")))
    }

    pub async fn list_workflows(&self, caller: &Caller) -> Result<Vec<Workflow>, Error> {
        self.allow(caller, AdminAction::WorkflowRead, remit_policy::admin::AdminTarget::Installation).await?;
        Ok(self.store.identity().list_workflows().await?)
    }

    /// Kill switch: suspends the workflow and revokes all its live tasks.
    pub async fn suspend_workflow(
        &self,
        caller: &Caller,
        name: &WorkflowName,
        reason: &str,
    ) -> Result<KillReport, Error> {
        self.kill(caller, KillTarget::Workflow(name.clone()), reason).await
    }

    pub async fn resume_workflow(&self, caller: &Caller, name: &WorkflowName, reason: &str) -> Result<Workflow, Error> {
        self.allow_on_workflow(caller, AdminAction::WorkflowResume, name).await?;
        check_reason(reason)?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::WorkflowResume)
            .workflow(name)
            .reason(reason);
        self.store.identity().set_workflow_state(name, WorkflowState::Suspended, WorkflowState::Active, audit).await?;
        self.workflow(caller, name).await
    }

    /// Replaces a workflow's allowed tools. The next decision of each of its tasks, on every
    /// replica, is checked against the new list (narrowing it takes effect at once).
    pub async fn set_workflow_tools(
        &self,
        caller: &Caller,
        name: &WorkflowName,
        tools: Vec<String>,
        reason: &str,
    ) -> Result<Workflow, Error> {
        self.allow_on_workflow(caller, AdminAction::WorkflowUpdate, name).await?;
        check_reason(reason)?;
        rules::check_tools(&tools, &self.limits)?;
        let before = self.workflow(caller, name).await?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::WorkflowUpdate)
            .workflow(name)
            .reason(reason)
            .detail([("allowed_tools", tools.clone().into()), ("was", before.allowed_tools.into())]);
        self.store.identity().set_workflow_tools(name, tools, audit).await?;
        self.workflow(caller, name).await
    }

    /// Replaces a workflow's transitive-trust rules (which agent may delegate to which); the
    /// next child task started in it, on every replica, is checked against them.
    pub async fn set_workflow_trust(
        &self,
        caller: &Caller,
        name: &WorkflowName,
        trust: remit_core::delegation::TrustRules,
        reason: &str,
    ) -> Result<Workflow, Error> {
        self.allow_on_workflow(caller, AdminAction::WorkflowUpdate, name).await?;
        check_reason(reason)?;
        trust.check()?;
        let before = self.workflow(caller, name).await?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::WorkflowUpdate)
            .workflow(name)
            .reason(reason)
            .detail([
                ("trust", serde_json::to_value(&trust).unwrap_or_default()),
                ("was", serde_json::to_value(&before.trust).unwrap_or_default()),
            ]);
        self.store.identity().set_workflow_trust(name, trust, audit).await?;
        self.workflow(caller, name).await
    }

    pub async fn create_agent(
        &self,
        caller: &Caller,
        name: AgentName,
        owner: String,
        workflows: Vec<WorkflowName>,
    ) -> Result<Agent, Error> {
        self.allow(caller, AdminAction::AgentCreate, remit_policy::admin::AdminTarget::Installation).await?;
        rules::check_owner(&owner, &self.limits)?;
        let now = self.clock.now();
        let agent = Agent {
            name,
            owner_id: Some(HumanId::from_random(self.random.bytes16())),
            owner: rules::human_identity(&owner),
            orphaned_at: None,
            workflows,
            state: AgentState::Enabled,
            kill_generation: 0,
            created_at: now,
            updated_at: now,
        };
        let wfs: Vec<String> = agent.workflows.iter().map(ToString::to_string).collect();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::AgentCreate)
            .agent(&agent.name)
            .detail([("owner", agent.owner.clone().into()), ("workflows", wfs.into())]);
        self.store.identity().create_agent(agent.clone(), audit).await?;
        self.agent(caller, &agent.name).await
    }

    pub async fn agent(&self, caller: &Caller, name: &AgentName) -> Result<Agent, Error> {
        self.allow_on_agent(caller, AdminAction::AgentRead, name).await?;
        self.store.identity().agent(name).await?.ok_or_else(|| Error::NotFound(format!("agent `{name}` not found")))
    }

    pub async fn list_agents(&self, caller: &Caller) -> Result<Vec<Agent>, Error> {
        self.allow(caller, AdminAction::AgentRead, remit_policy::admin::AdminTarget::Installation).await?;
        Ok(self.store.identity().list_agents().await?)
    }

    /// Kill switch: disables the agent, revoking its instances and their tasks.
    pub async fn disable_agent(&self, caller: &Caller, name: &AgentName, reason: &str) -> Result<KillReport, Error> {
        self.kill(caller, KillTarget::Agent(name.clone()), reason).await
    }

    pub async fn enable_agent(&self, caller: &Caller, name: &AgentName, reason: &str) -> Result<Agent, Error> {
        self.allow_on_agent(caller, AdminAction::AgentEnable, name).await?;
        check_reason(reason)?;
        let audit =
            AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AgentEnable).agent(name).reason(reason);
        self.store.identity().set_agent_state(name, AgentState::Disabled, AgentState::Enabled, audit).await?;
        self.agent(caller, name).await
    }

    pub async fn create_join_token(
        &self,
        caller: &Caller,
        agent: &AgentName,
        ttl_secs: Option<u64>,
    ) -> Result<IssuedJoinToken, Error> {
        self.allow_on_agent(caller, AdminAction::AgentJoinToken, agent).await?;
        let max = self.cfg.limits.max_join_token_ttl.as_secs();
        let ttl = ttl_secs.unwrap_or(600);
        if ttl == 0 || ttl > max {
            return Err(Error::Invalid(format!("join token ttl must be between 1 and {max} seconds")));
        }
        let now = self.clock.now();
        let secret = remit_token::b64e(&self.random.bytes32());
        let record = JoinToken {
            id: JoinTokenId::from_random(self.random_id()),
            agent: agent.clone(),
            secret_hash: hex(&remit_token::sha256(secret.as_bytes())),
            created_at: now,
            expires_at: now.plus_secs(ttl),
            used_at: None,
            used_by: None,
            // The store stamps the agent's kill generation inside the transaction.
            agent_generation: 0,
            revoked_at: None,
        };
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::JoinTokenCreate)
            .agent(agent)
            .detail([("join_token", record.id.as_str().into()), ("ttl_secs", ttl.into())]);
        self.store.identity().create_join_token(record.clone(), audit).await?;
        let token = format!("{}.{secret}", record.id);
        Ok(IssuedJoinToken { record, token })
    }

    /// Pulls a kill switch on any target; the store applies the cascade atomically.
    pub async fn kill(&self, caller: &Caller, target: KillTarget, reason: &str) -> Result<KillReport, Error> {
        match &target {
            KillTarget::Workflow(w) => self.allow_on_workflow(caller, AdminAction::WorkflowSuspend, w).await?,
            KillTarget::Agent(a) => self.allow_on_agent(caller, AdminAction::AgentDisable, a).await?,
            KillTarget::Instance(_) => {
                self.allow(caller, AdminAction::InstanceRevoke, remit_policy::admin::AdminTarget::Installation).await?
            }
            KillTarget::Task(_) => {
                self.allow(caller, AdminAction::TaskRevoke, remit_policy::admin::AdminTarget::Installation).await?
            }
        }
        check_reason(reason)?;
        self.kill_as(caller.actor(), target, reason).await
    }

    /// Pulls a kill switch as `actor`, with no caller check (the callers check, or are Remit's
    /// own governance).
    pub(crate) async fn kill_as(&self, actor: String, target: KillTarget, reason: &str) -> Result<KillReport, Error> {
        let kind = match &target {
            KillTarget::Task(_) => "task",
            KillTarget::Instance(_) => "instance",
            KillTarget::Agent(_) => "agent",
            KillTarget::Workflow(_) => "workflow",
        };
        let report =
            self.store.identity().kill(Kill { target, actor, reason: reason.to_owned(), at: self.clock.now() }).await?;
        self.metrics.kills.get_or_create(&crate::metrics::Metrics::label(kind)).inc();
        if report.leases_pending > 0 {
            self.lease_wake.notify_one();
        }
        Ok(report)
    }

    /// Rotates the JWT signing key. Tokens signed by the old key stay valid until they
    /// expire: the old key is published until the longest token it could have signed is dead.
    pub async fn rotate_keys(&self, caller: &Caller) -> Result<(String, u64), Error> {
        self.allow(caller, AdminAction::KeysRotate, remit_policy::admin::AdminTarget::Installation).await?;
        let now = self.clock.now();
        let key = new_stored_key(self.kek(), KeyPurpose::Jwt, now).map_err(Error::Internal)?;
        let kid = key.kid.clone();
        let longest = self.cfg.limits.hard_max_task_ttl.max(self.cfg.limits.instance_ttl) + self.cfg.limits.clock_skew;
        let retire_after = now.plus_secs(longest.as_secs());
        let old = self.keyring().signer().kid().to_owned();
        let old_row = self.retiring(&old, KeyPurpose::Jwt, retire_after).await?;
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::KeyRotate)
            .detail([("new_kid", kid.clone().into()), ("old_kid", old.into())]);
        let seq = self.store.keys().rotate(key, old_row, audit).await?;
        self.reload_keys().await?;
        Ok((kid, seq))
    }
}

impl App {
    /// The active key `kid` of `purpose`, re-sealed to stay trusted until `retire_after`
    /// (what a rotation hands the store); `Conflict` if it is no longer the active one.
    pub(crate) async fn retiring(
        &self,
        kid: &str,
        purpose: KeyPurpose,
        retire_after: remit_core::time::UnixMillis,
    ) -> Result<remit_store::RetiringKey, Error> {
        let mut row = self
            .store
            .keys()
            .list()
            .await?
            .into_iter()
            .find(|k| k.kid == kid && k.purpose == purpose && k.retire_after.is_none())
            .ok_or_else(|| Error::Conflict(format!("the active {} key changed meanwhile; retry", purpose.as_str())))?;
        row.retire_after = Some(retire_after);
        Ok(remit_store::RetiringKey { kid: kid.to_owned(), retire_after, mac: crate::seal::key_mac(self.kek(), &row) })
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

impl App {
    /// Gives a workflow or agent a new owner (a human by email; unverified until they sign in
    /// or are provisioned), clearing its orphan mark.
    pub async fn set_owner(&self, caller: &Caller, target: Owned, owner: &str, reason: &str) -> Result<(), Error> {
        let action = match &target {
            Owned::Workflow(w) => {
                self.allow_on_workflow(caller, AdminAction::WorkflowUpdate, w).await?;
                AuditAction::WorkflowUpdate
            }
            Owned::Agent(a) => {
                self.allow_on_agent(caller, AdminAction::AgentUpdate, a).await?;
                AuditAction::AgentUpdate
            }
            Owned::Tool(_) => {
                self.allow(caller, AdminAction::ToolCreate, remit_policy::admin::AdminTarget::Installation).await?;
                AuditAction::ToolCreate
            }
        };
        check_reason(reason)?;
        rules::check_owner(owner, &self.limits)?;
        let owner = rules::human_identity(owner);
        let now = self.clock.now();
        let mut audit =
            AuditEvent::new(now, caller.actor(), action).reason(reason).detail([("owner", owner.clone().into())]);
        audit = match &target {
            Owned::Workflow(w) => audit.workflow(w),
            Owned::Agent(a) => audit.agent(a),
            Owned::Tool(t) => audit.with_detail_field("tool", t.as_str().into()),
        };
        let proposed = HumanId::from_random(self.random.bytes16());
        Ok(self.store.identity().set_owner(target, &owner, proposed, audit).await?)
    }

    /// Workflows and agents whose owner was deactivated and nobody has taken over.
    pub async fn orphans(&self, caller: &Caller) -> Result<Orphaned, Error> {
        self.allow(caller, AdminAction::WorkflowRead, remit_policy::admin::AdminTarget::Installation).await?;
        self.allow(caller, AdminAction::AgentRead, remit_policy::admin::AdminTarget::Installation).await?;
        self.allow(caller, AdminAction::ToolRead, remit_policy::admin::AdminTarget::Installation).await?;
        let workflows =
            self.store.identity().list_workflows().await?.into_iter().filter(|w| w.orphaned_at.is_some()).collect();
        let agents =
            self.store.identity().list_agents().await?.into_iter().filter(|a| a.orphaned_at.is_some()).collect();
        let tools = self.store.tools().list_tools().await?.into_iter().filter(|t| t.orphaned_at.is_some()).collect();
        Ok(Orphaned { workflows, agents, tools })
    }
}

/// What a deactivated human left without an owner.
pub struct Orphaned {
    pub workflows: Vec<Workflow>,
    pub agents: Vec<Agent>,
    pub tools: Vec<remit_core::tool::Tool>,
}

impl App {}
