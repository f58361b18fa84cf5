//! The `proxy` scenario: an upstream served by this process (a minimal HTTP/1.1 JSON API that
//! checks the injected key), a tool registered with Remit's proxy in front of it, and the same
//! GETs sent straight to the upstream (with the key, as an agent holding it would) and then
//! through the proxy (with only a task token): requests/s, p50 and p99 for each, one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{post, put};

const KEY: &str = "load-upstream-key-0123456789";

/// A keep-alive HTTP/1.1 server answering `GET /v2/items/<id>` with a small JSON body when
/// `X-Api-Key` is right, 401 otherwise. Returns its port.
async fn upstream() -> Result<u16, String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut keyed, mut len) = (false, 0usize);
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        keyed |= lower == format!("x-api-key: {}", KEY.to_ascii_lowercase());
                        if let Some(v) = lower.strip_prefix("content-length: ") {
                            len = v.parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let (status, out) = if keyed {
                        ("200 OK", format!(r#"{{"item":"{}","ok":true}}"#, line.split(' ').nth(1).unwrap_or("")))
                    } else {
                        ("401 Unauthorized", "{}".to_owned())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn phase(
    name: &str,
    http: &reqwest::Client,
    url: String,
    header: (&'static str, String),
    concurrency: usize,
    requests: u64,
) {
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, header, issued, errors) =
            (http.clone(), url.clone(), header.clone(), issued.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                let t0 = Instant::now();
                let n = issued.load(Ordering::Relaxed);
                let ok = match http.get(format!("{url}/{n}")).header(header.0, &header.1).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                lat.push(t0.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "scenario=proxy phase={name} requests={} errors={} concurrency={concurrency} seconds={secs:.2} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        lat.len(),
        errors.load(Ordering::Relaxed),
        lat.len() as f64 / secs,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}

/// Runs both phases against the proxy at `proxy_url` of the Remit at `base`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    http: &reqwest::Client,
    base: &str,
    proxy_url: &str,
    admin: &str,
    inst_token: &str,
    run: &str,
    concurrency: usize,
    requests: u64,
) -> Result<(), String> {
    let port = upstream().await?;
    let tool = json!({"name": run, "audience": format!("https://load.example/{run}"), "scopes": ["read"],
        "owner": "load@example.com",
        "proxy": {"upstream": format!("http://127.0.0.1:{port}/v2"),
                  "routes": [{"method": "GET", "path": "/items/{id}", "scope": "read"}],
                  "inject": {"type": "header", "name": "X-Api-Key", "secret": "api-key"}}});
    post(http, &format!("{base}/v1/tools"), admin, tool).await?;
    let secret_url = format!("{base}/v1/tools/{run}/secrets/api-key");
    put(http, &secret_url, admin, json!({"value": KEY}), "setting the secret").await?;
    let bundle = json!({"schema": "action read appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
        "policies": [{"name": "p.cedar", "source": format!("permit (principal, action == Action::\"read\", resource == Tool::\"{run}\");")}]});
    put(http, &format!("{base}/v1/policies"), admin, bundle, "pushing the policy").await?;
    let b = json!({"workflow": run, "intent": "load test proxy", "audience": ["remit"], "ttl_seconds": 900});
    let t: Value = post(http, &format!("{base}/v1/tasks"), inst_token, b).await?;
    let task = t["token"].as_str().ok_or("no task token")?.to_owned();
    let warm = requests.min(500);
    let direct = format!("http://127.0.0.1:{port}/v2/items");
    let proxied = format!("{}/tools/{run}/items", proxy_url.trim_end_matches('/'));
    phase("warmup", http, proxied.clone(), ("authorization", format!("Bearer {task}")), concurrency, warm).await;
    phase("direct", http, direct, ("x-api-key", KEY.to_owned()), concurrency, requests).await;
    phase("proxy", http, proxied, ("authorization", format!("Bearer {task}")), concurrency, requests).await;
    Ok(())
}
