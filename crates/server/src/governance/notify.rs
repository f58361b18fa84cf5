//! Notifications for humans through a webhook channel: containment tripped, recertification
//! due (and overdue, with the suspension it led to), an approval waiting.
//!
//! `[governance] webhook_url` receives a JSON POST per notice, signed with `Remit-Signature:
//! t=…,v1=…` (HMAC-SHA256 over `t.body` with the `webhook_secret_file` secret, see
//! `remit_token::webhook`), with timeouts, no redirects and three attempts (1 s, 2 s apart). A
//! notice is a convenience for people: the audit log is the record, so a notice that could not
//! be delivered is logged, not retried for ever. Notices carry names and reasons, never a token
//! or secret.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;

/// What a human is told.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// A containment rule tripped.
    Containment { workflow: String, task: String, signal: &'static str, action: &'static str, reason: String },
    /// An object is due for recertification (or was suspended for being past due).
    Recertification { kind: String, id: String, owners: Vec<String>, due_at: String, suspended: bool },
    /// An approval request is waiting for a human.
    ApprovalWaiting { approval: String, workflow: Option<String>, task: Option<String>, reason: String },
}

/// The channel, resolved once.
pub(crate) struct Channel {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

/// Reads a secret from `env` or `file` (trimmed); `None` when neither is set.
pub(crate) fn read_secret(env: &str, file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    let (s, from) = match std::env::var_os(env) {
        Some(v) => (v.to_string_lossy().into_owned(), env.to_owned()),
        None => {
            let Some(f) = file else { return Ok(None) };
            (std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?, f.display().to_string())
        }
    };
    let s = s.trim();
    // A short or empty key would let anyone sign: refused, never used.
    if s.len() < 16 {
        return Err(format!("{from}: a secret of at least 16 characters is required"));
    }
    Ok(Some(s.as_bytes().to_vec()))
}

fn channel(app: &App) -> Option<&Channel> {
    static WARNED: OnceLock<()> = OnceLock::new();
    app.governance
        .channel
        .get_or_init(|| {
            let url = app.cfg.governance.webhook_url.clone()?;
            let secret = match read_secret("REMIT_WEBHOOK_SECRET", app.cfg.governance.webhook_secret_file.as_deref()) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    WARNED.get_or_init(|| {
                        tracing::error!("[governance] webhook_url needs webhook_secret_file; notices are off")
                    });
                    return None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the webhook secret could not be read; notices are off");
                    return None;
                }
            };
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .ok()?;
            Some(Channel { url, secret, client })
        })
        .as_ref()
}

impl App {
    /// Sends `n` to the webhook channel, if one is configured (in the background).
    pub fn notify(&self, n: Notice) {
        let Some(ch) = channel(self) else { return };
        let (url, secret, client) = (ch.url.clone(), ch.secret.clone(), ch.client.clone());
        let clock = self.clock.clone();
        let body = serde_json::json!({ "notice": n, "issuer": self.issuer, "time": clock.now().secs() }).to_string();
        tokio::spawn(async move {
            for attempt in 0..3u32 {
                let sig = remit_token::webhook::sign(&secret, clock.now().secs(), body.as_bytes());
                let r = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(remit_token::webhook::HEADER, sig)
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => return,
                    Ok(resp) => tracing::warn!(status = resp.status().as_u16(), attempt, "a notice was refused"),
                    // Without the URL: a webhook URL may carry its own secret.
                    Err(e) => tracing::warn!(error = %e.without_url(), attempt, "a notice could not be sent"),
                }
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
            tracing::error!("a notice was not delivered after 3 attempts (the audit log has the event)");
        });
    }
}
