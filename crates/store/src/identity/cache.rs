//! The identity area through the liveness cache: task snapshots, instances and agents are
//! served from memory (see `crate::cache`); every write goes to the backend, whose commit
//! hook invalidates what it stated it changed. A kill or an ended task that fails
//! ambiguously (it may have committed) empties the cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{AgentName, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{
    Agent, AgentState, Instance, JoinToken, Kill, KillReport, Task, TaskState, Workflow, WorkflowState,
};
use remit_core::time::UnixMillis;

use super::{IdentityStore, StartContext, TaskFilter, TaskSnapshot};
use crate::cache::State;
use crate::{Result, Store};

pub(crate) struct CachingIdentity {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) state: Arc<State>,
}

impl CachingIdentity {
    fn backend(&self) -> &dyn IdentityStore {
        self.inner.identity()
    }
}

#[async_trait]
impl IdentityStore for CachingIdentity {
    async fn create_workflow(&self, wf: Workflow, audit: AuditEvent) -> Result<()> {
        self.backend().create_workflow(wf, audit).await
    }
    async fn workflow(&self, name: &WorkflowName) -> Result<Option<Workflow>> {
        self.backend().workflow(name).await
    }
    async fn list_workflows(&self) -> Result<Vec<Workflow>> {
        self.backend().list_workflows().await
    }
    async fn set_workflow_state(
        &self,
        name: &WorkflowName,
        from: WorkflowState,
        to: WorkflowState,
        audit: AuditEvent,
    ) -> Result<()> {
        self.backend().set_workflow_state(name, from, to, audit).await
    }
    async fn set_workflow_tools(&self, name: &WorkflowName, tools: Vec<String>, audit: AuditEvent) -> Result<()> {
        self.backend().set_workflow_tools(name, tools, audit).await
    }
    async fn set_workflow_trust(
        &self,
        name: &WorkflowName,
        trust: remit_core::delegation::TrustRules,
        audit: AuditEvent,
    ) -> Result<()> {
        self.backend().set_workflow_trust(name, trust, audit).await
    }
    async fn set_owner(
        &self,
        target: super::Owned,
        owner: &str,
        proposed: remit_core::ids::HumanId,
        audit: AuditEvent,
    ) -> Result<()> {
        self.backend().set_owner(target, owner, proposed, audit).await
    }
    async fn create_agent(&self, agent: Agent, audit: AuditEvent) -> Result<()> {
        self.backend().create_agent(agent, audit).await
    }
    async fn agent(&self, name: &AgentName) -> Result<Option<Agent>> {
        if let Some(a) = self.state.get(|m| &m.agents, name) {
            return Ok(Some(a));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let a = self.backend().agent(name).await?;
        if let Some(a) = &a {
            self.state.fill(generation, |m| &mut m.agents, name.clone(), a.clone());
        }
        Ok(a)
    }
    async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.backend().list_agents().await
    }
    async fn set_agent_state(
        &self,
        name: &AgentName,
        from: AgentState,
        to: AgentState,
        audit: AuditEvent,
    ) -> Result<()> {
        self.backend().set_agent_state(name, from, to, audit).await
    }
    async fn create_join_token(&self, jt: JoinToken, audit: AuditEvent) -> Result<()> {
        self.backend().create_join_token(jt, audit).await
    }
    async fn join_token(&self, id: &JoinTokenId) -> Result<Option<JoinToken>> {
        self.backend().join_token(id).await
    }
    async fn redeem_join_token(&self, id: &JoinTokenId, instance: Instance, audit: AuditEvent) -> Result<()> {
        self.backend().redeem_join_token(id, instance, audit).await
    }
    async fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        if let Some(i) = self.state.get(|m| &m.instances, id) {
            return Ok(Some(i));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let i = self.backend().instance(id).await?;
        if let Some(i) = &i {
            self.state.fill(generation, |m| &mut m.instances, id.clone(), i.clone());
        }
        Ok(i)
    }
    async fn renew_instance(&self, id: &InstanceId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.backend().renew_instance(id, expires_at, audit).await
    }
    async fn renew_task(&self, id: &TaskId, expires_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.backend().renew_task(id, expires_at, audit).await
    }
    async fn start_context(
        &self,
        workflow: &WorkflowName,
        agent: &AgentName,
        instance: Option<&InstanceId>,
    ) -> Result<StartContext> {
        self.backend().start_context(workflow, agent, instance).await
    }
    async fn create_task(&self, task: Task, audit: AuditEvent) -> Result<()> {
        self.backend().create_task(task, audit).await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        self.backend().task(id).await
    }
    async fn task_snapshot(&self, id: &TaskId) -> Result<Option<TaskSnapshot>> {
        if let Some(s) = self.state.get(|m| &m.tasks, id) {
            return Ok(Some((*s).clone()));
        }
        let generation = self.state.generation.load(Ordering::SeqCst);
        let s = self.backend().task_snapshot(id).await?;
        if let Some(s) = &s {
            self.state.fill(generation, |m| &mut m.tasks, id.clone(), Arc::new(s.clone()));
        }
        Ok(s)
    }
    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        self.backend().list_tasks(filter).await
    }
    async fn end_task(
        &self,
        id: &TaskId,
        to: TaskState,
        at: UnixMillis,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<KillReport> {
        let r = self.backend().end_task(id, to, at, actor, reason).await;
        if r.is_err() {
            self.state.clear();
        }
        r
    }
    async fn kill(&self, kill: Kill) -> Result<KillReport> {
        let r = self.backend().kill(kill).await;
        if r.is_err() {
            self.state.clear();
        }
        r
    }
    async fn record_tool_use(&self, task: &TaskId, tool: &str, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.backend().record_tool_use(task, tool, at, audit).await
    }
    async fn record_call(&self, task: &TaskId, tool: Option<&str>, at: UnixMillis, audit: AuditEvent) -> Result<bool> {
        self.backend().record_call(task, tool, at, audit).await
    }
    async fn tools_used(&self, task: &TaskId) -> Result<Vec<String>> {
        self.backend().tools_used(task).await
    }
}
