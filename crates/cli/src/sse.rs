//! Following a server-sent event stream (`/v1/tasks/{id}/events`,
//! `/v1/approvals/{id}/events`) as it arrives: each event's JSON `data` is handed to a
//! callback until it returns a result. A dropped stream (a server restart, a network blip) is
//! reopened with backoff and never taken as the end; an answer saying the watched thing is
//! gone or not the caller's to watch (401, 403, 404) ends the follow with that error.

use std::time::Duration;

use serde_json::Value;

use crate::CliError;
use crate::client::Client;

/// Longest silence on a stream before it is reopened (the server sends a keep-alive every
/// 15 s).
const IDLE: Duration = Duration::from_secs(45);

/// Reads `path`'s events until `until` returns `Some`.
pub async fn follow<T>(client: &Client, path: &str, mut until: impl FnMut(&Value) -> Option<T>) -> Result<T, CliError> {
    let mut backoff = Duration::from_millis(250);
    loop {
        let c = client.streaming(IDLE)?;
        match c.get_stream(path).await {
            Ok(mut resp) => {
                backoff = Duration::from_millis(250);
                let mut buf = String::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some(t) = data(&block).and_then(|v| until(&v)) {
                            return Ok(t);
                        }
                    }
                }
            }
            Err(e @ (CliError::Denied(_) | CliError::NotFound(_))) => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The JSON `data` of one event block (comments and keep-alives have none).
pub fn data(block: &str) -> Option<Value> {
    let text: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_is_read_from_event_blocks() {
        assert_eq!(super::data("event: state\ndata: {\"a\":1}\n\n"), Some(serde_json::json!({"a": 1})));
        assert_eq!(super::data(": keep-alive\n\n"), None);
    }
}
