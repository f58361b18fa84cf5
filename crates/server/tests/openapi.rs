//! `GET /openapi.json` is a valid, fully typed OpenAPI 3.1 document of the whole API, fetched
//! from the real server: unique operation ids, one human-readable tag per operation, a
//! description on every response, a schema on every success that has a body, and every
//! route the router serves documented (and served). The test venv's
//! `openapi-spec-validator` then validates it (0 errors), and `jsonschema` checks real
//! responses of a full flow against the schemas the document declares for them (strictly:
//! a member the schema does not declare is an error).
//!
//! Python comes from `REMIT_TEST_PYTHON` (`scripts/test.sh` sets it), else from
//! `scripts/python-env.sh`; without it the test fails, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::TestServer;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test venv's interpreter.
fn python() -> String {
    common::python()
}

/// Runs `code` with `args` under the test venv's Python; returns (success, stdout + stderr).
fn run_python(code: &str, args: &[&Path]) -> (bool, String) {
    let py = python();
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The routes `api::router` serves, read from its source: (path, lowercase method).
fn router_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api/mod.rs");
    let start = src.find("pub fn router(").expect("api::router");
    let mut rest = &src[start..];
    let mut out = BTreeSet::new();
    while let Some(i) = rest.find(".route(\"") {
        rest = &rest[i + ".route(\"".len()..];
        let end = rest.find('"').unwrap();
        let path = rest[..end].to_owned();
        // The handler expression, up to the `)` that closes `.route(`.
        let mut depth = 1;
        let mut close = 0;
        for (j, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let expr = &rest[end..close];
        let mut found = false;
        for m in METHODS {
            let direct = expr.trim_start_matches(['"', ',', ' ']).starts_with(&format!("{m}("));
            if direct || expr.contains(&format!(".{m}(")) {
                out.insert((path.clone(), m.to_owned()));
                found = true;
            }
        }
        assert!(found, "no method found for route {path}: {expr}");
        rest = &rest[close..];
    }
    assert!(out.len() > 40, "parsed only {} routes from api/mod.rs", out.len());
    out
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m.to_owned(), op.clone()));
            }
        }
    }
    out
}

async fn fetch_doc(s: &TestServer) -> Value {
    let resp = s.http.get(format!("{}/openapi.json", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_valid_typed_and_complete() {
    let s = TestServer::start().await;
    let doc = fetch_doc(&s).await;
    let mut problems = Vec::new();

    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "openapi: {}", doc["openapi"]);
    let declared_tags: BTreeSet<&str> =
        doc["tags"].as_array().expect("top-level tags").iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in doc["tags"].as_array().unwrap() {
        if t["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("tag {} has no description", t["name"]));
        }
    }

    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, method, op) in operations(&doc) {
        let here = format!("{} {path}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) if !id.is_empty() => ids.entry(id.to_owned()).or_default().push(here.clone()),
            _ => problems.push(format!("{here}: no operationId")),
        }
        match op["tags"].as_array().map(Vec::as_slice) {
            Some([t]) => {
                let t = t.as_str().unwrap_or_default();
                if t.contains("::") || !declared_tags.contains(t) {
                    problems.push(format!("{here}: tag `{t}` is a module path or not declared"));
                }
            }
            other => problems.push(format!("{here}: expected one tag, got {other:?}")),
        }
        if op["summary"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{here}: no summary"));
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        // A success is a 2xx, or a 303 for the browser redirects of a sign-in.
        if !responses.keys().any(|k| k.starts_with('2') || k == "303") {
            problems.push(format!("{here}: no success response"));
        }
        for (status, r) in &responses {
            if r["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
                problems.push(format!("{here} {status}: no description"));
            }
            let content = r["content"].as_object();
            // RFC 8935: a SET receiver's 202 has no body.
            let empty = status == "204" || (path == "/ssf/receive" && status == "202");
            if status.starts_with('2') && !empty {
                let Some(content) = content.filter(|c| !c.is_empty()) else {
                    problems.push(format!("{here} {status}: no content"));
                    continue;
                };
                for (media, m) in content {
                    let sse = media == "text/event-stream";
                    if m["schema"].as_object().is_none_or(|o| o.is_empty()) {
                        problems.push(format!("{here} {status} {media}: no schema"));
                    }
                    if !sse && m["schema"]["$ref"].is_null() && m["schema"]["type"].is_null() {
                        problems.push(format!("{here} {status} {media}: untyped schema {}", m["schema"]));
                    }
                }
            } else if status.starts_with('4') || status.starts_with('5') {
                let schema = &r["content"]["application/json"]["schema"]["$ref"];
                // The token endpoint answers errors in OAuth's own shape (RFC 6749 §5.2).
                let oauth = path == "/oauth2/token" && schema == "#/components/schemas/OAuthErrorBody";
                // A SET receiver answers errors in RFC 8935's shape.
                let set = path == "/ssf/receive" && schema == "#/components/schemas/SetError";
                if schema != "#/components/schemas/ErrorBody" && !oauth && !set {
                    problems.push(format!("{here} {status}: not an ErrorBody ({r})"));
                }
            }
        }
    }
    for (id, at) in &ids {
        if at.len() > 1 {
            problems.push(format!("operationId `{id}` is used by {at:?}"));
        }
    }

    // The router and the document agree, both ways.
    let routed = router_routes();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(p, m, _)| (p, m)).collect();
    for (p, m) in routed.difference(&documented) {
        problems.push(format!("{} {p} is served but not documented", m.to_uppercase()));
    }
    for (p, m) in documented.difference(&routed) {
        problems.push(format!("{} {p} is documented but not in api::router", m.to_uppercase()));
    }
    // …and the server really answers each of them (not the 404/405 fallbacks).
    for (p, m) in &routed {
        let concrete = p.replace("{id}", "x").replace("{name}", "x");
        let resp =
            s.http.request(m.to_uppercase().parse().unwrap(), format!("{}{concrete}", s.url)).send().await.unwrap();
        let st = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if st == 405 || (st == 404 && body["message"] == "no such endpoint") {
            problems.push(format!("{} {p}: the server answers {st} {body}", m.to_uppercase()));
        }
    }
    assert!(problems.is_empty(), "{} problems in /openapi.json:\n{}", problems.len(), problems.join("\n"));

    // The reference validator.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (ok, out) = run_python(VALIDATE_SPEC, &[&file]);
    assert!(ok, "openapi-spec-validator rejects /openapi.json:\n{out}");
    assert!(out.contains("0 errors"), "{out}");
    println!("openapi-spec-validator: {}", out.trim());
    s.stop().await;
}

const VALIDATE_SPEC: &str = r#"
import json, sys
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator
spec = json.load(open(sys.argv[1]))
errs = list(OpenAPIV31SpecValidator(spec).iter_errors())
for e in errs:
    print("/".join(str(p) for p in e.path) + ": " + e.message)
print(f"{len(errs)} errors")
sys.exit(1 if errs else 0)
"#;

/// Checks each sample (a real response) against the schema the document declares for its
/// path, method, status and media type. Object schemas are closed first (members they do
/// not declare are errors), so a field missing from the document is caught too.
const VALIDATE_SAMPLES: &str = r#"
import copy, json, sys
from jsonschema import Draft202012Validator
doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))
def close(s):
    if isinstance(s, dict):
        if "properties" in s and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for v in s.values():
            close(v)
    elif isinstance(s, list):
        for v in s:
            close(v)
    return s
components = close(copy.deepcopy(doc.get("components", {})))
problems, checked = [], 0
for smp in samples:
    where = f'{smp["method"].upper()} {smp["path"]} {smp["status"]} {smp["media"]}'
    op = doc["paths"].get(smp["path"], {}).get(smp["method"])
    if op is None:
        problems.append(f"{where}: no such operation"); continue
    resp = op["responses"].get(str(smp["status"]))
    if resp is None:
        problems.append(f"{where}: status not documented"); continue
    if smp["media"] == "none":
        # No content: the status must be documented without any.
        if resp.get("content"):
            problems.append(f"{where}: documented with content {list(resp['content'])}")
        checked += 1; continue
    media = resp.get("content", {}).get(smp["media"])
    if media is None:
        problems.append(f"{where}: media type not documented ({list(resp.get('content', {}))})"); continue
    schema = {"allOf": [close(copy.deepcopy(media["schema"]))], "components": components}
    for e in Draft202012Validator(schema).iter_errors(smp["body"]):
        problems.append(f"{where}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message[:300]}")
    checked += 1
for p in problems[:80]:
    print(p)
print(f"{checked} samples checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
"#;

/// Real responses, each with the documented path it answers.
struct Samples<'a> {
    s: &'a TestServer,
    out: Vec<Value>,
}

impl Samples<'_> {
    /// Sends a request; records the answer under `template` (the documented path); returns
    /// the status and JSON body.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send(method, template, path, bearer, body, None).await
    }

    async fn send(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
        operator: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self.s.http.request(method.parse().unwrap(), format!("{}{path}", self.s.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        if let Some(o) = operator {
            r = r.header("x-remit-operator", o);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        if status == 204 {
            assert!(resp.bytes().await.unwrap().is_empty(), "{method} {path}: a 204 with a body");
            self.push(method, template, status, "none", Value::Null);
            return (status, Value::Null);
        }
        let media = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let text = resp.text().await.unwrap();
        if let Some(m) = media.strip_suffix("; charset=utf-8").filter(|m| m.starts_with("text/")) {
            self.push(method, template, status, m, Value::String(text.clone()));
            return (status, Value::String(text));
        }
        let v: Value = if media == "application/jsonl" { Value::Null } else { serde_json::from_str(&text).unwrap() };
        if media == "application/jsonl" {
            for line in text.lines() {
                self.push(method, template, status, "application/jsonl", serde_json::from_str(line).unwrap());
            }
        } else {
            assert_eq!(media, "application/json", "{method} {path}");
            self.push(method, template, status, "application/json", v.clone());
        }
        (status, v)
    }

    fn push(&mut self, method: &str, path: &str, status: u16, media: &str, body: Value) {
        self.out.push(
            json!({"method": method.to_lowercase(), "path": path, "status": status, "media": media, "body": body}),
        );
    }

    async fn form(&mut self, path: &str, bearer: Option<&str>, token: &str) -> Value {
        let mut r = self.s.http.post(format!("{}{path}", self.s.url)).form(&[("token", token)]);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        self.push("post", path, status, "application/json", v.clone());
        v
    }

    /// Posts a form with any fields, unauthenticated (the token endpoint).
    async fn form_fields(&mut self, path: &str, fields: &[(&str, String)]) -> (u16, Value) {
        let resp = self.s.http.post(format!("{}{path}", self.s.url)).form(fields).send().await.unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        self.push("post", path, status, "application/json", v.clone());
        (status, v)
    }

    /// The first `data:` of an SSE stream (then the stream is dropped).
    async fn first_event(&mut self, template: &str, path: &str, bearer: &str) {
        let mut resp = self.s.http.get(format!("{}{path}", self.s.url)).bearer_auth(bearer).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut buf = String::new();
        let data = loop {
            let chunk = resp.chunk().await.unwrap().expect("an event before the stream ends");
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(d) = buf.lines().find_map(|l| l.strip_prefix("data:")).filter(|_| buf.contains("\n\n")) {
                break d.trim().to_owned();
            }
        };
        self.push("get", template, 200, "text/event-stream", serde_json::from_str(&data).unwrap());
    }
}

const TASK_POLICIES: &str = r#"
@id("read")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"jira.read")
when { principal in Workflow::"deploy" };

@id("tickets")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"tickets")
when { principal in Workflow::"deploy" };

@id("write")
@approval("writing to Jira needs the workflow owner's approval")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"jira.write")
when { principal in Workflow::"deploy" };
"#;

const APPROVAL_POLICY: &str = r#"@id("todo.viewer-delete-with-approval")
@approval("a viewer deleting a todo needs a human's approval")
permit (principal is Human, action == Action::"can_delete_todo", resource is Todo)
when { principal has roles && principal.roles.contains("viewer") };"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_their_declared_schemas() {
    let s = TestServer::start_with(|c| c.trust_domains.data = Some("data.remit.local".into())).await;
    let admin = s.admin.clone();
    let a = Some(admin.as_str());
    let mut x = Samples { s: &s, out: Vec::new() };

    // Anonymous documents and health.
    for p in [
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/.well-known/spiffe-bundle",
        "/.well-known/openid-configuration",
        "/.well-known/authzen-configuration",
        "/openapi.json",
    ] {
        assert_eq!(x.call("GET", p, p, None, None).await.0, 200, "{p}");
    }
    for (path, p, st) in [
        ("/trust-domains/{trust_domain}/jwks.json", "/trust-domains/data.remit.local/jwks.json", 200),
        ("/trust-domains/{trust_domain}/jwks.json", "/trust-domains/nowhere.example/jwks.json", 404),
        ("/trust-domains/{trust_domain}/spiffe-bundle", "/trust-domains/data.remit.local/spiffe-bundle", 200),
        ("/trust-domains/{trust_domain}/spiffe-bundle", "/trust-domains/remit.local/spiffe-bundle", 200),
    ] {
        assert_eq!(x.call("GET", path, p, None, None).await.0, st, "{p}");
    }
    let metrics = s.http.get(format!("{}/metrics", s.url)).bearer_auth(&admin).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    x.push("get", "/metrics", 200, "text/plain", Value::String(metrics.text().await.unwrap()));

    // Errors are ErrorBody.
    assert_eq!(x.call("GET", "/v1/workflows", "/v1/workflows", None, None).await.0, 401);
    assert_eq!(x.call("GET", "/v1/workflows/{name}", "/v1/workflows/nope", a, None).await.0, 404);
    assert_eq!(x.call("POST", "/v1/workflows", "/v1/workflows", a, Some(json!({"name": "Bad"}))).await.0, 400);
    assert_eq!(x.call("GET", "/v1/policies", "/v1/policies", a, None).await.0, 200, "no bundle yet");

    // Workflows, agents, instances, tasks.
    let wf = json!({"name": "deploy", "purpose": "ship releases", "owner": "alice@example.com",
                    "max_task_ttl_seconds": 600, "ceiling": "confidential", "allowed_tools": ["jira.read", "jira.write"]});
    assert_eq!(x.call("POST", "/v1/workflows", "/v1/workflows", a, Some(wf.clone())).await.0, 201);
    assert_eq!(x.call("POST", "/v1/workflows", "/v1/workflows", a, Some(wf)).await.0, 409);
    let agent = json!({"name": "deploy-bot", "owner": "bob@example.com", "workflows": ["deploy"]});
    assert_eq!(x.call("POST", "/v1/agents", "/v1/agents", a, Some(agent)).await.0, 201);
    for (t, p) in [
        ("/v1/workflows", "/v1/workflows"),
        ("/v1/workflows/{name}", "/v1/workflows/deploy"),
        ("/v1/agents", "/v1/agents"),
        ("/v1/agents/{name}", "/v1/agents/deploy-bot"),
        ("/v1/status", "/v1/status"),
    ] {
        assert_eq!(x.call("GET", t, p, a, None).await.0, 200, "{p}");
    }
    let tools = json!({"tools": [], "reason": "no restriction beyond policy"});
    let (st, v) = x.call("PUT", "/v1/workflows/{name}/tools", "/v1/workflows/deploy/tools", a, Some(tools)).await;
    assert_eq!(st, 200, "{v}");
    let (st, jt) =
        x.call("POST", "/v1/agents/{name}/join-tokens", "/v1/agents/deploy-bot/join-tokens", a, Some(json!({}))).await;
    assert_eq!(st, 201);
    let (st, inst) = x.call("POST", "/v1/join", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    assert_eq!(st, 201, "{inst}");
    let (st, inst) = x.call("POST", "/v1/instances/renew", "/v1/instances/renew", inst["token"].as_str(), None).await;
    assert_eq!(st, 200, "{inst}");
    let it = inst["token"].as_str().unwrap().to_owned();
    let task_body =
        json!({"workflow": "deploy", "intent": "triage", "audience": ["remit", "jira"], "ttl_seconds": 300});
    let (st, t) = x.call("POST", "/v1/tasks", "/v1/tasks", Some(&it), Some(task_body.clone())).await;
    assert_eq!(st, 201, "{t}");
    let (task, tt) = (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned());
    assert_eq!(x.call("GET", "/v1/tasks", "/v1/tasks", Some(&it), None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/tasks/{id}", &format!("/v1/tasks/{task}"), a, None).await.0, 200);
    x.first_event("/v1/tasks/{id}/events", &format!("/v1/tasks/{task}/events"), &admin).await;
    assert_eq!(x.form("/oauth2/introspect", a, &tt).await["active"], true);
    assert_eq!(x.form("/oauth2/introspect", a, &it).await["active"], true);
    assert_eq!(x.form("/oauth2/introspect", a, "not-a-token").await, json!({"active": false}));

    // Policies and entities: the AuthZEN interop bundle, an approval gate, the task policies.
    let dir = repo().join("examples/authzen-interop");
    let mut bundle = common::bundle_from_dir(&dir);
    for (name, source) in [("approval.cedar", APPROVAL_POLICY), ("tasks.cedar", TASK_POLICIES)] {
        bundle.policies.push(remit_policy::PolicyFile { name: name.into(), source: source.into() });
    }
    let (st, v) = x.call("PUT", "/v1/policies", "/v1/policies", a, Some(serde_json::to_value(&bundle).unwrap())).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(x.call("GET", "/v1/policies", "/v1/policies", a, None).await.0, 200);
    let ents: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("entities.json")).unwrap()).unwrap();
    assert_eq!(x.call("POST", "/v1/entities", "/v1/entities", a, Some(ents)).await.0, 200);

    // Task decisions: an allow with its tool, an approval required, a pending retry.
    let ask = |tool: &str, approval: Option<&str>| {
        let mut b = json!({"action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool}, "context": {}});
        if let Some(id) = approval {
            b["approval"] = json!(id);
        }
        b
    };
    let (st, v) = x.call("POST", "/v1/decisions", "/v1/decisions", Some(&tt), Some(ask("jira.read", None))).await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("allow")), "{v}");
    let (_, v) = x.call("POST", "/v1/decisions", "/v1/decisions", Some(&tt), Some(ask("jira.write", None))).await;
    assert_eq!(v["outcome"], "approval_required", "{v}");
    let task_approval = v["approval"]["id"].as_str().unwrap().to_owned();
    let (_, v) = x
        .call("POST", "/v1/decisions", "/v1/decisions", Some(&tt), Some(ask("jira.write", Some(&task_approval))))
        .await;
    assert_eq!(v["outcome"], "pending", "{v}");
    let other =
        json!({"token": "not-a-token", "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": "x"}});
    let (_, v) = x.call("POST", "/v1/decisions", "/v1/decisions", a, Some(other)).await;
    assert_eq!(v["outcome"], "deny", "{v}");
    let approval_path = format!("/v1/approvals/{task_approval}");
    x.first_event("/v1/approvals/{id}/events", &format!("{approval_path}/events"), &tt).await;

    // AuthZEN: allow, deny, approval required, pending; batches; searches; an explanation.
    let eval = |action: &str, subject: &str, ctx: Value| {
        json!({"subject": {"type": "user", "id": subject}, "action": {"name": action},
               "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "rick@the-citadel.com"}}, "context": ctx})
    };
    let ev = "/access/v1/evaluation";
    let (_, v) = x.call("POST", ev, ev, a, Some(eval("can_read_todos", "rick@the-citadel.com", json!({})))).await;
    assert_eq!(v, json!({"decision": true}));
    let (_, v) = x.call("POST", ev, ev, a, Some(eval("can_delete_todo", "morty@the-citadel.com", json!({})))).await;
    assert_eq!(v, json!({"decision": false}));
    let (_, v) = x.call("POST", ev, ev, a, Some(eval("can_delete_todo", "jerry@the-smiths.com", json!({})))).await;
    assert_eq!(v["context"]["approval_required"], true, "{v}");
    let authzen_approval = v["context"]["approval_id"].as_str().unwrap().to_owned();
    let retry = eval("can_delete_todo", "jerry@the-smiths.com", json!({"remit_approval": authzen_approval}));
    let (_, v) = x.call("POST", ev, ev, a, Some(retry)).await;
    assert_eq!(v["context"]["approval_pending"], true, "{v}");
    let evs = "/access/v1/evaluations";
    let batch = json!({"subject": {"type": "user", "id": "rick@the-citadel.com"},
                       "resource": {"type": "todo", "id": "t1"},
                       "evaluations": [{"action": {"name": "can_read_todos"}}, {"action": {"name": "can_delete_todo"}},
                                       {"subject": {"type": "user", "id": "jerry@the-smiths.com"},
                                        "action": {"name": "can_delete_todo"}}],
                       "options": {"evaluations_semantic": "execute_all"}});
    let (_, v) = x.call("POST", evs, evs, a, Some(batch)).await;
    assert_eq!(v["evaluations"].as_array().map(Vec::len), Some(3), "{v}");
    let (_, v) = x.call("POST", evs, evs, a, Some(eval("can_read_todos", "rick@the-citadel.com", json!({})))).await;
    assert_eq!(v, json!({"decision": true}));
    let search = |kind: &str, body: Value| (format!("/access/v1/search/{kind}"), body);
    for (p, body) in [
        search(
            "subject",
            json!({"subject": {"type": "user"}, "action": {"name": "can_read_todos"},
                   "resource": {"type": "todo", "id": "t1"}, "page": {"limit": 1}}),
        ),
        search(
            "subject",
            json!({"subject": {"type": "user"}, "action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "t1"}}),
        ),
        search(
            "resource",
            json!({"subject": {"type": "user", "id": "rick@the-citadel.com"}, "action": {"name": "can_read_user"},
                   "resource": {"type": "user"}}),
        ),
        search(
            "action",
            json!({"subject": {"type": "user", "id": "rick@the-citadel.com"}, "resource": {"type": "todo", "id": "t1"}}),
        ),
    ] {
        let (st, v) = x.call("POST", &p, &p, a, Some(body)).await;
        assert_eq!(st, 200, "{p}: {v}");
        assert!(!v["results"].as_array().unwrap().is_empty(), "{p}: {v}");
    }
    let ex = "/v1/decisions/explain";
    let (_, v) = x.call("POST", ex, ex, a, Some(eval("can_delete_todo", "jerry@the-smiths.com", json!({})))).await;
    assert_eq!(v["outcome"], "approval_required", "{v}");

    // Approvals: listed, read, approved and denied by a named human.
    assert_eq!(x.call("GET", "/v1/approvals", "/v1/approvals?state=pending", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/approvals/{id}", &approval_path, Some(&tt), None).await.0, 200);
    let reason = Some(json!({"reason": "checked"}));
    let (st, v) = x
        .send(
            "POST",
            "/v1/approvals/{id}/approve",
            &format!("{approval_path}/approve"),
            a,
            reason.clone(),
            Some("alice@example.com"),
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("approved")), "{v}");
    let (st, _) = x
        .send(
            "POST",
            "/v1/approvals/{id}/approve",
            &format!("{approval_path}/approve"),
            a,
            reason.clone(),
            Some("alice@example.com"),
        )
        .await;
    assert_eq!(st, 409);
    let deny = format!("/v1/approvals/{authzen_approval}/deny");
    let (st, v) = x.send("POST", "/v1/approvals/{id}/deny", &deny, a, reason.clone(), Some("carol@example.com")).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("denied")), "{v}");
    assert_eq!(x.call("GET", "/v1/approvals/{id}", &approval_path, a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/approvals", "/v1/approvals", a, None).await.0, 200);

    // Workload registration entries.
    let entry = json!({"selectors": ["unix:uid:1000", "unix:path:/usr/local/bin/deploy-bot"], "agent": "deploy-bot",
                       "hint": "internal"});
    let (st, e) = x.call("POST", "/v1/entries", "/v1/entries", a, Some(entry.clone())).await;
    assert_eq!(st, 201, "{e}");
    assert_eq!(x.call("POST", "/v1/entries", "/v1/entries", a, Some(entry)).await.0, 409);
    let bad = json!({"selectors": ["unix:uid:-1"], "agent": "deploy-bot"});
    assert_eq!(x.call("POST", "/v1/entries", "/v1/entries", a, Some(bad)).await.0, 400);
    let ghost = json!({"selectors": ["unix:uid:7"], "agent": "ghost"});
    assert_eq!(x.call("POST", "/v1/entries", "/v1/entries", a, Some(ghost)).await.0, 404);
    assert_eq!(x.call("GET", "/v1/entries", "/v1/entries", a, None).await.0, 200);
    let ep = format!("/v1/entries/{}", e["id"].as_str().unwrap());
    assert_eq!(x.call("DELETE", "/v1/entries/{id}", &ep, a, None).await.0, 200);
    assert_eq!(x.call("DELETE", "/v1/entries/{id}", &ep, a, None).await.0, 404);

    // Tools and the token exchange (its errors are OAuth's own shape).
    let tool = json!({"name": "tickets", "audience": "https://tickets.example", "scopes": ["call_tool", "admin"],
                      "owner": "carol@example.com"});
    assert_eq!(x.call("POST", "/v1/tools", "/v1/tools", a, Some(tool.clone())).await.0, 201);
    assert_eq!(x.call("POST", "/v1/tools", "/v1/tools", a, Some(tool)).await.0, 409);
    assert_eq!(x.call("GET", "/v1/tools", "/v1/tools", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/tools/{name}", "/v1/tools/tickets", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/tools/{name}", "/v1/tools/nope", a, None).await.0, 404);
    // Its secrets (write-only) and the leak guard.
    let sp = "/v1/tools/{tool}/secrets/{name}";
    let secret = json!({"value": "tk_live_0123456789abcdef", "overlap_seconds": 60});
    assert_eq!(x.call("PUT", sp, "/v1/tools/tickets/secrets/api-key", a, Some(secret.clone())).await.0, 201);
    assert_eq!(x.call("PUT", sp, "/v1/tools/nope/secrets/api-key", a, Some(secret)).await.0, 404);
    assert_eq!(x.call("PUT", sp, "/v1/tools/tickets/secrets/api-key", a, Some(json!({}))).await.0, 400);
    assert_eq!(x.call("GET", "/v1/tools/{tool}/secrets", "/v1/tools/tickets/secrets", a, None).await.0, 200);
    let scan = json!({"text": "key tk_live_0123456789abcdef and AKIAIOSFODNN7EXAMPLE"});
    assert_eq!(x.call("POST", "/v1/leak-scan", "/v1/leak-scan", a, Some(scan)).await.0, 200);
    assert_eq!(x.call("DELETE", sp, "/v1/tools/tickets/secrets/api-key?reason=test", a, None).await.0, 200);
    assert_eq!(x.call("DELETE", sp, "/v1/tools/tickets/secrets/api-key?reason=test", a, None).await.0, 404);
    // Leases (made on the proxy listener; none here): the listing, and unknown or bad ids.
    assert_eq!(x.call("GET", "/v1/leases", "/v1/leases?state=revoking&stuck=true", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/leases", "/v1/leases?state=gone", a, None).await.0, 400);
    let lp = "/v1/leases/l-00000000000000000000000000000000";
    assert_eq!(x.call("GET", "/v1/leases/{id}", lp, a, None).await.0, 404);
    assert_eq!(x.call("GET", "/v1/leases/{id}", "/v1/leases/nope", a, None).await.0, 400);
    let rp = format!("{lp}/revoke");
    assert_eq!(x.call("POST", "/v1/leases/{id}/revoke", &rp, a, Some(json!({"reason": "x"}))).await.0, 404);
    assert_eq!(
        x.call("GET", "/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server", None, None)
            .await
            .0,
        200
    );
    let exchange = |scope: &'static str| {
        vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange".to_owned()),
            ("subject_token", tt.clone()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt".to_owned()),
            ("audience", "tickets".to_owned()),
            ("scope", scope.to_owned()),
        ]
    };
    let (st, v) = x.form_fields("/oauth2/token", &exchange("call_tool")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(x.form_fields("/oauth2/token", &exchange("admin")).await.0, 400);
    assert_eq!(x.form_fields("/oauth2/token", &exchange("bad\\")).await.0, 400);
    let owner = Some(json!({"owner": "dave@example.com", "reason": "handover"}));
    assert_eq!(x.call("PUT", "/v1/tools/{name}/owner", "/v1/tools/tickets/owner", a, owner).await.0, 200);
    let why = Some(json!({"reason": "drill"}));
    assert_eq!(x.call("POST", "/v1/tools/{name}/disable", "/v1/tools/tickets/disable", a, why.clone()).await.0, 200);
    assert_eq!(x.call("POST", "/v1/tools/{name}/disable", "/v1/tools/tickets/disable", a, why).await.0, 409);

    // Kill switches and the task lifecycle.
    let kill = Some(json!({"reason": "drill"}));
    let (_, t2) = x.call("POST", "/v1/tasks", "/v1/tasks", Some(&it), Some(task_body.clone())).await;
    let t2 = t2["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(x.call("POST", "/v1/tasks/{id}/complete", &format!("/v1/tasks/{task}/complete"), a, None).await.0, 200);
    assert_eq!(x.call("POST", "/v1/tasks/{id}/complete", &format!("/v1/tasks/{task}/complete"), a, None).await.0, 409);
    assert_eq!(
        x.call("POST", "/v1/tasks/{id}/revoke", &format!("/v1/tasks/{t2}/revoke"), a, kill.clone()).await.0,
        200
    );
    for (t, p) in [
        ("/v1/workflows/{name}/suspend", "/v1/workflows/deploy/suspend"),
        ("/v1/workflows/{name}/resume", "/v1/workflows/deploy/resume"),
        ("/v1/agents/{name}/disable", "/v1/agents/deploy-bot/disable"),
        ("/v1/agents/{name}/enable", "/v1/agents/deploy-bot/enable"),
    ] {
        assert_eq!(x.call("POST", t, p, a, kill.clone()).await.0, 200, "{p}");
    }
    let (_, jt) = x
        .call(
            "POST",
            "/v1/agents/{name}/join-tokens",
            "/v1/agents/deploy-bot/join-tokens",
            a,
            Some(json!({"ttl_seconds": 60})),
        )
        .await;
    let (_, inst2) = x.call("POST", "/v1/join", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
    let i2 = inst2["instance_id"].as_str().unwrap();
    assert_eq!(
        x.call("POST", "/v1/instances/{id}/revoke", &format!("/v1/instances/{i2}/revoke"), a, kill).await.0,
        200
    );
    assert_eq!(x.form("/oauth2/revoke", None, &it).await, json!({}));
    assert_eq!(x.call("POST", "/v1/keys/rotate", "/v1/keys/rotate", a, None).await.0, 200);

    // The audit log.
    assert_eq!(x.call("POST", "/v1/audit/checkpoint", "/v1/audit/checkpoint", a, None).await.0, 200);
    let (_, v) = x.call("POST", "/v1/audit/checkpoint", "/v1/audit/checkpoint", a, None).await;
    assert!(v["checkpoint"].is_null() || v["checkpoint"].is_object(), "{v}");
    let (_, v) = x.call("POST", "/v1/audit/verify", "/v1/audit/verify", a, None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(x.call("GET", "/v1/audit", "/v1/audit?limit=10000", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/audit/export", "/v1/audit/export?limit=50", a, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/audit", "/v1/audit?since=yesterday", a, None).await.0, 400);

    // Humans and sessions (signing in through a real provider: tests/human_sign_in.rs).
    let (st, p) = x.call("GET", "/v1/auth/providers", "/v1/auth/providers", None, None).await;
    assert_eq!((st, p), (200, json!([])));
    assert_eq!(x.call("GET", "/v1/auth/oidc/{provider}/login", "/v1/auth/oidc/nope/login", None, None).await.0, 404);
    assert_eq!(x.call("GET", "/v1/auth/oidc/callback", "/v1/auth/oidc/callback?code=c", None, None).await.0, 400);
    let bad_grant = Some(json!({"grant_type": "password"}));
    assert_eq!(x.call("POST", "/v1/auth/token", "/v1/auth/token", None, bad_grant).await.0, 400);
    assert_eq!(x.call("GET", "/v1/auth/session", "/v1/auth/session", a, None).await.0, 403);
    assert_eq!(x.call("POST", "/v1/auth/logout", "/v1/auth/logout", a, None).await.0, 403);
    let (st, hs) = x.call("GET", "/v1/humans", "/v1/humans?state=unverified", a, None).await;
    assert_eq!(st, 200);
    let bob = hs.as_array().unwrap().iter().find(|h| h["email"] == "bob@example.com").unwrap()["id"].clone();
    let bob = bob.as_str().unwrap();
    assert_eq!(x.call("GET", "/v1/humans/{id}", &format!("/v1/humans/{bob}"), a, None).await.0, 200);
    let why = Some(json!({"reason": "left"}));
    let path = format!("/v1/humans/{bob}/deactivate");
    assert_eq!(x.call("POST", "/v1/humans/{id}/deactivate", &path, a, why.clone()).await.0, 200);
    assert_eq!(x.call("POST", "/v1/humans/{id}/deactivate", &path, a, why.clone()).await.0, 409);
    let (st, o) = x.call("GET", "/v1/orphans", "/v1/orphans", a, None).await;
    assert_eq!((st, o["agents"][0]["name"].clone()), (200, json!("deploy-bot")), "bob owned it: {o}");
    let owner = Some(json!({"owner": "carol@example.com", "reason": "bob left"}));
    let p = "/v1/agents/deploy-bot/owner";
    assert_eq!(x.call("PUT", "/v1/agents/{name}/owner", p, a, owner.clone()).await.0, 200);
    let p = "/v1/workflows/deploy/owner";
    assert_eq!(x.call("PUT", "/v1/workflows/{name}/owner", p, a, owner).await.0, 200);
    let local = Some(json!({"email": "dana@example.com", "roles": ["auditor"], "password": "correct horse battery"}));
    assert_eq!(x.call("POST", "/v1/humans", "/v1/humans", a, local).await.0, 201);
    let creds = Some(json!({"email": "dana@example.com", "password": "correct horse battery"}));
    let (st, t) = x.call("POST", "/v1/auth/local", "/v1/auth/local", None, creds).await;
    assert_eq!(st, 200, "{t}");
    let dana = t["access_token"].as_str().unwrap().to_owned();
    let (st, _) = x.call("POST", "/v1/auth/totp", "/v1/auth/totp", Some(&dana), None).await;
    assert_eq!(st, 200);
    let bad = Some(json!({"code": "00000"}));
    assert_eq!(x.call("POST", "/v1/auth/totp/confirm", "/v1/auth/totp/confirm", Some(&dana), bad).await.0, 400);
    // Trust rules and grants (a signed-in admin human proposes, confirms, revokes).
    let trust = Some(json!({"trust": {"delegations": [{"from": "deploy-bot", "to": ["*"]}]}, "reason": "workers"}));
    assert_eq!(x.call("PUT", "/v1/workflows/{name}/trust", "/v1/workflows/deploy/trust", a, trust).await.0, 200);
    let erin = Some(json!({"email": "erin@example.com", "roles": ["admin"], "password": "correct horse battery"}));
    assert_eq!(x.call("POST", "/v1/humans", "/v1/humans", a, erin).await.0, 201);
    let creds = Some(json!({"email": "erin@example.com", "password": "correct horse battery"}));
    let (_, t) = x.call("POST", "/v1/auth/local", "/v1/auth/local", None, creds).await;
    let erin = t["access_token"].as_str().unwrap().to_owned();
    let e = Some(erin.as_str());
    let g = Some(json!({"agent": "deploy-bot", "workflow": "deploy", "ttl_seconds": 600, "tools": ["jira.read"]}));
    let (st, p) = x.call("POST", "/v1/grants", "/v1/grants", e, g).await;
    assert_eq!(st, 201, "{p}");
    let gid = p["grant"]["id"].as_str().unwrap().to_owned();
    let code = Some(json!({"code": p["confirmation_code"]}));
    let cp = format!("/v1/grants/{gid}/confirm");
    assert_eq!(x.call("POST", "/v1/grants/{id}/confirm", &cp, e, Some(json!({"code": "nope"}))).await.0, 403);
    assert_eq!(x.call("POST", "/v1/grants/{id}/confirm", &cp, e, code).await.0, 200);
    assert_eq!(x.call("GET", "/v1/grants", "/v1/grants?all=true", e, None).await.0, 200);
    assert_eq!(x.call("GET", "/v1/grants/{id}", &format!("/v1/grants/{gid}"), e, None).await.0, 200);
    let rp = format!("/v1/grants/{gid}/revoke");
    assert_eq!(x.call("POST", "/v1/grants/{id}/revoke", &rp, e, Some(json!({"reason": "done"}))).await.0, 200);
    assert_eq!(x.call("POST", "/v1/grants/{id}/revoke", &rp, e, Some(json!({"reason": "done"}))).await.0, 409);
    let path = "/v1/sessions/s-00000000000000000000000000000000/revoke";
    assert_eq!(x.call("POST", "/v1/sessions/{id}/revoke", path, a, why).await.0, 404);

    let rp = "/v1/tasks/t-00000000000000000000000000000000/renew";
    assert_eq!(x.call("POST", "/v1/tasks/{id}/renew", rp, a, Some(json!({}))).await.0, 404);
    assert_eq!(x.call("POST", "/v1/tasks/{id}/renew", "/v1/tasks/nope/renew", a, Some(json!({}))).await.0, 400);

    // Governance settings and risk signals.
    let gp = "/v1/workflows/deploy/governance";
    assert_eq!(x.call("GET", "/v1/workflows/{name}/governance", gp, a, None).await.0, 200);
    let rules = json!({"settings": {"containment": [{"signal": "sharing", "action": "alert"}],
                                    "recertification": {"period_days": 30, "grace_days": 3}}, "reason": "tighter"});
    assert_eq!(x.call("PUT", "/v1/workflows/{name}/governance", gp, a, Some(rules)).await.0, 200);
    let bad = json!({"settings": {"containment": [{"signal": "deny_rate", "window_secs": 0, "min_calls": 1,
                                                   "ratio": 2.0, "action": "alert"}]}, "reason": "x"});
    assert_eq!(x.call("PUT", "/v1/workflows/{name}/governance", gp, a, Some(bad)).await.0, 400);
    let nope = "/v1/workflows/nope/governance";
    assert_eq!(x.call("GET", "/v1/workflows/{name}/governance", nope, a, None).await.0, 404);
    let risk = json!({"task": "t-00000000000000000000000000000000", "score": 0.9, "source": "d", "reason": "r"});
    assert_eq!(x.call("POST", "/v1/signals/risk", "/v1/signals/risk", a, Some(risk.clone())).await.0, 404);
    assert_eq!(x.call("POST", "/v1/signals/risk", "/v1/signals/risk", None, Some(risk)).await.0, 401);

    let (st, rep) = x.call("GET", "/v1/governance/report", "/v1/governance/report", a, None).await;
    assert_eq!(st, 200, "{rep}");
    let (st, md) = x.call("GET", "/v1/governance/report", "/v1/governance/report?format=markdown", a, None).await;
    assert!(st == 200 && md.as_str().unwrap().starts_with("# Remit"), "{md}");
    let (st, _) = x.call("GET", "/v1/governance/report", "/v1/governance/report?format=html", a, None).await;
    assert_eq!(st, 200);
    assert_eq!(x.call("GET", "/v1/governance/report", "/v1/governance/report?format=pdf", a, None).await.0, 400);
    let up = "/v1/workflows/deploy/usage?window_days=7";
    assert_eq!(x.call("GET", "/v1/workflows/{name}/usage", up, a, None).await.0, 200);
    let acc = Some(json!({"reason": "review"}));
    let ap = "/v1/workflows/deploy/usage/accept";
    let (st, acc) = x.call("POST", "/v1/workflows/{name}/usage/accept", ap, a, acc).await;
    assert!(st == 200 || st == 409, "{st} {acc}");
    assert_eq!(x.call("GET", "/v1/reuse", "/v1/reuse", a, None).await.0, 200);
    let ru = Some(json!({"reason": "same team", "days": 30}));
    assert_eq!(x.call("POST", "/v1/agents/{name}/reuse", "/v1/agents/deploy-bot/reuse", a, ru.clone()).await.0, 403);
    let (st, b) = x.call("POST", "/v1/agents/{name}/reuse", "/v1/agents/deploy-bot/reuse", e, ru).await;
    assert!(st == 409 || st == 403 || st == 200, "{st} {b}");
    let (st, due) = x.call("GET", "/v1/recertifications", "/v1/recertifications", a, None).await;
    assert_eq!(st, 200, "{due}");
    let r = json!({"kind": "workflow", "id": "deploy", "reason": "still needed"});
    assert_eq!(x.call("POST", "/v1/recertifications", "/v1/recertifications", a, Some(r.clone())).await.0, 403);
    assert_eq!(x.call("POST", "/v1/recertifications", "/v1/recertifications", e, Some(r)).await.0, 200);

    // A SET pushed to Remit from no configured transmitter: RFC 8935's refusal.
    let r =
        x.s.http
            .post(format!("{}/ssf/receive", x.s.url))
            .header("content-type", "application/secevent+jwt")
            .body("a.b.c");
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!((st, body["err"].as_str()), (400, Some("invalid_request")), "{body}");
    x.push("POST", "/ssf/receive", st, "application/json", body);

    // Shared Signals: an administrator's poll stream through its whole life.
    assert_eq!(
        x.call("GET", "/.well-known/ssf-configuration", "/.well-known/ssf-configuration", None, None).await.0,
        200
    );
    let body =
        Some(json!({"events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]}));
    let (st, stream) = x.call("POST", "/ssf/streams", "/ssf/streams", a, body).await;
    assert_eq!(st, 201, "{stream}");
    let sid = stream["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(x.call("GET", "/ssf/streams", "/ssf/streams", a, None).await.0, 200);
    let one = format!("/ssf/streams?stream_id={sid}");
    assert_eq!(x.call("GET", "/ssf/streams", &one, a, None).await.0, 200);
    let patch = Some(json!({"stream_id": sid, "description": "siem"}));
    assert_eq!(x.call("PATCH", "/ssf/streams", "/ssf/streams", a, patch).await.0, 200);
    let bad = Some(json!({"stream_id": sid, "aud": "someone-else"}));
    assert_eq!(x.call("PUT", "/ssf/streams", "/ssf/streams", a, bad).await.0, 400);
    let put = Some(json!({"stream_id": sid, "events_requested": []}));
    assert_eq!(x.call("PUT", "/ssf/streams", "/ssf/streams", a, put).await.0, 200);
    let status = format!("/ssf/status?stream_id={sid}");
    assert_eq!(x.call("GET", "/ssf/status", &status, a, None).await.0, 200);
    let paused = Some(json!({"stream_id": sid, "status": "paused", "reason": "maintenance"}));
    assert_eq!(x.call("POST", "/ssf/status", "/ssf/status", a, paused).await.0, 200);
    let enabled = Some(json!({"stream_id": sid, "status": "enabled"}));
    assert_eq!(x.call("POST", "/ssf/status", "/ssf/status", a, enabled).await.0, 200);
    assert_eq!(x.call("POST", "/ssf/verify", "/ssf/verify", a, Some(json!({"stream_id": sid}))).await.0, 204);
    let poll = format!("/ssf/poll/{sid}");
    let (st, polled) =
        x.call("POST", "/ssf/poll/{stream_id}", &poll, a, Some(json!({"returnImmediately": true}))).await;
    // The verification event (and any revocation the tail had not read before the stream began).
    assert_eq!(st, 200);
    assert!(!polled["sets"].as_object().unwrap().is_empty(), "{polled}");
    assert_eq!(x.call("POST", "/ssf/poll/{stream_id}", "/ssf/poll/nope", a, Some(json!({}))).await.0, 404);
    assert_eq!(x.call("DELETE", "/ssf/streams", &one, a, None).await.0, 204);
    assert_eq!(x.call("DELETE", "/ssf/streams", &one, a, None).await.0, 404);

    // Every operation of the document answered at least once.
    let doc = fetch_doc(&s).await;
    let seen: BTreeSet<(String, String)> = x
        .out
        .iter()
        .map(|v| (v["path"].as_str().unwrap().to_owned(), v["method"].as_str().unwrap().to_owned()))
        .collect();
    let missing: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|(p, m, _)| !seen.contains(&(p.clone(), m.clone())))
        .map(|(p, m, _)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(missing.is_empty(), "operations this test never called: {missing:?}");

    let dir = tempfile::tempdir().unwrap();
    let (doc_file, samples_file) = (dir.path().join("openapi.json"), dir.path().join("samples.json"));
    std::fs::write(&doc_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::write(&samples_file, serde_json::to_vec(&x.out).unwrap()).unwrap();
    let (ok, out) = run_python(VALIDATE_SAMPLES, &[&doc_file, &samples_file]);
    assert!(ok, "responses that do not match /openapi.json:\n{out}");
    println!("jsonschema: {}", out.trim());
    s.stop().await;
}
