//! `remit-loadgen`: drives `POST /v1/tasks` (or introspection) against a running Remit over
//! HTTP with keep-alive connections, and prints requests/s, p50 and p99.
//!
//! `--url` may list several replicas (comma-separated); workers are spread over them. The
//! `propagation` scenario measures how long a task revoked through the first replica stays
//! active on the others (kill → first inactive introspection, p50/p99/max).
//!
//! It sets up its own workflow, agent and instance (through the admin API) so a run needs
//! only the server's URL and admin credential. Loops are bounded by `--requests` and
//! `--max-seconds`; it only talks to the URL it is given (use loopback).
//!
//! `decide-task` starts `--tasks` live tasks first, then asks `POST /v1/decisions` with their
//! tokens (tools rotate, so `tools_used` grows and "read before write" rules bite).

mod leases;
mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// One URL, or several replicas' URLs separated by commas.
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
    /// `start-task`, `introspect`, `evaluate` (one AuthZEN evaluation per request over a
    /// generated 52-policy set and 1,000 entities), `evaluations` (batches of `--batch`),
    /// `decide-task` (task-token decisions over `--tasks` live tasks), `exchange` (RFC 8693 token
    /// exchange of one task token for a registered tool), `proxy` (the same GETs straight to an
    /// upstream this process serves and through Remit's tool proxy), `leases` (a workflow
    /// holding `--leases` database logins killed: revocation time, API latency), or `propagation`
    /// (needs two or more URLs).
    #[arg(long, default_value = "start-task")]
    scenario: String,
    /// Items per `/access/v1/evaluations` request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// `decide-task`: how many live tasks the decisions are spread over (started first).
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// `proxy`: the tool proxy's URL (`[proxy] listen`).
    #[arg(long)]
    proxy_url: Option<String>,
    /// `leases`: how many database logins the killed workflow holds.
    #[arg(long, default_value_t = 1000)]
    leases: u64,
    /// `leases`: the admin URL of the PostgreSQL the logins are made on.
    #[arg(long)]
    db_admin_url: Option<String>,
}

/// Rules for agents' tasks, pushed with the generated set (the `decide-task` scenario).
const TASK_POLICIES: &str = r#"
@id("tasks.tools")
permit (principal is Task, action == Action::"call_tool", resource is Tool)
when { context.data_sensitivity_rank <= context.workflow_ceiling_rank };

@id("tasks.read-before-write")
forbid (principal is Task, action == Action::"call_tool", resource == Tool::"db-write")
unless { context.tools_used.contains("db-read") };
"#;

/// The tool of the `n`-th task decision.
fn tool_of(n: u64) -> String {
    match n % 8 {
        0 => "db-read".into(),
        1 => "db-write".into(),
        k => format!("tool-{k}"),
    }
}

const USERS: usize = 500;
const TODOS: usize = 500;

/// Pushes the generated policy set and entities (decision scenarios).
async fn setup_policy(http: &reqwest::Client, base: &str, admin: &str) -> Result<(), String> {
    let mut bundle = remit_policy::synthetic::bundle(50);
    bundle.policies.push(remit_policy::PolicyFile { name: "tasks.cedar".into(), source: TASK_POLICIES.into() });
    let bundle = serde_json::to_value(bundle).map_err(|e| e.to_string())?;
    let r = http
        .put(format!("{base}/v1/policies"))
        .bearer_auth(admin)
        .json(&bundle)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("policy push: {}", r.text().await.unwrap_or_default()));
    }
    let ents: Vec<Value> = (0..USERS)
        .map(remit_policy::synthetic::user)
        .chain((0..TODOS).map(|i| remit_policy::synthetic::todo(i, USERS)))
        .collect();
    // In chunks: the server's body limit (64 KiB by default) caps one push.
    for chunk in ents.chunks(100) {
        post(http, &format!("{base}/v1/entities"), admin, json!({"entities": chunk})).await?;
    }
    Ok(())
}

/// The `n`-th decision request: user `n % USERS` on its own todo with its role's action
/// (allowed), or every seventh on someone else's todo (denied).
fn decision_item(n: u64) -> (Value, Value, Value) {
    let u = (n as usize) % USERS;
    let todo = if n.is_multiple_of(7) { (u + 1) % TODOS } else { u };
    (
        json!({"type": "Human", "id": format!("u{u}@example.com")}),
        json!({"name": format!("act{}", u % 5)}),
        json!({"type": "Todo", "id": format!("todo-{todo}")}),
    )
}

/// `PUT url` with `body` as the admin; `what` names it in the error.
async fn put(c: &reqwest::Client, url: &str, bearer: &str, body: Value, what: &str) -> Result<(), String> {
    let r = c.put(url).bearer_auth(bearer).json(&body).send().await.map_err(|e| e.to_string())?;
    if r.status().is_success() { Ok(()) } else { Err(format!("{what}: {}", r.status())) }
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
    let bases: Vec<String> = a.url.split(',').map(|u| u.trim().trim_end_matches('/').to_owned()).collect();
    let base = bases[0].clone();
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

    if ["evaluate", "evaluations", "decide-task", "exchange"].contains(&a.scenario.as_str()) {
        setup_policy(&http, &base, &a.admin_token).await?;
    }
    // `exchange`: a registered tool and a task meant for Remit trading its token for it.
    let mut exchange_token = String::new();
    if a.scenario == "exchange" {
        let tool = json!({"name": run, "audience": format!("https://load.example/{run}"), "scopes": ["call_tool"],
                          "owner": "load@example.com"});
        post(&http, &format!("{base}/v1/tools"), &a.admin_token, tool).await?;
        let b = json!({"workflow": run, "intent": "load test exchange", "audience": ["remit"], "ttl_seconds": 900});
        let t = post(&http, &format!("{base}/v1/tasks"), &inst_token, b).await?;
        exchange_token = t["token"].as_str().ok_or("no task token")?.to_owned();
    }
    // Live tasks for `decide-task`, started before the clock runs.
    let mut pool: Vec<String> = Vec::new();
    if a.scenario == "decide-task" {
        let mut starts = Vec::new();
        for i in 0..a.concurrency.max(1) {
            let (http, base, inst_token, body) = (http.clone(), base.clone(), inst_token.clone(), body.clone());
            let n = a.tasks / a.concurrency.max(1) + usize::from(i < a.tasks % a.concurrency.max(1));
            starts.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = post(&http, &format!("{base}/v1/tasks"), &inst_token, body.clone()).await?;
                    out.push(t["token"].as_str().ok_or("no task token")?.to_owned());
                }
                Ok::<_, String>(out)
            }));
        }
        for s in starts {
            pool.extend(s.await.map_err(|e| e.to_string())??);
        }
    }
    let pool = Arc::new(pool);
    if a.scenario == "proxy" {
        let at = a.proxy_url.as_deref().ok_or("the proxy scenario needs --proxy-url")?;
        return proxy::run(&http, &base, at, &a.admin_token, &inst_token, &run, a.concurrency, a.requests).await;
    }
    if a.scenario == "leases" {
        let at = a.proxy_url.as_deref().ok_or("the leases scenario needs --proxy-url")?;
        let db = a.db_admin_url.as_deref().ok_or("the leases scenario needs --db-admin-url")?;
        return leases::run(&http, &base, at, &a.admin_token, db, &run, a.concurrency, a.leases).await;
    }
    if a.scenario == "propagation" {
        return propagation(&http, &bases, &a.admin_token, &inst_token, &body, a.requests).await;
    }
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for i in 0..a.concurrency {
        let base = bases[i % bases.len()].clone();
        let (http, base, inst_token, body, admin, sample_token) =
            (http.clone(), base.clone(), inst_token.clone(), body.clone(), a.admin_token.clone(), sample_token.clone());
        let (issued, errors, total, scenario) = (issued.clone(), errors.clone(), a.requests, a.scenario.clone());
        let batch = a.batch;
        let pool = pool.clone();
        let (exchange_token, tool) = (exchange_token.clone(), run.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t0 = Instant::now();
                let n = issued.load(Ordering::Relaxed);
                let ok = if scenario == "evaluate" {
                    let (s, act, r) = decision_item(n);
                    post(
                        &http,
                        &format!("{base}/access/v1/evaluation"),
                        &admin,
                        json!({"subject": s, "action": act, "resource": r}),
                    )
                    .await
                    .is_ok_and(|v| v["decision"].is_boolean())
                } else if scenario == "evaluations" {
                    let items: Vec<Value> = (0..batch as u64)
                        .map(|k| {
                            let (s, act, r) = decision_item(n * batch as u64 + k);
                            json!({"subject": s, "action": act, "resource": r})
                        })
                        .collect();
                    post(&http, &format!("{base}/access/v1/evaluations"), &admin, json!({"evaluations": items}))
                        .await
                        .is_ok_and(|v| v["evaluations"].as_array().is_some_and(|a| a.len() == batch))
                } else if scenario == "decide-task" {
                    let token = &pool[(n as usize) % pool.len().max(1)];
                    let body = json!({"token": token, "action": {"name": "call_tool"},
                                      "resource": {"type": "Tool", "id": tool_of(n)}, "context": {"target": "load"}});
                    post(&http, &format!("{base}/v1/decisions"), &admin, body)
                        .await
                        .is_ok_and(|v| v["decision"].is_boolean() && v["errors"].as_array().is_some_and(Vec::is_empty))
                } else if scenario == "exchange" {
                    let form = [
                        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                        ("subject_token", exchange_token.as_str()),
                        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                        ("audience", tool.as_str()),
                        ("scope", "call_tool"),
                    ];
                    match http.post(format!("{base}/oauth2/token")).form(&form).send().await {
                        Ok(r) if r.status().is_success() => {
                            r.json::<Value>().await.is_ok_and(|v| v["access_token"].is_string())
                        }
                        _ => false,
                    }
                } else if scenario == "introspect" {
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
    let per_request = if a.scenario == "evaluations" { a.batch as f64 } else { 1.0 };
    println!(
        "scenario={} replicas={} requests={} errors={} concurrency={} seconds={:.2} rate={:.0}/s decisions={:.0}/s p50={:.2}ms p99={:.2}ms",
        a.scenario,
        bases.len(),
        lat.len(),
        errors.load(Ordering::Relaxed),
        a.concurrency,
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        n * per_request / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn active(http: &reqwest::Client, base: &str, admin: &str, token: &str) -> Result<bool, String> {
    let r = http
        .post(format!("{base}/oauth2/introspect"))
        .bearer_auth(admin)
        .form(&[("token", token)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    v["active"].as_bool().ok_or_else(|| format!("bad introspection answer {v}"))
}

/// Revokes a task through `bases[0]` and times until every other replica reports it
/// inactive, `rounds` times. Each other replica is polled back to back from the moment the
/// kill is sent; its cache is warm (the token was introspected there just before).
async fn propagation(
    http: &reqwest::Client,
    bases: &[String],
    admin: &str,
    inst_token: &str,
    body: &Value,
    rounds: u64,
) -> Result<(), String> {
    if bases.len() < 2 {
        return Err("propagation needs at least two replica URLs".into());
    }
    let (mut since_ack, mut since_send) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = post(http, &format!("{}/v1/tasks", bases[0]), inst_token, body.clone()).await?;
        let (id, token) = (t["task"]["id"].as_str().unwrap_or_default(), t["token"].as_str().unwrap_or_default());
        for b in &bases[1..] {
            for _ in 0..2 {
                if !active(http, b, admin, token).await? {
                    return Err("a fresh task is inactive on another replica".into());
                }
            }
        }
        let sent = Instant::now();
        let mut pollers = Vec::new();
        for b in &bases[1..] {
            let (http, b, admin, token) = (http.clone(), b.clone(), admin.to_owned(), token.to_owned());
            pollers.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match active(&http, &b, &admin, &token).await {
                        Ok(false) => return Ok(Instant::now()),
                        Ok(true) if Instant::now() < deadline => {}
                        Ok(true) => return Err(format!("{b} still reports a revoked task active after 30 s")),
                        Err(e) => return Err(e),
                    }
                }
            }));
        }
        post(http, &format!("{}/v1/tasks/{id}/revoke", bases[0]), admin, json!({"reason": "propagation benchmark"}))
            .await?;
        let acked = Instant::now();
        for p in pollers {
            let seen = p.await.map_err(|e| e.to_string())??;
            since_ack.push(seen.saturating_duration_since(acked));
            since_send.push(seen.saturating_duration_since(sent));
        }
    }
    for (name, lat) in [("since-kill-acknowledged", &mut since_ack), ("since-kill-sent", &mut since_send)] {
        lat.sort();
        let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len() - 1)).copied().unwrap_or_default();
        println!(
            "scenario=propagation replicas={} samples={} {name}: p50={:.2}ms p99={:.2}ms max={:.2}ms",
            bases.len(),
            lat.len(),
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
