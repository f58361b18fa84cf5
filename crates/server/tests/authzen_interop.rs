//! Every case of the OpenID AuthZEN interop decision sets in `tests/data/authzen/` (copied from the AuthZEN interop suite)
//! (Todo 1.0-00, -01, -02 with batches, the API-gateway set) against the real server, with
//! the Cedar policies, schema, mapping and users in `examples/authzen-interop/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::TestServer;
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn interop(rel: &str) -> Value {
    let p = root().join("tests/data/authzen/interop").join(rel);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

async fn server_with_interop_policies() -> TestServer {
    let s = TestServer::start().await;
    let bundle = common::bundle_from_dir(&root().join("examples/authzen-interop"));
    let (st, v) =
        s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(serde_json::to_value(&bundle).unwrap())).await;
    assert_eq!(st, 201, "{v}");
    let ents: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("examples/authzen-interop/entities.json")).unwrap())
            .unwrap();
    let (st, v) = s.admin_post("/v1/entities", ents).await;
    assert_eq!(st, 200, "{v}");
    s
}

/// Runs every case of `file` (its `evaluation` and `evaluations` arrays); returns how many.
async fn run_cases(s: &TestServer, file: &str) -> usize {
    let d = interop(file);
    let mut n = 0;
    let mut failures = Vec::new();
    // `decisions` is the pre-1.0 name of the single-evaluation list.
    for (key, path) in [
        ("evaluation", "/access/v1/evaluation"),
        ("decisions", "/access/v1/evaluation"),
        ("evaluations", "/access/v1/evaluations"),
    ] {
        for case in d.get(key).and_then(Value::as_array).into_iter().flatten() {
            let (st, got) = s.call("POST", path, Some(&s.admin.clone()), Some(case["request"].clone())).await;
            let got = if key == "evaluations" { got["evaluations"].clone() } else { got["decision"].clone() };
            if st != 200 || got != case["expected"] {
                failures
                    .push(format!("{file} {key}: {} → {st} {got} (expected {})", case["request"], case["expected"]));
            }
            n += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {n} cases failed:\n{}", failures.len(), failures.join("\n"));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interop_decision_case_passes() {
    let s = server_with_interop_policies().await;
    let mut total = 0;
    for f in [
        "authzen-todo-backend/test/decisions.json",
        "authzen-todo-backend/test/decisions-authorization-api-1_0-00.json",
        "authzen-todo-backend/test/decisions-authorization-api-1_0-01.json",
        "authzen-todo-backend/test/decisions-authorization-api-1_0-02.json",
        "authzen-api-gateways/test-harness/test/decisions.json",
    ] {
        total += run_cases(&s, f).await;
    }
    eprintln!("AuthZEN interop decision cases passed: {total}");
    assert_eq!(total, 40 + 40 + 40 + 43 + 25);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_protocol_rules() {
    let s = server_with_interop_policies().await;
    let admin = s.admin.clone();
    let rick = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let jerry = "jerry@the-smiths.com";
    let eval = |sub: &str, action: &str| json!({"subject": {"type": "user", "id": sub}, "action": {"name": action}, "resource": {"type": "todo", "id": "t1"}});
    // Missing required fields: 400. Unknown fields: ignored.
    for bad in [
        json!({"action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "1"}}),
        json!({"subject": {"type": "user"}, "action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "1"}}),
        json!({"subject": {"type": "user", "id": "x"}, "action": {}, "resource": {"type": "todo", "id": "1"}}),
        json!({"subject": {"type": "user", "id": "x"}, "action": {"name": "a"}, "resource": {"id": "1"}}),
        json!({"subject": "user", "action": {"name": "a"}, "resource": {"type": "todo", "id": "1"}}),
    ] {
        let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&admin), Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad} → {v}");
    }
    let mut extra = eval(rick, "can_create_todo");
    extra["unknown_field"] = json!(1);
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&admin), Some(extra)).await;
    assert_eq!((st, v), (200, json!({"decision": true})));
    // A deny is a 200 with decision false.
    let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&admin), Some(eval(jerry, "can_create_todo"))).await;
    assert_eq!((st, v), (200, json!({"decision": false})));
    // Anonymous callers get nothing.
    let (st, _) = s.call("POST", "/access/v1/evaluation", None, Some(eval(rick, "can_create_todo"))).await;
    assert_eq!(st, 401);
    // X-Request-ID is echoed.
    let r = s
        .http
        .post(format!("{}/access/v1/evaluation", s.url))
        .bearer_auth(&admin)
        .header("x-request-id", "req-42")
        .json(&eval(rick, "can_read_todos"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    // Evaluations: defaults, the three semantics, and no array behaving like one evaluation.
    let batch = |sem: &str| {
        json!({
            "subject": {"type": "user", "id": jerry}, "resource": {"type": "todo", "id": "t1"},
            "options": {"evaluations_semantic": sem},
            "evaluations": [{"action": {"name": "can_read_todos"}}, {"action": {"name": "can_delete_todo"}}, {"action": {"name": "can_read_user"}, "resource": {"type": "user", "id": rick}}]
        })
    };
    let decisions = |v: &Value| {
        v["evaluations"].as_array().unwrap().iter().map(|d| d["decision"].as_bool().unwrap()).collect::<Vec<_>>()
    };
    let (_, v) = s.call("POST", "/access/v1/evaluations", Some(&admin), Some(batch("execute_all"))).await;
    assert_eq!(decisions(&v), [true, false, true]);
    let (_, v) = s.call("POST", "/access/v1/evaluations", Some(&admin), Some(batch("deny_on_first_deny"))).await;
    assert_eq!(decisions(&v), [true, false]);
    let (_, v) = s.call("POST", "/access/v1/evaluations", Some(&admin), Some(batch("permit_on_first_permit"))).await;
    assert_eq!(decisions(&v), [true]);
    let (st, _) = s.call("POST", "/access/v1/evaluations", Some(&admin), Some(batch("sometimes"))).await;
    assert_eq!(st, 400);
    let (st, v) = s.call("POST", "/access/v1/evaluations", Some(&admin), Some(eval(rick, "can_create_todo"))).await;
    assert_eq!((st, v), (200, json!({"decision": true})));
    // Discovery.
    let (st, v) = s.call("GET", "/.well-known/authzen-configuration", None, None).await;
    assert_eq!(st, 200);
    assert_eq!(v["policy_decision_point"], s.url.as_str());
    assert_eq!(v["access_evaluation_endpoint"], format!("{}/access/v1/evaluation", s.url));
    s.stop().await;
}

/// Built entities are reused only while the stored entity is unchanged: an update (of an
/// attribute, or of a parent's) changes the very next decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_entities_change_the_next_decision() {
    let s = TestServer::start().await;
    let bundle = json!({"policies": [{"name": "p.cedar", "source":
        "@id(\"editors\") permit (principal, action == Action::\"edit\", resource) when { principal in Group::\"editors\" };\n\
         @id(\"admins\") permit (principal, action == Action::\"edit\", resource) when { principal.role == \"admin\" };"}],
        "schema": "entity Group; entity User in [Group] { role: String }; entity Doc; \
                   action edit appliesTo { principal: [User], resource: [Doc] };"});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let push = |role: &str, parents: Value| json!({"entities": [{"uid": {"type": "User", "id": "u1"}, "attrs": {"role": role}, "parents": parents}]});
    let ev = json!({"subject": {"type": "User", "id": "u1"}, "action": {"name": "edit"}, "resource": {"type": "Doc", "id": "d1"}});
    let decide = || async {
        let (st, v) = s.call("POST", "/access/v1/evaluation", Some(&s.admin.clone()), Some(ev.clone())).await;
        assert_eq!(st, 200, "{v}");
        v["decision"].as_bool().unwrap()
    };
    assert_eq!(s.admin_post("/v1/entities", push("viewer", json!([]))).await.0, 200);
    assert!(!decide().await);
    assert!(!decide().await, "the same again, from the built-entity cache");
    assert_eq!(s.admin_post("/v1/entities", push("admin", json!([]))).await.0, 200);
    assert!(decide().await, "attribute changed");
    assert_eq!(s.admin_post("/v1/entities", push("viewer", json!([]))).await.0, 200);
    assert!(!decide().await, "attribute changed back");
    assert_eq!(s.admin_post("/v1/entities", push("viewer", json!([{"type": "Group", "id": "editors"}]))).await.0, 200);
    assert!(decide().await, "parent added");
    s.stop().await;
}
