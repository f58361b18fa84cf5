//! Every case of the AuthZEN interop search sets (search demo: subject, resource and action
//! search; IdP: resource search) against the real server, with the bundle in
//! `examples/authzen-search/` and each set's own users and records loaded as entities.
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

/// A server with the search bundle and `scenario`'s users and records (ids as strings;
/// only the attributes a policy may read: never the IdP's passwords).
async fn server(scenario: &str) -> TestServer {
    let s = TestServer::start().await;
    let bundle = common::bundle_from_dir(&root().join("examples/authzen-search"));
    let (st, v) =
        s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(serde_json::to_value(&bundle).unwrap())).await;
    assert_eq!(st, 201, "{v}");
    let id = |v: &Value| match &v["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut ents = Vec::new();
    for u in interop(&format!("{scenario}/data/users.json")).as_array().unwrap() {
        let mut attrs = json!({"login": id(u)});
        for k in ["role", "department"] {
            if let Some(v) = u.get(k) {
                attrs[k] = v.clone();
            }
        }
        ents.push(json!({"uid": {"type": "User", "id": id(u)}, "attrs": attrs}));
    }
    for r in interop(&format!("{scenario}/data/records.json")).as_array().unwrap() {
        let mut attrs = json!({});
        for k in ["owner", "department"] {
            if let Some(v) = r.get(k) {
                attrs[k] = v.clone();
            }
        }
        ents.push(json!({"uid": {"type": "Record", "id": id(r)}, "attrs": attrs}));
    }
    for chunk in ents.chunks(100) {
        let (st, v) = s.admin_post("/v1/entities", json!({"entities": chunk})).await;
        assert_eq!(st, 200, "{v}");
    }
    s
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_array().map(|a| a.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
    out.sort();
    out
}

/// Runs every case of `file` against `/access/v1/search/{kind}`; results compared sorted,
/// and nothing else in the answer (no `page` for a request that never paginated), as the
/// official runner compares whole responses.
async fn run(s: &TestServer, file: &str, key: &str, kind: &str) -> usize {
    let mut failures = Vec::new();
    let cases = interop(file)[key].as_array().cloned().unwrap_or_default();
    for case in &cases {
        let (st, got) = s
            .call("POST", &format!("/access/v1/search/{kind}"), Some(&s.admin.clone()), Some(case["request"].clone()))
            .await;
        if st != 200
            || sorted(&got["results"]) != sorted(&case["expected"]["results"])
            || got.as_object().map(|o| o.len()) != Some(1)
        {
            failures.push(format!("{kind}: {} → {st} {got} (expected {})", case["request"], case["expected"]));
        }
    }
    assert!(failures.is_empty(), "{} of {} {file} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    cases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interop_search_case_passes() {
    let s = server("authzen-search-demo").await;
    let mut n = 0;
    n += run(&s, "authzen-search-demo/test/subject/results.json", "evaluation", "subject").await;
    n += run(&s, "authzen-search-demo/test/resource/results.json", "evaluation", "resource").await;
    n += run(&s, "authzen-search-demo/test/action/results.json", "evaluation", "action").await;
    s.stop().await;
    let s = server("authzen-idp").await;
    n += run(&s, "authzen-idp/test-harness/src/results.json", "search", "resource").await;
    eprintln!("AuthZEN interop search cases passed: {n}");
    assert_eq!(n, 60 + 18 + 120 + 6);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_and_rejects_incomplete_requests() {
    let s = server("authzen-search-demo").await;
    let admin = s.admin.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let body = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"},
                          "page": {"token": token, "limit": 7}});
        let (st, v) = s.call("POST", "/access/v1/search/resource", Some(&admin), Some(body)).await;
        assert_eq!(st, 200, "{v}");
        let page = v["results"].as_array().unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        token = v["page"]["next_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 20, "alice (a manager) sees every record exactly once across pages: {seen:?}");
    let (st, _) = s
        .call(
            "POST",
            "/access/v1/search/resource",
            Some(&admin),
            Some(json!({"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record"}})),
        )
        .await;
    assert_eq!(st, 400, "action.name is required for a resource search");
    let (st, _) = s.call("POST", "/access/v1/search/subject", None, Some(json!({}))).await;
    assert_eq!(st, 401);
    let (_, v) = s.call("GET", "/.well-known/authzen-configuration", None, None).await;
    assert_eq!(v["search_resource_endpoint"], format!("{}/access/v1/search/resource", s.url));
    s.stop().await;
}
