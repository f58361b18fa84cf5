//! SQLite store: durable task starts (task row + audit record) one at a time versus
//! concurrently (group commit), on a real file with `synchronous=FULL`; and the kill switch on
//! a supervisor with 10,000 descendants (100 workers with 99 children each), one transaction
//! that revokes the whole subtree with its audit records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::model::{Agent, AgentState, Sensitivity, Task, TaskState, Workflow, WorkflowState};
use remit_core::time::{Clock, SystemClock};
use remit_store::sqlite::SqliteStore;
use remit_store::{Installation, Store};

fn task(n: u64) -> Task {
    let now = SystemClock.now();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&(now.0 as u64).to_be_bytes());
    Task {
        id: TaskId::from_random(b),
        workflow: WorkflowName::parse("deploy").unwrap(),
        agent: AgentName::parse("bot").unwrap(),
        instance: None,
        parent: None,
        intent: "deploy".into(),
        intent_hash: "0".repeat(64),
        sensitivity: Sensitivity::Internal,
        audience: vec!["tools".into()],
        state: TaskState::Active,
        started_by: "admin".into(),
        created_at: now,
        expires_at: now.plus_secs(600),
        ended_at: None,
        end_reason: None,
        delegation: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
    let now = SystemClock.now();
    rt.block_on(async {
        store
            .keys()
            .install(
                Installation {
                    trust_domain: "remit.local".into(),
                    issuer: None,
                    admin_hash: "0".repeat(64),
                    installed_at: now,
                    mac: None,
                },
                vec![],
                AuditEvent::new(now, "admin", AuditAction::Init),
            )
            .await
            .unwrap();
        let wf = Workflow {
            owner_id: None,
            orphaned_at: None,
            name: WorkflowName::parse("deploy").unwrap(),
            purpose: "p".into(),
            owner: "a@b.c".into(),
            ceiling: Sensitivity::Restricted,
            allowed_tools: vec![],
            max_task_ttl_secs: 900,
            max_delegation_depth: 3,
            trust: Default::default(),
            state: WorkflowState::Active,
            created_at: now,
            updated_at: now,
        };
        store.identity().create_workflow(wf, AuditEvent::new(now, "admin", AuditAction::WorkflowCreate)).await.unwrap();
        let a = Agent {
            owner_id: None,
            orphaned_at: None,
            name: AgentName::parse("bot").unwrap(),
            owner: "a@b.c".into(),
            workflows: vec![WorkflowName::parse("deploy").unwrap()],
            kill_generation: 0,
            state: AgentState::Enabled,
            created_at: now,
            updated_at: now,
        };
        store.identity().create_agent(a, AuditEvent::new(now, "admin", AuditAction::AgentCreate)).await.unwrap();
    });
    let counter = std::sync::atomic::AtomicU64::new(0);
    let next = || counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ev = || AuditEvent::new(SystemClock.now(), "admin", AuditAction::TaskStart);

    let mut g = c.benchmark_group("sqlite_create_task");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential_durable", |b| {
        b.iter(|| rt.block_on(store.identity().create_task(task(next()), ev())).unwrap());
    });
    const BATCH: u64 = 256;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("concurrent_256_group_commit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut hs = Vec::with_capacity(BATCH as usize);
                for _ in 0..BATCH {
                    let s = store.clone();
                    let t = task(next());
                    hs.push(tokio::spawn(async move { s.identity().create_task(t, ev()).await }));
                }
                for h in hs {
                    h.await.unwrap().unwrap();
                }
            })
        });
    });
    g.finish();

    // A supervisor, 100 workers, 99 children each: 10,000 descendants.
    let tree = || {
        rt.block_on(async {
            let root = task(next());
            store.identity().create_task(root.clone(), ev()).await.unwrap();
            let mut workers = Vec::new();
            let mut hs = Vec::new();
            for _ in 0..100 {
                let mut w = task(next());
                w.parent = Some(root.id.clone());
                workers.push(w.id.clone());
                let s = store.clone();
                hs.push(tokio::spawn(async move { s.identity().create_task(w, ev()).await }));
            }
            for h in hs.drain(..) {
                h.await.unwrap().unwrap();
            }
            for w in &workers {
                for _ in 0..99 {
                    let mut t = task(next());
                    t.parent = Some(w.clone());
                    let s = store.clone();
                    hs.push(tokio::spawn(async move { s.identity().create_task(t, ev()).await }));
                }
            }
            for h in hs {
                h.await.unwrap().unwrap();
            }
            root.id
        })
    };
    let mut g = c.benchmark_group("kill_supervisor");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(100));
    g.bench_function("subtree_10000_sqlite", |b| {
        b.iter_batched(
            tree,
            |root| {
                let k = remit_core::model::Kill {
                    target: remit_core::model::KillTarget::Task(root),
                    actor: "admin".into(),
                    reason: "bench".into(),
                    at: SystemClock.now(),
                };
                let rep = rt.block_on(store.identity().kill(k)).unwrap();
                assert_eq!(rep.tasks_revoked.len(), 10_001);
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
