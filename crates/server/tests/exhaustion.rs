//! Exhaustion without credentials, and errors that must be JSON: made-up methods cannot grow
//! the metrics, stalled or slow clients are cut off by timeouts, the public listener's
//! connection cap holds while the admin listener still answers, and every error Remit
//! produces after parsing is the JSON error shape with the right 4xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes on a new connection and returns the whole answer (until the server closes
/// or `wait` passes).
async fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn host(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_json(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let s = TestServer::start().await;
    for i in 0..40 {
        let method = format!("{}{i}", "X".repeat(4000));
        let req = format!("{method} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let answer = raw(&host(&s), req.as_bytes(), Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert_eq!(body_json(&answer)["error"], "method_not_allowed", "{answer}");
    }
    let resp = s.http.get(format!("{}/metrics", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(!text.contains("XXXX"), "a made-up method became a label");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(text.len() < 64 * 1024, "/metrics grew to {} bytes", text.len());
}

#[tokio::test]
async fn errors_after_parsing_are_json() {
    let s = TestServer::start().await;
    // 405 with a body.
    let (st, b) = s.call("DELETE", "/v1/workflows", Some(&s.admin.clone()), None).await;
    assert_eq!((st, b["error"].as_str()), (405, Some("method_not_allowed")), "{b}");
    // Invalid UTF-8 in a path segment.
    let req = "GET /v1/workflows/%FF%FE HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\nconnection: close\r\n\r\n";
    let answer = raw(&host(&s), req.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(body_json(&answer)["error"].is_string(), "{answer}");
    let req = format!(
        "GET /v1/workflows/%FF%FE HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        s.admin
    );
    let answer = raw(&host(&s), req.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(body_json(&answer)["error"], "bad_request", "{answer}");
    // The largest `after` finds nothing instead of failing.
    let (st, b) = s.admin_get(&format!("/v1/audit?after={}", u64::MAX)).await;
    assert_eq!((st, b.clone()), (200, json!([])), "{b}");
    // Remit's own URI and header limits answer in JSON, below hyper's.
    let long = "a".repeat(9000);
    let (st, b) = s.call("GET", &format!("/v1/workflows?{long}"), None, None).await;
    assert_eq!((st, b["error"].as_str()), (414, Some("uri_too_long")), "{b}");
    let resp = s.http.get(format!("{}/healthz", s.url)).header("x-big", "b".repeat(17_000)).send().await.unwrap();
    assert_eq!(resp.status(), 431);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"], "headers_too_large");
}

#[tokio::test]
async fn stalled_and_slow_clients_are_cut_off() {
    let s = TestServer::start_with(|c| {
        c.limits.header_read_timeout = Duration::from_millis(500);
        c.limits.body_read_timeout = Duration::from_millis(500);
    })
    .await;
    // Headers never finished: the server closes the connection (read_to_end returns).
    let mut c = TcpStream::connect(host(&s)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "a connection that never finished its headers stayed open");
    // An idle keep-alive connection is closed too.
    let mut c = TcpStream::connect(host(&s)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    // A body that never arrives: a JSON 408.
    let req = format!(
        "POST /v1/workflows HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        s.admin
    );
    let answer = raw(&host(&s), req.as_bytes(), Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(body_json(&answer)["error"], "request_timeout", "{answer}");
}

#[tokio::test]
async fn the_admin_listener_answers_while_the_public_one_is_full() {
    let s = TestServer::start_with(|c| c.limits.max_connections = 8).await;
    s.setup().await;
    // Fill the public listener with connections that never finish their headers.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut c = TcpStream::connect(host(&s)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        stalled.push(c);
    }
    // A public request on a new connection now waits in the backlog (the cap holds)…
    let fresh = reqwest::Client::new();
    let public = fresh.get(format!("{}/healthz", s.url)).timeout(Duration::from_millis(300)).send().await;
    assert!(public.is_err(), "the public listener served past its cap");
    // …while the admin listener (a Unix socket in the data directory) still works.
    let admin = reqwest::Client::builder().unix_socket(s.dir.path().join("admin.sock")).build().unwrap();
    let resp = admin
        .post("http://localhost/v1/workflows/deploy/suspend")
        .bearer_auth(&s.admin)
        .json(&json!({"reason": "flooded"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The admin listener is no anonymous back door.
    let resp = admin.get("http://localhost/v1/workflows").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    drop(stalled);
    let public = fresh.get(format!("{}/healthz", s.url)).timeout(Duration::from_secs(10)).send().await.unwrap();
    assert_eq!(public.status(), 200);
}
