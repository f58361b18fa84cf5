//! `remit-loadgen`: drives `POST /v1/tasks` (or introspection) against a running Remit over
//! HTTP with keep-alive connections, and prints requests/s, p50 and p99.
//!
//! It sets up its own workflow, agent and instance (through the admin API) so a run needs
//! only the server's URL and admin credential. Loops are bounded by `--requests` and
//! `--max-seconds`; it only talks to the URL it is given (use loopback).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, env = "REMIT_URL", default_value = "http://127.0.0.1:7878")]
    url: String,
    #[arg(long, env = "REMIT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Total requests (after warm-up).
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
    /// Stop early after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// `start-task` or `introspect`.
    #[arg(long, default_value = "start-task")]
    scenario: String,
}

async fn post(c: &reqwest::Client, url: &str, bearer: &str, body: Value) -> Result<Value, String> {
    let r = c.post(url).bearer_auth(bearer).json(&body).send().await.map_err(|e| e.to_string())?;
    let st = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if st.is_success() { Ok(v) } else { Err(format!("{st}: {v}")) }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let a = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build().map_err(|e| e.to_string())?;
    let run = format!("load-{}", std::process::id());
    let base = a.url.trim_end_matches('/').to_owned();
    post(
        &http,
        &format!("{base}/v1/workflows"),
        &a.admin_token,
        json!({"name": run, "purpose": "load test", "owner": "load@example.com", "max_task_ttl_seconds": 900}),
    )
    .await?;
    post(
        &http,
        &format!("{base}/v1/agents"),
        &a.admin_token,
        json!({"name": run, "owner": "load@example.com", "workflows": [run]}),
    )
    .await?;
    let jt = post(&http, &format!("{base}/v1/agents/{run}/join-tokens"), &a.admin_token, json!({})).await?;
    let inst = post(&http, &format!("{base}/v1/join"), "", json!({"join_token": jt["token"]})).await?;
    let inst_token = inst["token"].as_str().ok_or("no instance token")?.to_owned();
    let body = json!({"workflow": run, "intent": "load test task", "audience": ["tools"], "ttl_seconds": 600});
    let sample = post(&http, &format!("{base}/v1/tasks"), &inst_token, body.clone()).await?;
    let sample_token = sample["token"].as_str().ok_or("no task token")?.to_owned();

    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (http, base, inst_token, body, admin, sample_token) =
            (http.clone(), base.clone(), inst_token.clone(), body.clone(), a.admin_token.clone(), sample_token.clone());
        let (issued, errors, total, scenario) = (issued.clone(), errors.clone(), a.requests, a.scenario.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t0 = Instant::now();
                let ok = if scenario == "introspect" {
                    http.post(format!("{base}/oauth2/introspect"))
                        .bearer_auth(&admin)
                        .form(&[("token", sample_token.as_str())])
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                } else {
                    post(&http, &format!("{base}/v1/tasks"), &inst_token, body.clone()).await.is_ok()
                };
                lat.push(t0.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.map_err(|e| e.to_string())?);
    }
    let elapsed = start.elapsed();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    let n = lat.len() as f64;
    println!(
        "scenario={} requests={} errors={} concurrency={} seconds={:.2} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        a.scenario,
        lat.len(),
        errors.load(Ordering::Relaxed),
        a.concurrency,
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}
