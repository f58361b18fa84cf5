//! Remit's own authorization: who may do what in Remit's admin API, as a built-in Cedar
//! policy set over Remit's own actions (namespace `Remit`), kept apart from the application
//! bundle (its actions never appear in AuthZEN search or an application's decisions).
//!
//! Roles: `admin` (everything), `operator` (read, and the kill switches), `auditor` (read),
//! `approver` (decide approval requests); and ownership: the owner of a workflow or agent may
//! read it and pull and release its kill switch, and decide the approval requests of their
//! workflow's tasks. An organisation may narrow these rules with its own **forbid** policies
//! (a permit there is refused: the built-in set is the ceiling), validated in strict mode
//! against [`ADMIN_SCHEMA`]. Deny by default. The break-glass credential is not a principal
//! here: a broken rule can never lock everyone out.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::PolicyError;

/// The schema of Remit's own world.
pub const ADMIN_SCHEMA: &str = r#"
namespace Remit {
  entity Group;
  entity Human in [Group] { email: String, roles: Set<String> };
  entity Installation;
  entity Workflow { owners: Set<Human> };
  entity Agent { owners: Set<Human> };
  entity Approval { owners: Set<Human> };

  action read, kill_switch, manage;
  action "workflow.read", "agent.read", "task.read", "audit.read", "approval.read", "policy.read",
         "human.read", "status.read", "decision.explain", "tool.read", "grant.read", "secret.read", "lease.read",
         "governance.read" in [read]
    appliesTo { principal: Human, resource: [Installation, Workflow, Agent, Approval] };
  action "workflow.suspend", "workflow.resume", "agent.disable", "agent.enable", "task.revoke",
         "instance.revoke", "tool.disable", "grant.revoke", "lease.revoke" in [kill_switch]
    appliesTo { principal: Human, resource: [Installation, Workflow, Agent, Approval] };
  action "workflow.create", "workflow.update", "agent.create", "agent.update", "agent.join_token", "policy.push",
         "entities.push", "human.manage", "keys.rotate", "audit.checkpoint", "task.start",
         "tool.create", "grant.create", "secret.write", "leak.scan", "governance.manage", "signals.manage",
         "recertify" in [manage]
    appliesTo { principal: Human, resource: [Installation, Workflow, Agent, Approval] };
  action "approval.decide"
    appliesTo { principal: Human, resource: [Installation, Workflow, Agent, Approval] };
}
"#;

/// The built-in rules. An organisation's policies can only forbid more.
pub const BUILT_IN: &str = r#"
@id("role:admin")
permit (principal, action, resource) when { principal.roles.contains("admin") };

@id("role:operator")
permit (principal, action in [Remit::Action::"read", Remit::Action::"kill_switch"], resource)
when { principal.roles.contains("operator") };

@id("role:auditor")
permit (principal, action in Remit::Action::"read", resource) when { principal.roles.contains("auditor") };

@id("role:approver")
permit (principal, action in [Remit::Action::"approval.decide", Remit::Action::"approval.read"], resource)
when { principal.roles.contains("approver") };

@id("owner:workflow")
permit (
  principal,
  action in [Remit::Action::"workflow.read", Remit::Action::"workflow.suspend", Remit::Action::"workflow.resume",
             Remit::Action::"grant.create", Remit::Action::"grant.read", Remit::Action::"grant.revoke",
             Remit::Action::"governance.read", Remit::Action::"recertify"],
  resource is Remit::Workflow
) when { resource.owners.contains(principal) };

@id("owner:agent")
permit (
  principal,
  action in [Remit::Action::"agent.read", Remit::Action::"agent.disable", Remit::Action::"agent.enable",
             Remit::Action::"governance.read", Remit::Action::"recertify"],
  resource is Remit::Agent
) when { resource.owners.contains(principal) };

@id("owner:approval")
permit (principal, action in [Remit::Action::"approval.read", Remit::Action::"approval.decide"], resource is Remit::Approval)
when { resource.owners.contains(principal) };
"#;

/// Remit's own actions (a closed set: the schema declares exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    WorkflowRead,
    AgentRead,
    TaskRead,
    AuditRead,
    ApprovalRead,
    PolicyRead,
    HumanRead,
    StatusRead,
    DecisionExplain,
    WorkflowSuspend,
    WorkflowResume,
    AgentDisable,
    AgentEnable,
    TaskRevoke,
    InstanceRevoke,
    WorkflowCreate,
    WorkflowUpdate,
    AgentCreate,
    AgentUpdate,
    AgentJoinToken,
    PolicyPush,
    EntitiesPush,
    HumanManage,
    KeysRotate,
    AuditCheckpoint,
    TaskStart,
    ApprovalDecide,
    ToolRead,
    ToolCreate,
    ToolDisable,
    GrantRead,
    GrantCreate,
    GrantRevoke,
    SecretRead,
    SecretWrite,
    LeakScan,
    LeaseRead,
    LeaseRevoke,
    GovernanceRead,
    GovernanceManage,
    SignalsManage,
    Recertify,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        use AdminAction::*;
        match self {
            WorkflowRead => "workflow.read",
            AgentRead => "agent.read",
            TaskRead => "task.read",
            AuditRead => "audit.read",
            ApprovalRead => "approval.read",
            PolicyRead => "policy.read",
            HumanRead => "human.read",
            StatusRead => "status.read",
            DecisionExplain => "decision.explain",
            WorkflowSuspend => "workflow.suspend",
            WorkflowResume => "workflow.resume",
            AgentDisable => "agent.disable",
            AgentEnable => "agent.enable",
            TaskRevoke => "task.revoke",
            InstanceRevoke => "instance.revoke",
            WorkflowCreate => "workflow.create",
            WorkflowUpdate => "workflow.update",
            AgentCreate => "agent.create",
            AgentUpdate => "agent.update",
            AgentJoinToken => "agent.join_token",
            PolicyPush => "policy.push",
            EntitiesPush => "entities.push",
            HumanManage => "human.manage",
            KeysRotate => "keys.rotate",
            AuditCheckpoint => "audit.checkpoint",
            TaskStart => "task.start",
            ApprovalDecide => "approval.decide",
            ToolRead => "tool.read",
            ToolCreate => "tool.create",
            ToolDisable => "tool.disable",
            GrantRead => "grant.read",
            GrantCreate => "grant.create",
            GrantRevoke => "grant.revoke",
            SecretRead => "secret.read",
            SecretWrite => "secret.write",
            LeakScan => "leak.scan",
            LeaseRead => "lease.read",
            LeaseRevoke => "lease.revoke",
            GovernanceRead => "governance.read",
            GovernanceManage => "governance.manage",
            SignalsManage => "signals.manage",
            Recertify => "recertify",
        }
    }
}

/// What an action is on, with the owners the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    Installation,
    Workflow {
        name: String,
        owners: Vec<String>,
    },
    Agent {
        name: String,
        owners: Vec<String>,
    },
    /// An approval request, with the owners of its task's workflow.
    Approval {
        id: String,
        owners: Vec<String>,
    },
}

/// The human asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPrincipal {
    /// The human id (`h-…`).
    pub id: String,
    pub email: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

/// The answer, with the policies that decided it (a deny by default names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminDecision {
    pub allowed: bool,
    pub reasons: Vec<String>,
}

/// The compiled built-in set plus the organisation's forbids.
pub struct AdminPolicy {
    schema: Schema,
    set: PolicySet,
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let t = EntityTypeName::from_str(ty).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

impl AdminPolicy {
    /// Compiles the built-in rules with the organisation's `forbid` policies (`(file name,
    /// Cedar text)`), strictly validated; a `permit` among them, or any error, refuses all.
    pub fn compile(org: &[(String, String)]) -> Result<AdminPolicy, PolicyError> {
        let (schema, _) =
            Schema::from_cedarschema_str(ADMIN_SCHEMA).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
        let mut set = PolicySet::from_str(BUILT_IN).map_err(|e| PolicyError::PolicySet(e.to_string()))?;
        let mut problems = Vec::new();
        for (name, text) in org {
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(format!("{name}: templates are not supported"));
            }
            for (n, p) in parsed.policies().enumerate() {
                if p.effect() != cedar_policy::Effect::Forbid {
                    problems.push(format!(
                        "{name}: policy {n} is a permit; an organisation's admin policies may only forbid"
                    ));
                    continue;
                }
                let id = p.annotation("id").map(str::to_owned).unwrap_or_else(|| format!("{name}#{n}"));
                if let Err(e) = set.add(p.new_id(PolicyId::new(format!("org:{id}")))) {
                    problems.push(format!("{name}: {e}"));
                }
            }
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            problems.extend(result.validation_errors().map(|e| format!("{}: {e}", e.policy_id())));
        }
        if !problems.is_empty() {
            return Err(PolicyError::PolicySet(problems.join("\n")));
        }
        Ok(AdminPolicy { schema, set })
    }

    /// Decides `action` on `target` for `who`.
    pub fn decide(
        &self,
        who: &AdminPrincipal,
        action: AdminAction,
        target: &AdminTarget,
    ) -> Result<AdminDecision, PolicyError> {
        let invalid = |e: &dyn std::fmt::Display| PolicyError::PolicySet(e.to_string());
        let principal = uid("Remit::Human", &who.id)?;
        let set =
            |v: &[String]| RestrictedExpression::new_set(v.iter().map(|s| RestrictedExpression::new_string(s.clone())));
        let humans = |v: &[String]| -> Result<RestrictedExpression, PolicyError> {
            let uids = v.iter().map(|h| uid("Remit::Human", h)).collect::<Result<Vec<_>, _>>()?;
            Ok(RestrictedExpression::new_set(uids.into_iter().map(RestrictedExpression::new_entity_uid)))
        };
        let groups = who.groups.iter().map(|g| uid("Remit::Group", g)).collect::<Result<Vec<_>, _>>()?;
        let mut entities = vec![
            Entity::new(
                principal.clone(),
                [
                    ("email".to_owned(), RestrictedExpression::new_string(who.email.clone())),
                    ("roles".to_owned(), set(&who.roles)),
                ]
                .into_iter()
                .collect(),
                groups.iter().cloned().collect(),
            )
            .map_err(|e| invalid(&e))?,
        ];
        entities.extend(groups.into_iter().map(Entity::with_uid));
        let (resource, owners) = match target {
            AdminTarget::Installation => (uid("Remit::Installation", "remit")?, None),
            AdminTarget::Workflow { name, owners } => (uid("Remit::Workflow", name)?, Some(owners)),
            AdminTarget::Agent { name, owners } => (uid("Remit::Agent", name)?, Some(owners)),
            AdminTarget::Approval { id, owners } => (uid("Remit::Approval", id)?, Some(owners)),
        };
        let attrs = match owners {
            Some(o) => [("owners".to_owned(), humans(o)?)].into_iter().collect(),
            None => Default::default(),
        };
        entities.push(Entity::new(resource.clone(), attrs, Default::default()).map_err(|e| invalid(&e))?);
        let entities = Entities::from_entities(entities, Some(&self.schema)).map_err(|e| invalid(&e))?;
        let action_uid = uid("Remit::Action", action.as_str())?;
        let request = Request::new(principal, action_uid, resource, Context::empty(), Some(&self.schema))
            .map_err(|e| invalid(&e))?;
        let answer = Authorizer::new().is_authorized(&request, &self.set, &entities);
        // A rule that errors is skipped by Cedar: it never grants, and a forbid that errors
        // does not hold (the organisation's rules are validated strictly, so none should).
        Ok(AdminDecision {
            allowed: answer.decision() == Decision::Allow,
            reasons: answer.diagnostics().reason().map(ToString::to_string).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn who(roles: &[&str], groups: &[&str]) -> AdminPrincipal {
        AdminPrincipal {
            id: "h-1".into(),
            email: "a@example.com".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }
    fn wf(owners: &[&str]) -> AdminTarget {
        AdminTarget::Workflow { name: "deploy".into(), owners: owners.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn roles_grant_what_they_say_and_nothing_else() {
        let p = AdminPolicy::compile(&[]).unwrap();
        let d = |w: &AdminPrincipal, a, t: &AdminTarget| p.decide(w, a, t).unwrap().allowed;
        let i = AdminTarget::Installation;
        assert!(d(&who(&["admin"], &[]), AdminAction::PolicyPush, &i));
        assert!(d(&who(&["operator"], &[]), AdminAction::WorkflowSuspend, &wf(&[])));
        assert!(d(&who(&["operator"], &[]), AdminAction::AuditRead, &i));
        assert!(!d(&who(&["operator"], &[]), AdminAction::WorkflowCreate, &i));
        assert!(d(&who(&["auditor"], &[]), AdminAction::AuditRead, &i));
        assert!(!d(&who(&["auditor"], &[]), AdminAction::TaskRevoke, &i));
        assert!(d(&who(&["approver"], &[]), AdminAction::ApprovalDecide, &i));
        assert!(!d(&who(&["approver"], &[]), AdminAction::WorkflowRead, &i));
        assert!(!d(&who(&[], &[]), AdminAction::StatusRead, &i), "deny by default");
        // Owners: their own workflow's switch, not another's.
        assert!(d(&who(&[], &[]), AdminAction::WorkflowSuspend, &wf(&["h-1"])));
        assert!(!d(&who(&[], &[]), AdminAction::WorkflowSuspend, &wf(&["h-2"])));
        assert!(!d(&who(&[], &[]), AdminAction::WorkflowUpdate, &wf(&["h-1"])));
        let ap = AdminTarget::Approval { id: "a-1".into(), owners: vec!["h-1".into()] };
        assert!(d(&who(&[], &[]), AdminAction::ApprovalDecide, &ap));
    }

    #[test]
    fn an_organisation_only_narrows() {
        let sre_only = "@id(\"sre-kills\")\nforbid (principal, action in Remit::Action::\"kill_switch\", resource) unless { principal in Remit::Group::\"sre\" };";
        let p = AdminPolicy::compile(&[("org.cedar".into(), sre_only.into())]).unwrap();
        let op = who(&["operator"], &[]);
        let d = p.decide(&op, AdminAction::WorkflowSuspend, &wf(&[])).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reasons, vec!["org:sre-kills"]);
        assert!(p.decide(&who(&["operator"], &["sre"]), AdminAction::WorkflowSuspend, &wf(&[])).unwrap().allowed);
        assert!(p.decide(&op, AdminAction::AuditRead, &AdminTarget::Installation).unwrap().allowed);
        // A permit, a typo'd action or a parse error refuses the whole set.
        for bad in [
            "permit (principal, action, resource);",
            "forbid (principal, action == Remit::Action::\"workflow.nuke\", resource);",
            "forbid (principal, action, resource) when { principal.salary > 3 };",
            "forbid (",
        ] {
            assert!(AdminPolicy::compile(&[("org.cedar".into(), bad.into())]).is_err(), "{bad}");
        }
    }
}
