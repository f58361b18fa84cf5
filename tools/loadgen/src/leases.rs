//! The `leases` scenario: a workflow holding many database logins is killed, and we measure
//! the kill's own latency, how long background revocation takes to remove every login, and
//! the API's latency (task starts in another workflow, a write through the same store, 200/s
//! from four probes) before and during that revocation.
//!
//! The logins are real: a tool with a PostgreSQL engine pointed at `--db-admin-url` (a
//! throw-away cluster the script starts, with a group role `app_reader`), each made through the
//! proxy's credential endpoint and granted the group role, at most 64 per task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{post, put};

/// Most leases one task holds (the server's limit).
const PER_TASK: u64 = 64;

fn pct(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort();
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// Starts a task in the probe workflow every 20 ms (50/s per probe: API traffic, not a flood
/// that would starve the revocation being measured) until `stop`; returns each call's latency.
async fn probe(http: reqwest::Client, base: String, inst: String, wf: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t0 = Instant::now();
        let b = json!({"workflow": wf, "intent": "probe", "audience": ["remit"], "ttl_seconds": 60});
        let ok = post(&http, &format!("{base}/v1/tasks"), &inst, b).await.is_ok();
        if ok {
            lat.push(t0.elapsed());
        }
    }
    lat
}

/// Runs the scenario against the Remit at `base` (its proxy at `proxy_url`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    http: &reqwest::Client,
    base: &str,
    proxy_url: &str,
    admin: &str,
    db_admin_url: &str,
    run: &str,
    concurrency: usize,
    leases: u64,
) -> Result<(), String> {
    let tool = json!({"name": run, "audience": format!("https://load.example/{run}"), "scopes": ["connect"],
        "class": "data", "owner": "load@example.com",
        "database": {"engine": "postgres", "admin_secret": "admin-url", "scope": "connect",
                     "grants": ["GRANT app_reader TO {{role}}"]}});
    post(http, &format!("{base}/v1/tools"), admin, tool).await?;
    let secret_url = format!("{base}/v1/tools/{run}/secrets/admin-url");
    put(http, &secret_url, admin, json!({"value": db_admin_url}), "setting the admin secret").await?;
    let bundle = json!({"schema": "action connect appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
        "policies": [{"name": "p.cedar", "source": format!("permit (principal, action == Action::\"connect\", resource == Tool::\"{run}\");")}]});
    put(http, &format!("{base}/v1/policies"), admin, bundle, "pushing the policy").await?;
    // The agent works in the loaded workflow and in a probe workflow nobody kills.
    let wf = format!("{run}-leases");
    let probe_wf = format!("{run}-probe");
    for w in [&wf, &probe_wf] {
        post(
            http,
            &format!("{base}/v1/workflows"),
            admin,
            json!({"name": w, "purpose": "lease load", "owner": "load@example.com", "max_task_ttl_seconds": 14_400}),
        )
        .await?;
    }
    let agent = format!("{run}-lease-agent");
    post(
        http,
        &format!("{base}/v1/agents"),
        admin,
        json!({"name": agent, "owner": "load@example.com", "workflows": [wf, probe_wf]}),
    )
    .await?;
    let jt = post(http, &format!("{base}/v1/agents/{agent}/join-tokens"), admin, json!({})).await?;
    let inst = post(http, &format!("{base}/v1/join"), "", json!({"join_token": jt["token"]})).await?;
    let inst = inst["token"].as_str().ok_or("no instance token")?.to_owned();

    // Make the logins: tasks of 64 leases, `concurrency` tasks at a time.
    let tasks = leases.div_ceil(PER_TASK);
    let next = Arc::new(AtomicU64::new(0));
    let made = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, base, proxy, inst, wf, run) = (
            http.clone(),
            base.to_owned(),
            proxy_url.trim_end_matches('/').to_owned(),
            inst.clone(),
            wf.clone(),
            run.to_owned(),
        );
        let (next, made) = (next.clone(), made.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= tasks {
                    return Ok::<_, String>(lat);
                }
                let b = json!({"workflow": wf, "intent": "lease load", "audience": ["remit"], "ttl_seconds": 14_400});
                let task = post(&http, &format!("{base}/v1/tasks"), &inst, b).await?;
                let token = task["token"].as_str().ok_or("no task token")?.to_owned();
                let n = PER_TASK.min(leases - t * PER_TASK);
                for _ in 0..n {
                    let t0 = Instant::now();
                    post(&http, &format!("{proxy}/credentials/{run}"), &token, json!({})).await?;
                    lat.push(t0.elapsed());
                    made.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut create = Vec::new();
    for w in workers {
        create.extend(w.await.map_err(|e| e.to_string())??);
    }
    let create_secs = start.elapsed().as_secs_f64();
    println!(
        "scenario=leases phase=create leases={} concurrency={concurrency} seconds={create_secs:.1} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        made.load(Ordering::Relaxed),
        made.load(Ordering::Relaxed) as f64 / create_secs,
        pct(&mut create, 0.50),
        pct(&mut create, 0.99)
    );

    // The API at rest, then the kill, then the API while the logins are removed.
    let measure = |secs: u64| {
        let stop = Arc::new(AtomicBool::new(false));
        let probes: Vec<_> = (0..4)
            .map(|_| tokio::spawn(probe(http.clone(), base.to_owned(), inst.clone(), probe_wf.clone(), stop.clone())))
            .collect();
        (stop, probes, secs)
    };
    let (stop, probes, secs) = measure(5);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut rest = Vec::new();
    for p in probes {
        rest.extend(p.await.map_err(|e| e.to_string())?);
    }
    let (stop, probes, _) = measure(0);
    let t0 = Instant::now();
    let killed =
        post(http, &format!("{base}/v1/workflows/{wf}/suspend"), admin, json!({"reason": "lease load"})).await?;
    let kill_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let pending = killed["leases_pending"].as_u64().unwrap_or(0);
    let status = |http: reqwest::Client| async move {
        let r = http.get(format!("{base}/v1/status")).bearer_auth(admin).send().await.map_err(|e| e.to_string())?;
        r.json::<Value>().await.map_err(|e| e.to_string())
    };
    let mut samples = Vec::new();
    loop {
        let s = status(http.clone()).await?;
        let left = s["leases"]["revoking"].as_u64().unwrap_or(u64::MAX);
        samples.push((t0.elapsed().as_secs_f64(), left));
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            return Err(format!("{left} leases still revoking after an hour"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let revoke_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut during = Vec::new();
    for p in probes {
        during.extend(p.await.map_err(|e| e.to_string())?);
    }
    let s = status(http.clone()).await?;
    println!(
        "scenario=leases phase=revoke pending={pending} kill_ms={kill_ms:.0} seconds={revoke_secs:.1} rate={:.0}/s stuck={}",
        pending as f64 / revoke_secs,
        s["leases"]["stuck"]
    );
    println!(
        "scenario=leases phase=api start-task at-rest: n={} p50={:.2}ms p99={:.2}ms; during revocation: n={} p50={:.2}ms p99={:.2}ms",
        rest.len(),
        pct(&mut rest, 0.50),
        pct(&mut rest, 0.99),
        during.len(),
        pct(&mut during, 0.50),
        pct(&mut during, 0.99)
    );
    Ok(())
}
