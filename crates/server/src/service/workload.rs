//! Registration entries: which agent an attested workload is. Creating one is as powerful as
//! issuing that agent a join token (every matching process becomes its instance), so it
//! needs `agent.join_token` on the agent; reading needs `agent.read`.

use std::collections::BTreeSet;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{AgentName, EntryId, WorkflowName};
use remit_core::workload::{Entry, Selector};
use remit_policy::admin::{AdminAction, AdminTarget};

use super::Caller;
use crate::app::App;
use crate::error::Error;

/// A new entry, parsed from the wire.
pub struct NewEntry {
    pub selectors: BTreeSet<Selector>,
    pub agent: AgentName,
    pub workflow: Option<WorkflowName>,
    pub hint: Option<String>,
}

impl App {
    pub async fn create_entry(&self, caller: &Caller, req: NewEntry) -> Result<Entry, Error> {
        self.allow_on_agent(caller, AdminAction::AgentJoinToken, &req.agent).await?;
        Entry::validate(&req.selectors, req.hint.as_deref())?;
        let agent = self
            .store
            .identity()
            .agent(&req.agent)
            .await?
            .ok_or_else(|| Error::NotFound(format!("agent `{}` not found", req.agent)))?;
        if let Some(w) = &req.workflow
            && !agent.workflows.contains(w)
        {
            return Err(Error::Invalid(format!("workflow: agent `{}` is not in workflow `{w}`", agent.name)));
        }
        // Entries overlap when one's selectors are a subset of the other's: the more specific
        // one takes the other's processes. Taking another agent's processes needs the right
        // to register that agent's workloads too.
        for other in self.store.workload().entries().await? {
            let overlaps = other.selectors.is_subset(&req.selectors) || req.selectors.is_subset(&other.selectors);
            if overlaps && other.agent != req.agent {
                self.allow_on_agent(caller, AdminAction::AgentJoinToken, &other.agent).await.map_err(|_| {
                    Error::Denied(format!(
                        "these selectors overlap entry `{}` of agent `{}`, which you may not register workloads for",
                        other.id, other.agent
                    ))
                })?;
            }
        }
        let now = self.clock.now();
        let e = Entry {
            id: EntryId::from_random(self.random_id()),
            selectors: req.selectors,
            agent: req.agent,
            workflow: req.workflow,
            hint: req.hint,
            created_at: now,
            created_by: caller.actor(),
        };
        let selectors: Vec<String> = e.selectors.iter().map(|s| s.to_string()).collect();
        let mut audit = AuditEvent::new(now, caller.actor(), AuditAction::EntryCreate)
            .agent(&e.agent)
            .detail([("entry", e.id.as_str().into()), ("selectors", selectors.into())]);
        if let Some(w) = &e.workflow {
            audit = audit.workflow(w);
        }
        self.store.workload().create_entry(e.clone(), audit).await?;
        Ok(e)
    }

    pub async fn list_entries(&self, caller: &Caller) -> Result<Vec<Entry>, Error> {
        self.allow(caller, AdminAction::AgentRead, AdminTarget::Installation).await?;
        Ok(self.store.workload().entries().await?)
    }

    /// Deletes an entry; instances already attested through it live on until their process
    /// exits or they are killed.
    pub async fn delete_entry(&self, caller: &Caller, id: &EntryId) -> Result<Entry, Error> {
        let e = self
            .store
            .workload()
            .entry(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("registration entry `{id}` not found")))?;
        self.allow_on_agent(caller, AdminAction::AgentJoinToken, &e.agent).await?;
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::EntryDelete)
            .agent(&e.agent)
            .detail([("entry", id.as_str().into())]);
        self.store.workload().delete_entry(id, audit).await?;
        Ok(e)
    }
}
