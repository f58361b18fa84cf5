//! Push delivery (RFC 8935): queued SETs are POSTed to each enabled push stream's endpoint,
//! one at a time and in order, by one replica (the `ssf.push` job). `202` (any 2xx) removes a
//! SET from the outbox; a `400` with an RFC 8935 error is the receiver refusing that SET (it
//! is dropped and logged); anything else — a timeout, a 5xx, a refused connection — keeps it
//! and the stream waits with exponential backoff (1 s doubling to 5 min), so a later SET never
//! overtakes an earlier one.
//!
//! The client has timeouts (3 s to connect, 4 s in all), follows no redirects and reads at most
//! 4 KiB of an answer; a push starts only while the job's hold has more than that left, so two
//! replicas never push the same stream at once. A disabled tool's streams get nothing. The stream's `authorization_header`, when it has one, is sent as
//! `Authorization` and appears nowhere else.

use std::sync::Arc;
use std::time::Duration;

use remit_core::time::UnixMillis;
use remit_store::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::Held;
use super::sets;
use super::ssf::{self, PUSH};
use crate::app::App;
use crate::error::Error;

pub const JOB: &str = "ssf.push";
/// SETs sent per stream per round.
const BATCH: u32 = 50;
const MAX_BACKOFF_SECS: u64 = 300;
const MAX_ANSWER: usize = 4_096;
/// Longest one push may take (connect, send, answer).
const SEND_TIMEOUT: Duration = Duration::from_secs(4);

/// Runs until `stop` flips.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the SET push client could not be built; push delivery is off");
            return;
        }
    };
    let mut held = Held::new(JOB);
    let mut changes = app.store.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let mut next_due: Option<UnixMillis> = None;
        match held.hold(&app).await {
            Ok(true) => match round(&app, &client, &held).await {
                Ok(due) => next_due = due,
                Err(e) => tracing::warn!(error = %e, "SET push round failed"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "SET push: the job could not be taken"),
        }
        let wait = next_due
            .map(|d| Duration::from_millis(u64::try_from((d.0 - app.clock.now().0).max(0)).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            c = changes.recv() => if let Err(RecvError::Closed) = c { break },
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    held.release(&app).await;
}

/// Sends what is due on every enabled push stream (and a disabled one's notice saying so);
/// returns the earliest retry time, if any.
async fn round(app: &App, client: &reqwest::Client, held: &Held) -> Result<Option<UnixMillis>, Error> {
    let streams = app.store.governance().streams(None).await?;
    let work = streams.into_iter().filter(|s| s.status != "paused").map(|s| stream_round(app, client, held, s));
    let dues = futures_util::future::join_all(work).await;
    let mut earliest = None;
    for d in dues {
        match d {
            Ok(Some(t)) => earliest = Some(earliest.map_or(t, |e: UnixMillis| e.min(t))),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "SET push to a stream failed"),
        }
    }
    Ok(earliest)
}

async fn stream_round(
    app: &App,
    client: &reqwest::Client,
    held: &Held,
    s: Stream,
) -> Result<Option<UnixMillis>, Error> {
    let cfg = ssf::parse_stored(&s)?;
    if cfg.delivery.method != PUSH {
        return Ok(None);
    }
    let Some(url) = cfg.delivery.endpoint_url.clone() else { return Ok(None) };
    let g = app.store.governance();
    let now = app.clock.now();
    // The head of the queue decides: if it is waiting for a retry, so is the stream.
    let head = g.outbox(&s.id, UnixMillis(i64::MAX), 1).await?;
    match head.first() {
        None => return Ok(None),
        Some(h) if h.next_at > now => return Ok(Some(h.next_at)),
        Some(_) => {}
    }
    let auth = ssf::push_authorization(app, &s)?;
    if !super::ssf::receiver_active(app, &s.owner).await? {
        return Ok(None);
    }
    let mut rows = g.outbox(&s.id, now, BATCH).await?;
    // A disabled stream delivers only the notice that Remit disabled it (SSF 1.0 §8.1.5).
    if s.status != "enabled" {
        rows.retain(sets::is_stream_update);
        if rows.is_empty() {
            return Ok(None);
        }
    }
    // A full batch: more may be waiting, so the next round comes at once.
    let full = rows.len() == BATCH as usize;
    for row in rows {
        // Never send on a hold that might lapse mid-request: another replica could be sending.
        if !held.has(app, SEND_TIMEOUT) {
            return Ok(Some(app.clock.now()));
        }
        let set = match sets::signed(app, &row) {
            Ok(set) => set,
            Err(why) => {
                tracing::error!(stream = %s.id, why, "a queued SET is not Remit's; dropped unsigned");
                g.acknowledge(&s.id, vec![row.jti]).await?;
                continue;
            }
        };
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/secevent+jwt")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(set);
        if let Some(a) = &auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let outcome = match req.send().await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) if resp.status() == reqwest::StatusCode::BAD_REQUEST => {
                let body = read_capped(resp).await;
                let err = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["err"].as_str().map(remit_core::ids::truncate_for_error));
                match err {
                    // The receiver parsed the SET and refused its content: it will not take it
                    // again. Key and authorization problems may pass (a JWKS refresh, new
                    // credentials): those are retried.
                    Some(code)
                        if matches!(
                            code.as_str(),
                            "invalid_request" | "invalid_issuer" | "invalid_audience" | "invalid_state"
                        ) =>
                    {
                        tracing::warn!(stream = %s.id, jti = %row.jti, err = %code, "a receiver refused a SET; dropped");
                        Ok(())
                    }
                    Some(code) => Err(format!("400 {code}")),
                    None => Err("400".into()),
                }
            }
            Ok(resp) => Err(resp.status().as_u16().to_string()),
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(e) if e.is_connect() => Err("connection refused or unreachable".into()),
            Err(_) => Err("request failed".into()),
        };
        match outcome {
            Ok(()) => {
                g.acknowledge(&s.id, vec![row.jti]).await?;
            }
            Err(why) => {
                let secs = (1u64 << row.attempts.min(9)).min(MAX_BACKOFF_SECS);
                let next = app.clock.now().plus_secs(secs);
                tracing::info!(stream = %s.id, attempts = row.attempts + 1, error = %why, "SET push failed; will retry");
                g.outbox_failed(&s.id, &row.jti, next, &why).await?;
                return Ok(Some(next));
            }
        }
    }
    Ok(full.then(|| app.clock.now()))
}

async fn read_capped(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ANSWER {
            out.truncate(MAX_ANSWER);
            break;
        }
    }
    out
}
