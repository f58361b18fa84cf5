//! Containment's counters survive the governance tail changing hands between PostgreSQL
//! replicas: the replica that takes the job over rebuilds them from the audit log before it
//! reads on, so a deny-rate count nearly due on the first replica trips at the next denied
//! decision on the second (and not before). `/v1/status` shows who holds each job and how far
//! behind the audit log the tail is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use remit_store::postgres::testing::TempDb;
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("deploy.git")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"git")
when { principal in Workflow::"deploy" };
"#;

async fn decide(s: &TestServer, token: &str, tool: &str) -> bool {
    let body = json!({"token": token, "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool},
                      "context": {"data_sensitivity": "public"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v["decision"].as_bool().unwrap()
}

/// The tail's line in `s`'s status.
async fn tail(s: &TestServer) -> Value {
    let (st, v) = s.admin_get("/v1/status").await;
    assert_eq!(st, 200, "{v}");
    v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "governance.tail").cloned().unwrap_or(Value::Null)
}

/// Waits (a liveness bound, not a speed claim) until `ok` holds for `s`'s tail.
async fn until_tail(s: &TestServer, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let t = tail(s).await;
        if ok(&t) {
            return t;
        }
        assert!(Instant::now() < end, "{what}: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn workflow_state(s: &TestServer) -> String {
    s.admin_get("/v1/workflows/deploy").await.1["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_the_tail_over_keeps_the_counts() {
    let db = TempDb::create().await.unwrap();
    let kek = remit_token::Kek::generate_text();
    let a = TestServer::start_replica(&db.url, &kek, None).await;
    a.setup().await;
    let bundle = json!({"policies": [{"name": "tasks.cedar", "source": POLICIES}]});
    assert_eq!(a.call("PUT", "/v1/policies", Some(&a.admin.clone()), Some(bundle)).await.0, 201);
    // Six decisions in ten minutes, half of them denied, suspend the workflow.
    let rules = json!({"settings": {"containment": [{"signal": "deny_rate", "scope": "workflow", "window_secs": 600,
        "min_calls": 6, "ratio": 0.5, "action": "suspend_workflow"}]}, "reason": "contain probing"});
    let (st, v) = a.call("PUT", "/v1/workflows/deploy/governance", Some(&a.admin.clone()), Some(rules)).await;
    assert_eq!(st, 200, "{v}");
    let b = TestServer::start_replica(&db.url, &kek, Some(a.admin.clone())).await;
    let inst = a.join().await;
    let (_, token) = a.start_task(&inst).await;

    // Through A: two allowed, two denied — four calls, short of six. A's tail reads them.
    assert!(decide(&a, &token, "git").await && decide(&a, &token, "git").await);
    assert!(!decide(&a, &token, "prod").await && !decide(&a, &token, "prod").await);
    let t = until_tail(&a, "A's tail reads the decisions", |t| t["held_here"] == true && t["behind"] == 0).await;
    assert_eq!(t["held"], true, "{t}");
    assert_eq!(tail(&b).await["held_here"], false, "one holder");
    assert_eq!(workflow_state(&a).await, "active");

    // A goes away; B takes the tail over (its counters rebuilt from the audit log).
    a.stop().await;
    until_tail(&b, "B takes the tail over", |t| t["held_here"] == true && t["behind"] == 0).await;
    // The fifth decision (denied): five calls, still short.
    assert!(!decide(&b, &token, "prod").await);
    until_tail(&b, "B reads the fifth decision", |t| t["behind"] == 0).await;
    assert_eq!(workflow_state(&b).await, "active", "five calls are short of the rule's six");
    // The sixth: four of six denied, counted across both replicas' holds — the workflow is
    // suspended by containment.
    assert!(!decide(&b, &token, "prod").await);
    let end = Instant::now() + Duration::from_secs(30);
    while workflow_state(&b).await != "suspended" {
        assert!(Instant::now() < end, "the count did not survive the takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, trips) = b.admin_get("/v1/audit?action=containment.trip").await;
    let trip = &trips.as_array().unwrap()[0];
    let d: Value = serde_json::from_str(trip["detail"].as_str().unwrap()).unwrap();
    assert_eq!((d["evidence"]["calls"].as_u64(), d["evidence"]["denied"].as_u64()), (Some(6), Some(4)), "{d}");
    b.stop().await;
}
