//! Who may use Remit's own API: one check, [`App::allow`], before every operation.
//!
//! - A signed-in human: decided by Remit's own Cedar policy ([`remit_policy::admin`]: the
//!   built-in role and ownership rules, narrowed by the organisation's `forbid` policies from
//!   `admin_policies`). Every refusal is audited.
//! - The **break-glass** credential from `remit init`: allowed, outside the policy (so a bad
//!   rule can never lock everyone out), and every use is visible: its records' actor is
//!   `break-glass`, so everything it changes or decides is flagged; its first use in each
//!   minute (reads included) writes a `breakglass.use` record and a log warning naming the
//!   route and how often it was used in the minute before; `remit status` counts every use.
//! - Agent instances and tasks: never (they have their own operations).

use std::sync::atomic::{AtomicU64, Ordering};

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::ids::{AgentName, WorkflowName};
use remit_policy::admin::{AdminAction, AdminPolicy, AdminPrincipal, AdminTarget};

use crate::app::App;
use crate::error::Error;
use crate::service::Caller;

/// The compiled admin policy and the break-glass counters.
pub struct AdminAuthz {
    policy: AdminPolicy,
    pub(crate) break_glass_uses: AtomicU64,
    pub(crate) break_glass_last: AtomicU64,
    /// The current minute's first use (unix ms) and the uses in it.
    window: std::sync::Mutex<(i64, u64)>,
}

impl AdminAuthz {
    /// Compiles the built-in rules with the organisation's forbids (`(file, text)`).
    pub fn new(org: &[(String, String)]) -> Result<Self, String> {
        let policy = AdminPolicy::compile(org).map_err(|e| format!("admin policies: {e}"))?;
        Ok(AdminAuthz {
            policy,
            break_glass_uses: AtomicU64::new(0),
            break_glass_last: AtomicU64::new(0),
            window: std::sync::Mutex::new((i64::MIN, 0)),
        })
    }
}

/// Reads the organisation's admin policies: a `.cedar` file, or every `*.cedar` in a directory.
pub fn read_org_policies(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), t))
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();
        files.iter().map(|p| read(p)).collect()
    } else {
        Ok(vec![read(path)?])
    }
}

impl App {
    /// Allows `caller` to do `action` on `target`, or says why not (and records the refusal).
    pub async fn allow(&self, caller: &Caller, action: AdminAction, target: AdminTarget) -> Result<(), Error> {
        let Caller::Human { human, session } = caller else {
            return match caller {
                Caller::Admin { .. } => Ok(()),
                _ => Err(Error::admin_only()),
            };
        };
        let who = AdminPrincipal {
            id: human.id.to_string(),
            email: human.email.clone(),
            roles: human.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            groups: human.groups.clone(),
        };
        let d = self
            .authz
            .policy
            .decide(&who, action, &target)
            .map_err(|e| Error::Internal(format!("admin policy: {e}")))?;
        if d.allowed {
            return Ok(());
        }
        let on = match &target {
            AdminTarget::Installation => String::new(),
            AdminTarget::Workflow { name, .. } => format!(" on workflow `{name}`"),
            AdminTarget::Agent { name, .. } => format!(" on agent `{name}`"),
            AdminTarget::Approval { id, .. } => format!(" on approval `{id}`"),
        };
        let (workflow, agent) = match &target {
            AdminTarget::Workflow { name, .. } => (Some(name.as_str()), None),
            AdminTarget::Agent { name, .. } => (None, Some(name.as_str())),
            _ => (None, None),
        };
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AdminDeny)
            .workflow_opt(workflow)
            .agent_opt(agent)
            .outcome(Outcome::Denied)
            .reason(format!("`{}` is not allowed{on}", action.as_str()))
            .detail([
                ("action", action.as_str().into()),
                ("human", human.id.to_string().into()),
                ("session", session.to_string().into()),
                ("policies", d.reasons.clone().into()),
            ]);
        if let Err(e) = self.store.audit().append(vec![audit]).await {
            tracing::warn!(error = %e, "could not record a refused admin call");
        }
        let by = if d.reasons.is_empty() { String::new() } else { format!(" (forbidden by {})", d.reasons.join(", ")) };
        Err(Error::Denied(format!("{} may not `{}`{on}{by}", human.email, action.as_str())))
    }

    /// [`App::allow`] on a workflow, with its owner for the ownership rules.
    pub async fn allow_on_workflow(
        &self,
        caller: &Caller,
        action: AdminAction,
        name: &WorkflowName,
    ) -> Result<(), Error> {
        let owners = match caller {
            Caller::Human { .. } => {
                self.store.identity().workflow(name).await?.and_then(|w| w.owner_id).map(|h| vec![h.to_string()])
            }
            _ => None,
        };
        self.allow(caller, action, AdminTarget::Workflow { name: name.to_string(), owners: owners.unwrap_or_default() })
            .await
    }

    /// [`App::allow`] on an agent, with its owner.
    pub async fn allow_on_agent(&self, caller: &Caller, action: AdminAction, name: &AgentName) -> Result<(), Error> {
        let owners = match caller {
            Caller::Human { .. } => {
                self.store.identity().agent(name).await?.and_then(|a| a.owner_id).map(|h| vec![h.to_string()])
            }
            _ => None,
        };
        self.allow(caller, action, AdminTarget::Agent { name: name.to_string(), owners: owners.unwrap_or_default() })
            .await
    }

    /// [`App::allow`] on an approval request, with its task's workflow's owner.
    pub async fn allow_on_approval(
        &self,
        caller: &Caller,
        action: AdminAction,
        id: &remit_core::ids::ApprovalId,
    ) -> Result<(), Error> {
        match caller {
            Caller::Human { .. } => {}
            Caller::Admin { .. } => return Ok(()),
            // An agent is held to the approval's own visibility rules (a task reads its own).
            _ => return Ok(()),
        }
        let mut owners = vec![];
        if let Some(a) = self.store.approvals().get(id).await?
            && let Some(wf) = &a.workflow
            && let Some(w) = self.store.identity().workflow(wf).await?
            && let Some(o) = w.owner_id
        {
            owners.push(o.to_string());
        }
        self.allow(caller, action, AdminTarget::Approval { id: id.to_string(), owners }).await
    }

    fn note_break_glass(&self) {
        self.authz.break_glass_uses.fetch_add(1, Ordering::Relaxed);
        self.authz.break_glass_last.store(u64::try_from(self.clock.now().0).unwrap_or(0), Ordering::Relaxed);
    }

    /// Notes one request made with the break-glass credential: counted (for `remit status`),
    /// and its first use of each minute is recorded, with the count of the minute before, and
    /// logged as a warning (once a minute, so a busy caller cannot flood the log).
    pub async fn break_glass_used(&self, caller: &Caller, method: &str, route: &str) {
        self.note_break_glass();
        let now = self.clock.now().0;
        let previous = {
            let Ok(mut w) = self.authz.window.lock() else { return };
            if now.saturating_sub(w.0) < 60_000 {
                w.1 += 1;
                return;
            }
            let previous = w.1;
            *w = (now, 1);
            previous
        };
        tracing::warn!(method, route, actor = %caller.actor(), uses_in_previous_minute = previous, "break-glass credential used");
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::BreakGlassUse).detail([
            ("method", method.into()),
            ("route", route.into()),
            ("uses_in_previous_minute", previous.into()),
        ]);
        if let Err(e) = self.store.audit().append(vec![audit]).await {
            tracing::warn!(error = %e, "could not record a break-glass use");
        }
    }
}
