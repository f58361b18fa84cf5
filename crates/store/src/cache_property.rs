//! A property test of the liveness cache against the store behind it: over random sequences
//! of kills, resumes, enables, renewals, joins, task starts and reads, every read through the
//! cache answers exactly what the store answers.
//!
//! - On the replica that made a write, right after it (read-your-writes: a revoked
//!   credential is never honoured again on the replica that revoked it).
//! - With a second replica (its own cache over its own connection to the same database),
//!   once that write's notification has arrived: it may lag by the feed's latency, never by
//!   the cache's `max_age` (which the test sets far longer than it waits).
//!
//! Test code compiled into the library so each backend's test file can run it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use remit_core::audit::AuditAction;
use remit_core::ids::{AgentName, InstanceId, TaskId, WorkflowName};
use remit_core::model::{AgentState, Kill, KillTarget, WorkflowState};

use crate::cache::CachingStore;
use crate::conformance::{agent, agent_name, ev, fixture, instance, join_token, now, task, wf_name, workflow};
use crate::{Store, StoreError};

/// A deterministic random source (xorshift, no dependency): `next(n)` is in `0..n`.
fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    seed |= 1;
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    }
}

/// What exists, so operations pick real targets.
struct World {
    workflows: Vec<WorkflowName>,
    agents: Vec<AgentName>,
    instances: Vec<InstanceId>,
    tasks: Vec<TaskId>,
}

/// Reads everything through `cache` and from `store`; returns the first difference.
async fn differs(cache: &dyn Store, store: &dyn Store, w: &World) -> Option<String> {
    for a in &w.agents {
        let (c, s) = (cache.identity().agent(a).await.unwrap(), store.identity().agent(a).await.unwrap());
        if c != s {
            return Some(format!("agent {a}: cache {c:?} store {s:?}"));
        }
    }
    for i in &w.instances {
        let (c, s) = (cache.identity().instance(i).await.unwrap(), store.identity().instance(i).await.unwrap());
        if c != s {
            return Some(format!("instance {i}: cache {c:?} store {s:?}"));
        }
    }
    for t in &w.tasks {
        let (c, s) =
            (cache.identity().task_snapshot(t).await.unwrap(), store.identity().task_snapshot(t).await.unwrap());
        if c != s {
            return Some(format!("task {t}: cache {c:?} store {s:?}"));
        }
    }
    None
}

/// Runs `steps` random operations from `seed` through a cache over `store`, checking after
/// each that the cache agrees with the store, and (with `replica`, another store on the same
/// database) that a second cache over it agrees once the change has propagated.
pub async fn cache_agrees_with_store(store: Arc<dyn Store>, replica: Option<Arc<dyn Store>>, seed: u64, steps: usize) {
    let first = fixture(&*store).await;
    let a = CachingStore::new(store.clone(), Duration::from_secs(600));
    let b = replica.map(|r| CachingStore::new(r, Duration::from_secs(600)));
    store.identity().create_workflow(workflow("ops"), ev(AuditAction::WorkflowCreate)).await.unwrap();
    store.identity().create_agent(agent("bot2", &["deploy", "ops"]), ev(AuditAction::AgentCreate)).await.unwrap();
    let mut w = World {
        workflows: vec![wf_name("deploy"), wf_name("ops")],
        agents: vec![agent_name("bot"), agent_name("bot2")],
        instances: vec![first.id],
        tasks: vec![],
    };
    let mut next = xorshift(seed);
    for step in 0..steps {
        let what = next(10);
        let op = match what {
            0 => {
                let ag = w.agents[next(2) as usize].clone();
                let r = a.identity().kill(Kill {
                    target: KillTarget::Agent(ag.clone()),
                    actor: "p".into(),
                    reason: "r".into(),
                    at: now(),
                });
                format!("disable {ag}: {:?}", r.await.map(|_| ()))
            }
            1 => {
                let ag = w.agents[next(2) as usize].clone();
                let r = a.identity().set_agent_state(
                    &ag,
                    AgentState::Disabled,
                    AgentState::Enabled,
                    ev(AuditAction::AgentEnable),
                );
                format!("enable {ag}: {:?}", r.await)
            }
            2 => {
                let wf = w.workflows[next(2) as usize].clone();
                let r = a.identity().kill(Kill {
                    target: KillTarget::Workflow(wf.clone()),
                    actor: "p".into(),
                    reason: "r".into(),
                    at: now(),
                });
                format!("suspend {wf}: {:?}", r.await.map(|_| ()))
            }
            3 => {
                let wf = w.workflows[next(2) as usize].clone();
                let r = a.identity().set_workflow_state(
                    &wf,
                    WorkflowState::Suspended,
                    WorkflowState::Active,
                    ev(AuditAction::WorkflowResume),
                );
                format!("resume {wf}: {:?}", r.await)
            }
            4 if !w.instances.is_empty() => {
                let i = w.instances[next(w.instances.len() as u64) as usize].clone();
                let r = a.identity().kill(Kill {
                    target: KillTarget::Instance(i.clone()),
                    actor: "p".into(),
                    reason: "r".into(),
                    at: now(),
                });
                format!("revoke instance {i}: {:?}", r.await.map(|_| ()))
            }
            5 if !w.instances.is_empty() => {
                let i = w.instances[next(w.instances.len() as u64) as usize].clone();
                let r = a.identity().renew_instance(&i, now().plus_secs(7200), ev(AuditAction::InstanceRenew));
                format!("renew {i}: {:?}", r.await)
            }
            6 if !w.tasks.is_empty() => {
                let t = w.tasks[next(w.tasks.len() as u64) as usize].clone();
                let r = a.identity().kill(Kill {
                    target: KillTarget::Task(t.clone()),
                    actor: "p".into(),
                    reason: "r".into(),
                    at: now(),
                });
                format!("revoke task {t}: {:?}", r.await.map(|_| ()))
            }
            7 => {
                let ag = w.agents[next(2) as usize].clone();
                let jt = join_token(ag.as_str(), 600);
                let made = a.identity().create_join_token(jt.clone(), ev(AuditAction::JoinTokenCreate)).await;
                let inst = instance(ag.as_str());
                let id = inst.id.clone();
                let r = match made {
                    Ok(()) => a.identity().redeem_join_token(&jt.id, inst, ev(AuditAction::InstanceJoin)).await,
                    Err(e) => Err(e),
                };
                if r.is_ok() {
                    w.instances.push(id.clone());
                }
                format!("join {ag}: {r:?}")
            }
            _ => {
                // Start a task: in a random workflow, by a random agent, through a random
                // instance of it (or none), under a random parent (or none).
                let wf = w.workflows[next(2) as usize].clone();
                let ag = w.agents[next(2) as usize].clone();
                let mine: Vec<&InstanceId> = {
                    let mut v = Vec::new();
                    for i in &w.instances {
                        if store.identity().instance(i).await.unwrap().is_some_and(|x| x.agent == ag) {
                            v.push(i);
                        }
                    }
                    v
                };
                let inst = if mine.is_empty() || next(3) == 0 {
                    None
                } else {
                    Some(mine[next(mine.len() as u64) as usize].clone())
                };
                let parent = if w.tasks.is_empty() || next(2) == 0 {
                    None
                } else {
                    Some(w.tasks[next(w.tasks.len() as u64) as usize].clone())
                };
                let t = task(wf.as_str(), ag.as_str(), inst.as_ref(), parent.as_ref());
                let r = a.identity().create_task(t.clone(), ev(AuditAction::TaskStart)).await;
                match &r {
                    Ok(()) => w.tasks.push(t.id.clone()),
                    Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("start task: {e}"),
                }
                format!("start task in {wf} as {ag}: {:?}", r)
            }
        };
        if let Some(d) = differs(&a, &*store, &w).await {
            panic!("seed {seed} step {step} after `{op}`: the writing replica's cache disagrees with the store: {d}");
        }
        if let Some(b) = &b {
            // The other replica may lag by its notification, never longer.
            let mut last = None;
            for _ in 0..250 {
                last = differs(b, &*store, &w).await;
                if last.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(d) = last {
                panic!("seed {seed} step {step} after `{op}`: the other replica's cache still disagrees: {d}");
            }
        }
    }
}
