//! Learning that the task ended: the server's per-task event stream
//! (`GET /v1/tasks/{id}/events`, server-sent events), read as it arrives. The server pushes
//! the end within the change feed's latency; there is no polling. A dropped stream (a server
//! restart, a network blip) is reopened with backoff and never taken as the end; an answer
//! saying the task or its instance is gone (401, 403, 404) is.

use std::time::Duration;

use serde_json::Value;

use crate::CliError;
use crate::client::Client;

/// Longest silence on the stream before it is reopened (the server sends a keep-alive every
/// 15 s).
const IDLE: Duration = Duration::from_secs(45);

/// Resolves with the reason once the task `task_id` is no longer live.
pub async fn task_ended(inst: &Client, task_id: &str) -> String {
    let path = format!("/v1/tasks/{task_id}/events");
    let mut backoff = Duration::from_millis(250);
    loop {
        let client = match inst.streaming(IDLE) {
            Ok(c) => c,
            Err(e) => return format!("cannot watch the task: {e}"),
        };
        match client.get_stream(&path).await {
            Ok(mut resp) => {
                backoff = Duration::from_millis(250);
                let mut buf = String::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some(reason) = ended(&block) {
                            return reason;
                        }
                    }
                }
            }
            Err(CliError::Denied(m)) | Err(CliError::NotFound(m)) => return format!("no longer live ({m})"),
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The reason in one server-sent event block, if it says the task is no longer live.
fn ended(block: &str) -> Option<String> {
    let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
    let v: Value = serde_json::from_str(&data).ok()?;
    if v.get("live").and_then(Value::as_bool) == Some(false) {
        let state = v.get("state").and_then(Value::as_str).unwrap_or("ended");
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or(state);
        return Some(reason.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_end_from_an_event() {
        assert_eq!(super::ended("event: state\ndata: {\"live\":true,\"state\":\"active\"}\n\n"), None);
        assert_eq!(
            super::ended("event: state\ndata: {\"live\":false,\"state\":\"revoked\",\"reason\":\"task revoked\"}\n\n"),
            Some("task revoked".into())
        );
        assert_eq!(super::ended(": keep-alive\n\n"), None);
    }
}
