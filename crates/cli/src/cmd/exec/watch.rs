//! Learning that the task ended: the server's per-task event stream
//! (`GET /v1/tasks/{id}/events`, server-sent events, followed by [`crate::sse`]). The server
//! pushes the end within the change feed's latency; there is no polling. An answer saying the
//! task or its instance is gone (401, 403, 404) is an end too.

use serde_json::Value;

use crate::client::Client;

/// Resolves with the reason once the task `task_id` is no longer live.
pub async fn task_ended(inst: &Client, task_id: &str) -> String {
    match crate::sse::follow(inst, &format!("/v1/tasks/{task_id}/events"), ended).await {
        Ok(reason) => reason,
        Err(e) => format!("no longer live ({e})"),
    }
}

/// The reason in one event's data, if it says the task is no longer live.
fn ended(v: &Value) -> Option<String> {
    if v.get("live").and_then(Value::as_bool) == Some(false) {
        let state = v.get("state").and_then(Value::as_str).unwrap_or("ended");
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or(state);
        return Some(reason.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn only_an_end_ends_the_watch() {
        assert_eq!(super::ended(&json!({"live": true, "state": "active"})), None);
        assert_eq!(
            super::ended(&json!({"live": false, "state": "revoked", "reason": "task revoked"})).as_deref(),
            Some("task revoked")
        );
    }
}
