//! Faults on PostgreSQL, through real `remit serve` processes:
//! - the database restarts in the middle of a load: replicas answer 503 with a clear error
//!   while it is down, reconnect by themselves, never panic, and lose no acknowledged write;
//! - a replica killed with SIGKILL mid-load loses nothing it acknowledged.
//!
//! The restart test runs its own throw-away PostgreSQL (initdb + pg_ctl on a free port) so
//! it never touches the machine's shared server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use remit_store::postgres::testing::{PgCluster, TempDb};
use serde_json::{Value, json};

mod common;

use common::Server as Replica;

fn replica(data: &Path, store: &str, kek: &str) -> Replica {
    common::serve(data, &["--store", store], &[("REMIT_KEK", kek), ("RUST_LOG", "warn")])
}

struct Api {
    http: reqwest::Client,
    admin: String,
}

impl Api {
    async fn call(&self, base: &str, method: &str, path: &str, bearer: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(bearer);
        if let Some(b) = body {
            r = r.json(&b);
        }
        match r.send().await {
            Ok(resp) => {
                let st = resp.status().as_u16();
                (st, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Workflow, agent, and one joined instance; returns the instance token.
    async fn setup(&self, base: &str) -> String {
        let (s, _) = self
            .call(
                base,
                "POST",
                "/v1/workflows",
                &self.admin,
                Some(json!({"name": "deploy", "purpose": "p", "owner": "o@example.com", "max_task_ttl_seconds": 900})),
            )
            .await;
        assert_eq!(s, 201);
        let (s, _) = self
            .call(
                base,
                "POST",
                "/v1/agents",
                &self.admin,
                Some(json!({"name": "bot", "owner": "o@example.com", "workflows": ["deploy"]})),
            )
            .await;
        assert_eq!(s, 201);
        let (s, jt) = self.call(base, "POST", "/v1/agents/bot/join-tokens", &self.admin, Some(json!({}))).await;
        assert_eq!(s, 201);
        let (s, inst) = self.call(base, "POST", "/v1/join", "", Some(json!({"join_token": jt["token"]}))).await;
        assert_eq!(s, 201, "{inst}");
        inst["token"].as_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct Tally {
    acked: std::sync::Mutex<Vec<String>>,
    unavailable: AtomicU64,
    refused: AtomicU64,
    unexpected: std::sync::Mutex<Vec<(u16, Value)>>,
}

/// Starts `workers` loops creating tasks on `base` until `stop` is set.
fn load(
    api: Arc<Api>,
    base: String,
    inst: String,
    workers: usize,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (api, base, inst, stop, t) = (api.clone(), base.clone(), inst.clone(), stop.clone(), t.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"workflow": "deploy", "intent": "load", "audience": ["t"], "ttl_seconds": 600});
                    match api.call(&base, "POST", "/v1/tasks", &inst, Some(body)).await {
                        (201, v) => t.acked.lock().unwrap().push(v["task"]["id"].as_str().unwrap().to_owned()),
                        (503, v) => {
                            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "a 503 explains itself: {v}");
                            t.unavailable.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        (0, _) => {
                            t.refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => t.unexpected.lock().unwrap().push(other),
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged task is stored, and the audit chain verifies.
async fn nothing_acknowledged_was_lost(api: &Api, base: &str, acked: &[String]) {
    for chunk in acked.chunks(64) {
        let mut hs = Vec::new();
        for id in chunk {
            let path = format!("/v1/tasks/{id}");
            hs.push(async move { (id.clone(), api.call(base, "GET", &path, &api.admin, None).await.0) });
        }
        for (id, st) in futures_join(hs).await {
            assert_eq!(st, 200, "acknowledged task {id} is missing");
        }
    }
    let (st, v) = api.call(base, "POST", "/v1/audit/verify", &api.admin, Some(json!({}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(fs.len());
    for f in fs {
        out.push(f.await);
    }
    out
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_admin(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_loses_nothing_acknowledged() {
    let cluster = PgCluster::start().expect("a private PostgreSQL (initdb + pg_ctl)");
    let db = TempDb::create_on(&cluster.admin_url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kek = remit_token::Kek::generate_text();
    let mut r = replica(&dir.path().join("a"), &db.url, &kek);
    let api = Arc::new(Api { http: reqwest::Client::new(), admin: read_admin(&dir.path().join("a")) });
    let inst = api.setup(&r.url).await;

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let workers = load(api.clone(), r.url.clone(), inst.clone(), 8, stop.clone(), tally.clone());
    wait_for("load before the restart", || tally.acked.lock().unwrap().len() >= 200).await;

    cluster.stop("fast").unwrap();
    let before_down = tally.unavailable.load(Ordering::Relaxed);
    wait_for("503s while the database is down", || tally.unavailable.load(Ordering::Relaxed) >= before_down + 20).await;
    let (st, ready) = api.call(&r.url, "GET", "/readyz", "", None).await;
    assert_eq!(st, 503, "readiness reports the lost database: {ready}");
    let acked_while_down = tally.acked.lock().unwrap().len();

    let t0 = Instant::now();
    cluster.restart().unwrap();
    eprintln!("restart: pg_ctl start took {:?}", t0.elapsed());
    wait_for("writes to succeed again after the restart", || {
        tally.acked.lock().unwrap().len() >= acked_while_down + 200
    })
    .await;
    eprintln!("restart: recovered {:?} after the restart began", t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(tally.unexpected.lock().unwrap().is_empty(), "unexpected answers: {:?}", tally.unexpected.lock().unwrap());
    assert!(r.child.try_wait().unwrap().is_none(), "the replica is still running (it never panicked or exited)");
    let acked = tally.acked.lock().unwrap().clone();
    eprintln!(
        "restart: {} acknowledged, {} answered 503 while the database was down",
        acked.len(),
        tally.unavailable.load(Ordering::Relaxed)
    );
    nothing_acknowledged_was_lost(&api, &r.url, &acked).await;
    let (st, _) = api.call(&r.url, "GET", "/readyz", "", None).await;
    assert_eq!(st, 200);
    let _ = r.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_loses_nothing_it_acknowledged() {
    let db = TempDb::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kek = remit_token::Kek::generate_text();
    let mut a = replica(&dir.path().join("a"), &db.url, &kek);
    let api = Arc::new(Api { http: reqwest::Client::new(), admin: read_admin(&dir.path().join("a")) });
    let b = replica(&dir.path().join("b"), &db.url, &kek);
    let inst = api.setup(&a.url).await;

    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let workers = load(api.clone(), a.url.clone(), inst.clone(), 16, stop.clone(), tally.clone());
    wait_for("load on replica A", || tally.acked.lock().unwrap().len() >= 300).await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    wait_for("clients to see A gone", || tally.refused.load(Ordering::Relaxed) >= 16).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(tally.unexpected.lock().unwrap().is_empty(), "unexpected answers: {:?}", tally.unexpected.lock().unwrap());
    let acked = tally.acked.lock().unwrap().clone();
    eprintln!("sigkill: {} acknowledged by A before it was killed", acked.len());
    // Replica B, on the same database, has every task A acknowledged, and an intact chain.
    nothing_acknowledged_was_lost(&api, &b.url, &acked).await;
    // And B carries on where A stopped.
    let (st, _) = api
        .call(
            &b.url,
            "POST",
            "/v1/tasks",
            &inst,
            Some(json!({"workflow": "deploy", "intent": "after", "audience": ["t"]})),
        )
        .await;
    assert_eq!(st, 201);
}
