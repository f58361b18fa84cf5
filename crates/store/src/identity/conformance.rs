//! The identity area's conformance cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use remit_core::audit::AuditAction;
use remit_core::ids::{InstanceId, TaskId};
use remit_core::model::{AgentState, InstanceState, Kill, KillTarget, TaskState, WorkflowState};
use remit_core::time::UnixMillis;

#[allow(unused_imports)]
use crate::conformance::*;
use crate::{AuditFilter, Store, StoreError, TaskFilter};

pub async fn workflows(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let w = workflow("deploy");
    s.identity().create_workflow(w.clone(), ev(AuditAction::WorkflowCreate)).await.unwrap();
    assert!(matches!(
        s.identity().create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    s.identity().create_workflow(workflow("audit-sweep"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    assert_eq!(s.identity().workflow(&w.name).await.unwrap().unwrap(), w);
    assert_eq!(s.identity().workflow(&wf_name("nope")).await.unwrap(), None);
    let names: Vec<_> = s.identity().list_workflows().await.unwrap().into_iter().map(|w| w.name.to_string()).collect();
    assert_eq!(names, ["audit-sweep", "deploy"]);
    // Resume of an active workflow is a conflict, not a silent success.
    assert!(matches!(
        s.identity()
            .set_workflow_state(
                &w.name,
                WorkflowState::Suspended,
                WorkflowState::Active,
                ev(AuditAction::WorkflowResume)
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.identity()
            .set_workflow_state(
                &wf_name("nope"),
                WorkflowState::Suspended,
                WorkflowState::Active,
                ev(AuditAction::WorkflowResume)
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    s.identity()
        .kill(Kill {
            target: KillTarget::Workflow(w.name.clone()),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert_eq!(s.identity().workflow(&w.name).await.unwrap().unwrap().state, WorkflowState::Suspended);
    s.identity()
        .set_workflow_state(&w.name, WorkflowState::Suspended, WorkflowState::Active, ev(AuditAction::WorkflowResume))
        .await
        .unwrap();
    assert_eq!(s.identity().workflow(&w.name).await.unwrap().unwrap().state, WorkflowState::Active);
    // The allowed tools can be replaced (audited); an unknown workflow is not found.
    let tools = vec!["jira.read".to_owned(), "jira.write".to_owned()];
    s.identity().set_workflow_tools(&w.name, tools.clone(), ev(AuditAction::WorkflowUpdate)).await.unwrap();
    assert_eq!(s.identity().workflow(&w.name).await.unwrap().unwrap().allowed_tools, tools);
    s.identity().set_workflow_tools(&w.name, vec![], ev(AuditAction::WorkflowUpdate)).await.unwrap();
    assert!(s.identity().workflow(&w.name).await.unwrap().unwrap().allowed_tools.is_empty());
    assert!(matches!(
        s.identity().set_workflow_tools(&wf_name("nope"), vec![], ev(AuditAction::WorkflowUpdate)).await,
        Err(StoreError::NotFound { .. })
    ));
    verify_chain(s).await;
}

pub async fn agents_need_workflows(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    assert!(matches!(
        s.identity().create_agent(agent("bot", &["missing"]), ev(AuditAction::AgentCreate)).await,
        Err(StoreError::NotFound { .. })
    ));
    s.identity().create_workflow(workflow("deploy"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    let a = agent("bot", &["deploy"]);
    s.identity().create_agent(a.clone(), ev(AuditAction::AgentCreate)).await.unwrap();
    assert!(matches!(
        s.identity().create_agent(a.clone(), ev(AuditAction::AgentCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.identity().agent(&a.name).await.unwrap().unwrap(), a);
    assert_eq!(s.identity().list_agents().await.unwrap(), vec![a]);
}

pub async fn join_token_redeems_once(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let jt = join_token("bot", 600);
    s.identity().create_join_token(jt.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert_eq!(s.identity().join_token(&jt.id).await.unwrap().unwrap(), jt);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let id = jt.id.clone();
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            s.identity().redeem_join_token(&id, instance("bot"), ev(AuditAction::InstanceJoin)).await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1, "a join token redeems exactly once");
    let used = s.identity().join_token(&jt.id).await.unwrap().unwrap();
    assert!(used.used_at.is_some());
    let inst = s.identity().instance(used.used_by.as_ref().unwrap()).await.unwrap().unwrap();
    assert_eq!(inst.state, InstanceState::Active);
    // Expired tokens do not redeem.
    let mut old = join_token("bot", 1);
    old.expires_at = UnixMillis(now().0 - 1000);
    s.identity().create_join_token(old.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert!(matches!(
        s.identity().redeem_join_token(&old.id, instance("bot"), ev(AuditAction::InstanceJoin)).await,
        Err(StoreError::Conflict(_))
    ));
    verify_chain(s).await;
}

pub async fn tasks_round_trip(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t = task("deploy", "bot", Some(&inst.id), None);
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await.unwrap();
    assert_eq!(s.identity().task(&t.id).await.unwrap().unwrap(), t);
    assert!(matches!(
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await,
        Err(StoreError::Conflict(_))
    ));
    let snap = s.identity().task_snapshot(&t.id).await.unwrap().unwrap();
    assert_eq!(snap.task, t);
    assert_eq!(snap.workflow.name.as_str(), "deploy");
    assert_eq!(snap.agent.name.as_str(), "bot");
    assert_eq!(snap.instance.unwrap().id, inst.id);
    let ctx = s.identity().start_context(&wf_name("deploy"), &agent_name("bot"), Some(&inst.id)).await.unwrap();
    assert!(ctx.workflow.is_some() && ctx.agent.is_some() && ctx.instance.is_some());
    let ctx = s.identity().start_context(&wf_name("nope"), &agent_name("bot"), None).await.unwrap();
    assert!(ctx.workflow.is_none() && ctx.instance.is_none());
    let t2 = task("deploy", "bot", None, Some(&t.id));
    s.identity().create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let all = s.identity().list_tasks(TaskFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 2);
    let by_inst = s
        .identity()
        .list_tasks(TaskFilter { instance: Some(inst.id.clone()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(by_inst, vec![t.clone()]);
    let done = s
        .identity()
        .list_tasks(TaskFilter { state: Some(TaskState::Completed), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert!(done.is_empty());
    assert_eq!(s.identity().task(&TaskId::from_random([9; 16])).await.unwrap(), None);
    verify_chain(s).await;
}

pub async fn task_refused_after_kill(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let k = |target| Kill { target, actor: "admin".into(), reason: "incident".into(), at: now() };
    s.identity().kill(k(KillTarget::Instance(inst.id.clone()))).await.unwrap();
    let t = task("deploy", "bot", Some(&inst.id), None);
    assert!(matches!(s.identity().create_task(t, ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    s.identity().kill(k(KillTarget::Workflow(wf_name("deploy")))).await.unwrap();
    let t = task("deploy", "bot", None, None);
    assert!(matches!(
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.identity().task(&t.id).await.unwrap(), None);
}

pub async fn kill_workflow_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    s.identity().create_workflow(workflow("other"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    let mut a = agent("helper", &["other", "deploy"]);
    a.name = agent_name("helper");
    s.identity().create_agent(a, ev(AuditAction::AgentCreate)).await.unwrap();
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let t2 = task("deploy", "bot", None, None);
    let other = task("other", "helper", None, None);
    let mut expired = task("deploy", "bot", None, None);
    expired.expires_at = UnixMillis(now().0 - 1);
    for t in [&t1, &t2, &other, &expired] {
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    s.identity().end_task(&t2.id, TaskState::Completed, now(), "admin", None).await.unwrap();
    let rep = s
        .identity()
        .kill(Kill {
            target: KillTarget::Workflow(wf_name("deploy")),
            actor: "alice@example.com".into(),
            reason: "incident 42".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert_eq!(rep.tasks_revoked, vec![t1.id.clone()]);
    let t1s = s.identity().task(&t1.id).await.unwrap().unwrap();
    assert_eq!(t1s.state, TaskState::Revoked);
    assert_eq!(t1s.end_reason.as_deref(), Some("incident 42"));
    assert_eq!(s.identity().task(&t2.id).await.unwrap().unwrap().state, TaskState::Completed);
    assert_eq!(s.identity().task(&other.id).await.unwrap().unwrap().state, TaskState::Active);
    assert_eq!(s.identity().workflow(&wf_name("deploy")).await.unwrap().unwrap().state, WorkflowState::Suspended);
    let revs =
        s.audit().list(AuditFilter { task: Some(t1.id.clone()), limit: 100, ..Default::default() }).await.unwrap();
    let rev = revs.iter().find(|r| r.event.action == "task.revoke").unwrap();
    assert_eq!(rev.event.actor, "alice@example.com");
    assert_eq!(rev.event.reason.as_deref(), Some("incident 42"));
    assert_eq!(count_actions(s, "workflow.suspend").await, 1);
    verify_chain(s).await;
}

pub async fn kill_agent_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let t2 = task("deploy", "bot", None, None);
    s.identity().create_task(t1.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    s.identity().create_task(t2.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let unused = join_token("bot", 600);
    s.identity().create_join_token(unused.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    let rep = s
        .identity()
        .kill(Kill {
            target: KillTarget::Agent(agent_name("bot")),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert_eq!(rep.instances_revoked, vec![inst.id.clone()]);
    assert_eq!(rep.join_tokens_revoked, vec![unused.id.clone()], "a kill revokes the agent's unused join tokens");
    assert!(s.identity().join_token(&unused.id).await.unwrap().unwrap().revoked_at.is_some());
    assert_eq!(s.identity().agent(&agent_name("bot")).await.unwrap().unwrap().kill_generation, 1);
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([t1.id.clone(), t2.id.clone()]));
    assert_eq!(s.identity().agent(&agent_name("bot")).await.unwrap().unwrap().state, AgentState::Disabled);
    assert_eq!(s.identity().instance(&inst.id).await.unwrap().unwrap().state, InstanceState::Revoked);
    // A disabled agent's join tokens no longer redeem, and new ones are refused.
    let jt = join_token("bot", 600);
    assert!(matches!(
        s.identity().create_join_token(jt, ev(AuditAction::JoinTokenCreate)).await,
        Err(StoreError::Conflict(_))
    ));
    s.identity()
        .set_agent_state(&agent_name("bot"), AgentState::Disabled, AgentState::Enabled, ev(AuditAction::AgentEnable))
        .await
        .unwrap();
    // Re-enabling does not resurrect anything: not the instance, not the task, not the
    // join token made before the kill.
    assert_eq!(s.identity().instance(&inst.id).await.unwrap().unwrap().state, InstanceState::Revoked);
    assert_eq!(s.identity().task(&t1.id).await.unwrap().unwrap().state, TaskState::Revoked);
    assert!(matches!(
        s.identity().redeem_join_token(&unused.id, instance("bot"), ev(AuditAction::InstanceJoin)).await,
        Err(StoreError::Conflict(_))
    ));
    // A token made after re-enabling belongs to the new generation and redeems.
    let fresh = join_token("bot", 600);
    s.identity().create_join_token(fresh.clone(), ev(AuditAction::JoinTokenCreate)).await.unwrap();
    assert_eq!(s.identity().join_token(&fresh.id).await.unwrap().unwrap().agent_generation, 1);
    s.identity().redeem_join_token(&fresh.id, instance("bot"), ev(AuditAction::InstanceJoin)).await.unwrap();
    let revoked = s
        .audit()
        .list(AuditFilter { action: Some("join_token.revoke".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].event.agent.as_deref(), Some("bot"));
    verify_chain(s).await;
}

pub async fn kill_instance_cascades(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let t1 = task("deploy", "bot", Some(&inst.id), None);
    let child = task("deploy", "bot", None, Some(&t1.id));
    let t2 = task("deploy", "bot", None, None);
    for t in [&t1, &child, &t2] {
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let rep = s
        .identity()
        .kill(Kill {
            target: KillTarget::Instance(inst.id.clone()),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([t1.id.clone(), child.id.clone()]));
    assert_eq!(s.identity().task(&t2.id).await.unwrap().unwrap().state, TaskState::Active);
    assert!(matches!(
        s.identity()
            .kill(Kill {
                target: KillTarget::Instance(InstanceId::from_random([3; 16])),
                actor: "admin".into(),
                reason: "r".into(),
                at: now()
            })
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn kill_task_revokes_subtree(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let root = task("deploy", "bot", None, None);
    let c1 = task("deploy", "bot", None, Some(&root.id));
    let c2 = task("deploy", "bot", None, Some(&c1.id));
    let sibling = task("deploy", "bot", None, None);
    for t in [&root, &c1, &c2, &sibling] {
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    }
    let k = |id: &TaskId| Kill {
        target: KillTarget::Task(id.clone()),
        actor: "admin".into(),
        reason: "r".into(),
        at: now(),
    };
    let rep = s.identity().kill(k(&root.id)).await.unwrap();
    let got: HashSet<_> = rep.tasks_revoked.into_iter().collect();
    assert_eq!(got, HashSet::from([root.id.clone(), c1.id.clone(), c2.id.clone()]));
    assert_eq!(s.identity().task(&sibling.id).await.unwrap().unwrap().state, TaskState::Active);
    assert!(matches!(s.identity().kill(k(&root.id)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.identity().kill(k(&TaskId::from_random([5; 16]))).await, Err(StoreError::NotFound { .. })));
    // A child of a revoked task cannot be created.
    let late = task("deploy", "bot", None, Some(&root.id));
    assert!(matches!(s.identity().create_task(late, ev(AuditAction::TaskStart)).await, Err(StoreError::Conflict(_))));
    verify_chain(s).await;
}

pub async fn end_task_is_compare_and_set(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    let t = task("deploy", "bot", None, None);
    let child = task("deploy", "bot", None, Some(&t.id));
    s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    s.identity().create_task(child.clone(), ev(AuditAction::TaskStart)).await.unwrap();
    let rep = s.identity().end_task(&t.id, TaskState::Completed, now(), "admin", Some("done")).await.unwrap();
    assert_eq!(rep.tasks_revoked, vec![child.id.clone()], "completing a task ends its subtree");
    let got = s.identity().task(&t.id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Completed);
    assert!(got.ended_at.is_some());
    assert!(matches!(
        s.identity().end_task(&t.id, TaskState::Completed, now(), "admin", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.identity().end_task(&TaskId::from_random([6; 16]), TaskState::Completed, now(), "admin", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(count_actions(s, "task.complete").await, 1);
}

pub async fn renew_instance_only_while_active(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let later = now().plus_secs(7200);
    s.identity().renew_instance(&inst.id, later, ev(AuditAction::InstanceRenew)).await.unwrap();
    assert_eq!(s.identity().instance(&inst.id).await.unwrap().unwrap().expires_at, later);
    s.identity()
        .kill(Kill {
            target: KillTarget::Instance(inst.id.clone()),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    assert!(matches!(
        s.identity().renew_instance(&inst.id, later.plus_secs(1), ev(AuditAction::InstanceRenew)).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Many task starts at once (one group commit on backends that batch), half of them on a
/// suspended workflow: each gets its own answer, and only the live ones are stored and
/// audited.
pub async fn concurrent_starts_on_live_and_killed_workflows(store: Arc<dyn Store>) {
    let s = &*store;
    fixture(s).await;
    s.identity().create_workflow(workflow("frozen"), ev(AuditAction::WorkflowCreate).workflow("frozen")).await.unwrap();
    s.identity().create_agent(agent("bot2", &["deploy", "frozen"]), ev(AuditAction::AgentCreate)).await.unwrap();
    s.identity()
        .kill(Kill {
            target: KillTarget::Workflow(wf_name("frozen")),
            actor: "admin".into(),
            reason: "r".into(),
            at: now(),
        })
        .await
        .unwrap();
    let start = s.audit().head().await.unwrap().0;
    let mut handles = Vec::new();
    for i in 0..120 {
        let st = store.clone();
        handles.push(tokio::spawn(async move {
            let wf = if i % 2 == 0 { "deploy" } else { "frozen" };
            let t = task(wf, "bot2", None, None);
            (wf, t.id.clone(), st.identity().create_task(t.clone(), ev(AuditAction::TaskStart).task(&t.id)).await)
        }));
    }
    for h in handles {
        let (wf, id, r) = h.await.unwrap();
        if wf == "deploy" {
            r.unwrap();
            assert!(s.identity().task(&id).await.unwrap().is_some());
        } else {
            assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
            assert_eq!(s.identity().task(&id).await.unwrap(), None);
        }
    }
    assert_eq!(s.audit().head().await.unwrap().0, start + 60);
    verify_chain(s).await;
}

pub async fn tool_uses_per_task(store: Arc<dyn Store>) {
    let s = &*store;
    install(s).await;
    let (t1, t2) = (TaskId::from_random(rnd()), TaskId::from_random(rnd()));
    let e = || ev(AuditAction::AccessEvaluate);
    let head = s.audit().head().await.unwrap().0;
    assert!(s.identity().tools_used(&t1).await.unwrap().is_empty());
    for tool in ["slack", "github", "slack"] {
        s.identity().record_tool_use(&t1, tool, now(), e()).await.unwrap();
    }
    s.identity().record_tool_use(&t2, "prod-db", now(), e()).await.unwrap();
    assert_eq!(s.identity().tools_used(&t1).await.unwrap(), vec!["github".to_string(), "slack".to_string()]);
    assert_eq!(s.identity().tools_used(&t2).await.unwrap(), vec!["prod-db".to_string()]);
    // Every use wrote its audit record, in the same transaction.
    assert_eq!(s.audit().head().await.unwrap().0, head + 4);
    // Concurrent uses of one new tool by one task: recorded once, no error.
    let mut joins = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let t = t2.clone();
        joins.push(tokio::spawn(async move {
            store.identity().record_tool_use(&t, "jira", now(), ev(AuditAction::AccessEvaluate)).await
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    assert_eq!(s.identity().tools_used(&t2).await.unwrap(), vec!["jira".to_string(), "prod-db".to_string()]);
    // A task holds at most MAX_TOOLS_PER_TASK distinct tools; the decision is still audited.
    let t3 = TaskId::from_random(rnd());
    for i in 0..crate::MAX_TOOLS_PER_TASK + 5 {
        s.identity().record_tool_use(&t3, &format!("tool-{i:04}"), now(), e()).await.unwrap();
    }
    let used = s.identity().tools_used(&t3).await.unwrap();
    assert_eq!(used.len() as i64, crate::MAX_TOOLS_PER_TASK);
    assert_eq!(used.last().map(String::as_str), Some("tool-0255"));
    verify_chain(s).await;
}

/// Kill cascades reach every live descendant whatever the depth (a chain of 300 levels,
/// deeper than any fixed walk limit) and record exactly the victims the core's plan names,
/// in its order: random trees from fixed seeds, with some subtrees killed beforehand.
pub async fn cascades_have_no_depth_limit(store: Arc<dyn Store>) {
    let s = &*store;
    let inst = fixture(s).await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut ids: Vec<TaskId> = Vec::new();
    let mut parent_of: std::collections::HashMap<TaskId, Option<TaskId>> = std::collections::HashMap::new();
    for i in 0..360 {
        // A 300-deep chain, then branches hung anywhere on it.
        let parent = if i == 0 {
            None
        } else if i < 300 {
            ids.last().cloned()
        } else {
            Some(ids[next(ids.len())].clone())
        };
        let t = task("deploy", "bot", Some(&inst.id), parent.as_ref());
        s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
        parent_of.insert(t.id.clone(), parent);
        ids.push(t.id);
    }
    let subtree = |root: &TaskId| -> Vec<TaskId> {
        let mut out: Vec<TaskId> = ids
            .iter()
            .filter(|t| {
                let mut cur = Some((*t).clone());
                while let Some(c) = cur {
                    if &c == root {
                        return true;
                    }
                    cur = parent_of.get(&c).cloned().flatten();
                }
                false
            })
            .cloned()
            .collect();
        out.sort();
        out
    };
    // Some subtrees die first.
    let mut dead: HashSet<TaskId> = HashSet::new();
    for _ in 0..4 {
        let victim = ids[300 + next(60)].clone();
        let k = Kill { target: KillTarget::Task(victim.clone()), actor: "a".into(), reason: "r".into(), at: now() };
        match s.identity().kill(k).await {
            Ok(rep) => {
                let mut want: Vec<TaskId> = subtree(&victim).into_iter().filter(|t| !dead.contains(t)).collect();
                want.sort();
                assert_eq!(rep.tasks_revoked, want, "a subtree kill");
                dead.extend(rep.tasks_revoked);
            }
            Err(StoreError::Conflict(_)) => assert!(dead.contains(&victim), "only an already revoked task conflicts"),
            Err(e) => panic!("{e}"),
        }
    }
    // Then the root: every task below it that is still live, sorted, one record each.
    let (head, _) = s.audit().head().await.unwrap();
    let root = ids[0].clone();
    let k = Kill { target: KillTarget::Task(root.clone()), actor: "a".into(), reason: "r".into(), at: now() };
    let rep = s.identity().kill(k).await.unwrap();
    let want: Vec<TaskId> = subtree(&root).into_iter().filter(|t| !dead.contains(t)).collect();
    assert!(want.len() > 300, "the deep chain is reached: {}", want.len());
    assert_eq!(rep.tasks_revoked, want);
    let recs = s.audit().list(AuditFilter { after_seq: head, limit: 10_000, ..Default::default() }).await.unwrap();
    let named: Vec<String> = recs.iter().map(|r| r.event.task.clone().unwrap_or_default()).collect();
    assert_eq!(named, want.iter().map(ToString::to_string).collect::<Vec<_>>(), "one record per victim, in plan order");
    assert!(recs.iter().all(|r| r.event.action == "task.revoke" && r.event.detail.contains(&format!("task:{root}"))));
    for t in &ids {
        assert_ne!(s.identity().task(t).await.unwrap().unwrap().state, TaskState::Active, "{t} survived the kill");
    }
    verify_chain(s).await;
}

/// A task's delegation and a workflow's trust rules round-trip; over random delegation trees,
/// killing any node revokes exactly its subtree (a seeded generator, so a failure replays).
pub async fn delegation_round_trips_and_kills_end_exactly_the_subtree(store: Arc<dyn Store>) {
    use remit_core::delegation::{Authority, DelegationRule, Hop, TrustRules};
    let s = &*store;
    fixture(s).await;
    let trust = TrustRules {
        delegations: vec![DelegationRule { from: "bot".into(), to: vec!["*".into()] }],
        workers_may_delegate: true,
        require_dpop: false,
        env_credentials: Default::default(),
    };
    s.identity().set_workflow_trust(&wf_name("deploy"), trust.clone(), ev(AuditAction::WorkflowUpdate)).await.unwrap();
    assert_eq!(s.identity().workflow(&wf_name("deploy")).await.unwrap().unwrap().trust, trust);
    assert!(matches!(
        s.identity().set_workflow_trust(&wf_name("nope"), trust, ev(AuditAction::WorkflowUpdate)).await,
        Err(StoreError::NotFound { .. })
    ));
    // Budgets are shared down a subtree: a root given 3 calls and its child given 3 make 3
    // calls between them, whoever makes them.
    {
        let mut root = task("deploy", "bot", None, None);
        root.delegation.authority = Authority { max_calls: Some(3), ..Authority::default() };
        let mut child = task("deploy", "bot", None, Some(&root.id));
        child.delegation.depth = 1;
        child.delegation.chain = vec![Hop { task: root.id.clone(), agent: root.agent.clone() }];
        child.delegation.authority = Authority { max_calls: Some(3), ..Authority::default() };
        for t in [&root, &child] {
            s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
        }
        let call = |id: TaskId| async move {
            s.identity().record_call(&id, None, now(), ev(AuditAction::AccessEvaluate)).await.unwrap()
        };
        assert!(call(child.id.clone()).await && call(child.id.clone()).await);
        assert!(call(root.id.clone()).await, "the root's third");
        assert!(!call(child.id.clone()).await, "the root's budget is spent for its subtree");
        assert!(!call(root.id.clone()).await);
    }
    let mut seed: u64 = 0x5eed_0bad_cafe;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap() % n
    };
    for _round in 0..4 {
        // A random tree of 24 tasks, each child's delegation naming its ancestors.
        let root = task("deploy", "bot", None, None);
        s.identity().create_task(root.clone(), ev(AuditAction::TaskStart)).await.unwrap();
        let mut nodes = vec![root];
        for _ in 0..23 {
            let parent = nodes[next(nodes.len())].clone();
            let mut t = task("deploy", "bot", None, Some(&parent.id));
            let mut chain = parent.delegation.chain.clone();
            chain.push(Hop { task: parent.id.clone(), agent: parent.agent.clone() });
            t.delegation.depth = parent.delegation.depth + 1;
            t.delegation.chain = chain;
            t.delegation.authority = Authority { max_calls: Some(3), ..Authority::default() };
            s.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await.unwrap();
            nodes.push(t);
        }
        // max_calls is counted once per allowed call, never past the limit.
        let last = &nodes[nodes.len() - 1];
        for i in 0..5 {
            let ok =
                s.identity().record_call(&last.id, Some("jira"), now(), ev(AuditAction::AccessEvaluate)).await.unwrap();
            assert_eq!(ok, i < 3, "call {i}");
        }
        assert_eq!(s.identity().tools_used(&last.id).await.unwrap(), vec!["jira".to_owned()]);
        let back = s.identity().task(&last.id).await.unwrap().unwrap();
        assert_eq!(back.delegation, nodes[nodes.len() - 1].delegation);
        // Kill one node: exactly it and every node whose chain names it end.
        let victim = nodes[next(nodes.len())].clone();
        let kill =
            Kill { target: KillTarget::Task(victim.id.clone()), actor: "admin".into(), reason: "r".into(), at: now() };
        let rep = s.identity().kill(kill).await.unwrap();
        let got: HashSet<TaskId> = rep.tasks_revoked.into_iter().collect();
        let want: HashSet<TaskId> = nodes
            .iter()
            .filter(|n| n.id == victim.id || n.delegation.chain.iter().any(|h| h.task == victim.id))
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(got, want);
        for n in &nodes {
            let st = s.identity().task(&n.id).await.unwrap().unwrap().state;
            assert_eq!(st == TaskState::Revoked, want.contains(&n.id), "{}", n.id);
        }
    }
    verify_chain(s).await;
}
