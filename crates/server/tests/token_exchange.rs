//! RFC 8693 token exchange end to end, over real sockets: a standard OAuth client (authlib)
//! exchanges, a standard JWT library (PyJWT) verifies by JWKS with `aud` = the tool; the RFC's
//! error cases; approvals for a scope; every exchanged credential dies with its task, its
//! workflow, its agent or its tool; and the token-confusion matrix (every kind of token in
//! every place a token is taken).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const AUD: &str = "https://tickets.example/api";

const SCHEMA: &str =
    "action read, write, delete appliesTo { principal: [Task], resource: [Tool], context: TaskContext };";
const POLICIES: &str = r#"
permit (principal, action == Action::"read", resource == Tool::"tickets");
@approval("writing tickets needs a human")
permit (principal, action == Action::"write", resource == Tool::"tickets");
permit (principal, action == Action::"read", resource == Tool::"wiki");
"#;

/// A server with workflow `deploy` (agent `deploy-bot`), tools `tickets` and `wiki`, and the
/// policies above. Returns the server and the tickets tool's introspection secret.
async fn server() -> (TestServer, String, String) {
    let s = TestServer::start().await;
    s.setup().await;
    let (st, t) = s
        .admin_post(
            "/v1/tools",
            json!({"name": "tickets", "audience": AUD, "scopes": ["read", "write", "delete"],
                   "max_ttl_seconds": 120, "owner": "carol@example.com"}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let (st, w) = s
        .admin_post(
            "/v1/tools",
            json!({"name": "wiki", "audience": "urn:example:wiki", "scopes": ["read"], "owner": "carol@example.com",
                   "classification": "confidential"}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    let bundle = json!({"schema": SCHEMA, "policies": [{"name": "p.cedar", "source": POLICIES}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let secret = |v: &Value| v["introspection_secret"].as_str().unwrap().to_owned();
    (s, secret(&t), secret(&w))
}

/// Starts a task meant for Remit (audience `remit`); returns (id, token).
async fn task(s: &TestServer, inst: &str, sensitivity: &str) -> (String, String) {
    let (st, t) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(inst),
            Some(json!({"workflow": "deploy", "intent": "triage the queue", "audience": ["remit"],
                        "ttl_seconds": 300, "sensitivity": sensitivity})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
}

/// Posts a token request; returns the status, the `Cache-Control` header and the body.
async fn token(s: &TestServer, form: &[(&str, &str)]) -> (u16, String, Value) {
    let resp = s.http.post(format!("{}/oauth2/token", s.url)).form(form).send().await.unwrap();
    let st = resp.status().as_u16();
    let cc = resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (st, cc, resp.json().await.unwrap_or(Value::Null))
}

async fn exchange(s: &TestServer, subject: &str, audience: &str, scope: Option<&str>) -> (u16, Value) {
    let mut form =
        vec![("grant_type", GRANT), ("subject_token", subject), ("subject_token_type", JWT), ("audience", audience)];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    let (st, _, v) = token(s, &form).await;
    (st, v)
}

async fn introspect_as(s: &TestServer, bearer: &str, tok: &str) -> (u16, Value) {
    let resp = s
        .http
        .post(format!("{}/oauth2/introspect", s.url))
        .bearer_auth(bearer)
        .form(&[("token", tok)])
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

fn claims(tok: &str) -> Value {
    let p = tok.split('.').nth(1).unwrap();
    serde_json::from_slice(&remit_token::b64d(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_client_exchanges_and_a_standard_library_verifies() {
    let (s, secret, wiki_secret) = server().await;
    let inst = s.join().await;
    let (id, tok) = task(&s, &inst, "internal").await;
    // authlib + PyJWT, in the shared venv: `delete` is asked for but no policy permits it, so
    // the grant is narrower and says so.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth/exchange.py");
    let out = tokio::process::Command::new(common::python())
        .arg(&script)
        .args([&s.url, &tok, AUD, "read delete"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &report["token"];
    assert_eq!(t["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "read");
    let c = &report["claims"];
    assert_eq!(c["aud"], json!([AUD]));
    assert_eq!(c["scope"], "read");
    assert!(c["sub"].as_str().unwrap().ends_with(&format!("/task/{id}")), "{c}");
    assert!(c["jti"].as_str().unwrap().starts_with("c-"));
    let r = &c["https://remit.dev/claims"];
    assert_eq!(
        (r["kind"].as_str(), r["task"].as_str(), r["tool"].as_str()),
        (Some("tool"), Some(id.as_str()), Some("tickets"))
    );
    assert_eq!(r["workflow"], "deploy");
    assert_eq!(r["sensitivity"], "internal");
    assert_eq!(r["intent_hash"].as_str().unwrap().len(), 64);
    // exp ≤ min(task expiry, now + the tool's max TTL of 120 s)
    let (exp, iat) = (c["exp"].as_i64().unwrap(), c["iat"].as_i64().unwrap());
    assert!(exp - iat <= 120, "{c}");
    assert!(report["wrong_audience_refused"].as_bool().unwrap());
    let cred = t["access_token"].as_str().unwrap().to_owned();

    // Online: the tool introspects with its own secret; another tool sees nothing.
    let (st, v) = introspect_as(&s, &secret, &cred).await;
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!((v["scope"].as_str(), v["token_type"].as_str()), (Some("read"), Some("Bearer")));
    let (st, v) = introspect_as(&s, &wiki_secret, &cred).await;
    assert_eq!((st, v), (200, json!({"active": false})));
    // A tool secret introspects nothing but its own credentials (not the task token).
    assert_eq!(introspect_as(&s, &secret, &tok).await.1, json!({"active": false}));
    // A wrong secret is no credential.
    assert_eq!(introspect_as(&s, "remit_tool.tickets.nope", &cred).await.0, 401);

    // The exchange is audited with the credential's jti, never the token.
    let (_, audit) = s.admin_get("/v1/audit?action=token.exchange").await;
    let rec = audit.as_array().unwrap().iter().find(|r| r["task"] == id.as_str()).expect("a token.exchange record");
    let detail: Value = serde_json::from_str(rec["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["jti"], c["jti"]);
    assert_eq!(detail["narrowed"], true);
    assert!(!audit.to_string().contains(&cred));

    // The credential ends with its task.
    let (st, _) = s.call("POST", &format!("/v1/tasks/{id}/complete"), Some(&tok), None).await;
    assert_eq!(st, 200);
    assert_eq!(introspect_as(&s, &secret, &cred).await.1, json!({"active": false}));
    assert!(!s.active(&cred).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rfc_error_cases() {
    let (s, _, _) = server().await;
    let inst = s.join().await;
    let (_, tok) = task(&s, &inst, "internal").await;
    let err = |v: &Value| v["error"].as_str().unwrap_or_default().to_owned();
    let base = [("grant_type", GRANT), ("subject_token", tok.as_str()), ("subject_token_type", JWT)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    // The grant type.
    let (st, cc, v) = token(&s, &[("subject_token", &tok)]).await;
    assert_eq!((st, err(&v).as_str(), cc.as_str()), (400, "invalid_request", "no-store"), "{v}");
    let (st, _, v) = token(&s, &[("grant_type", "client_credentials")]).await;
    assert_eq!((st, err(&v).as_str()), (400, "unsupported_grant_type"));
    // Form encoding only.
    let resp = s
        .http
        .post(format!("{}/oauth2/token", s.url))
        .json(&json!({"grant_type": GRANT, "subject_token": tok, "subject_token_type": JWT, "audience": "tickets"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(err(&resp.json().await.unwrap()), "invalid_request");
    // The subject token and its type.
    let (_, _, v) = token(&s, &[("grant_type", GRANT), ("subject_token_type", JWT), ("audience", "tickets")]).await;
    assert_eq!(err(&v), "invalid_request");
    let (_, _, v) = token(&s, &[("grant_type", GRANT), ("subject_token", &tok), ("audience", "tickets")]).await;
    assert_eq!(err(&v), "invalid_request");
    let (_, _, v) = token(&s, &with(&[("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")])).await;
    assert_eq!(err(&v), "invalid_request", "a repeated parameter");
    let bad =
        [("grant_type", GRANT), ("subject_token", "not-a-token"), ("subject_token_type", JWT), ("audience", "tickets")];
    let (st, _, v) = token(&s, &bad).await;
    assert_eq!((st, err(&v).as_str()), (400, "invalid_request"));
    assert!(!v["error_description"].as_str().unwrap().contains("not-a-token"));
    // actor_token_type only with actor_token; an actor token must be the task's instance.
    let (_, _, v) = token(&s, &with(&[("audience", "tickets"), ("actor_token_type", JWT)])).await;
    assert_eq!(err(&v), "invalid_request");
    let mut f = with(&[("audience", "tickets"), ("actor_token_type", JWT), ("scope", "read")]);
    f.push(("actor_token", &tok));
    let (_, _, v) = token(&s, &f).await;
    assert_eq!(err(&v), "invalid_request", "a task token is no actor token: {v}");
    let mut f = with(&[("audience", "tickets"), ("actor_token_type", JWT), ("scope", "read")]);
    f.push(("actor_token", &inst));
    let (st, _, v) = token(&s, &f).await;
    assert_eq!(st, 200, "the task's own instance acts: {v}");
    let other_inst = s.join().await;
    let mut f = with(&[("audience", "tickets"), ("actor_token_type", JWT), ("scope", "read")]);
    f.push(("actor_token", &other_inst));
    let (_, _, v) = token(&s, &f).await;
    assert_eq!(err(&v), "invalid_request", "another instance does not act for this task");
    // requested_token_type.
    let (_, _, v) = token(&s, &with(&[("audience", "tickets"), ("requested_token_type", "urn:x")])).await;
    assert_eq!(err(&v), "invalid_request");
    // The target: required, known, one tool, allowed for the workflow and the task's sensitivity.
    assert_eq!(err(&token(&s, &base).await.2), "invalid_target");
    assert_eq!(err(&exchange(&s, &tok, "https://nowhere.example", None).await.1), "invalid_target");
    let (_, _, v) = token(&s, &with(&[("audience", "tickets"), ("audience", "wiki")])).await;
    assert_eq!(err(&v), "invalid_target", "{v}");
    let (st, _, v) = token(&s, &with(&[("resource", AUD), ("audience", "tickets"), ("scope", "read")])).await;
    assert_eq!(st, 200, "resource and audience naming the same tool: {v}");
    let (_, v) = exchange(&s, &tok, "wiki", None).await;
    assert_eq!(err(&v), "invalid_target", "wiki is confidential, the task internal: {v}");
    // A task token is never for a tool's audience: the tool gets its own kind of credential.
    let body = json!({"workflow": "deploy", "intent": "x", "audience": [AUD]});
    let (st, v) = s.call("POST", "/v1/tasks", Some(&inst), Some(body)).await;
    assert_eq!(st, 400, "{v}");
    // The scope.
    assert_eq!(err(&exchange(&s, &tok, "tickets", Some("admin")).await.1), "invalid_scope");
    assert_eq!(err(&exchange(&s, &tok, "tickets", Some("bad\"scope")).await.1), "invalid_scope");
    assert_eq!(err(&exchange(&s, &tok, "tickets", Some("delete")).await.1), "invalid_scope", "policy grants none");
    // No scope: every scope the policy grants outright (write needs approval: left out, and
    // nobody is paged).
    let before = s.admin_get("/v1/approvals").await.1["approvals"].as_array().unwrap().len();
    let (st, v) = exchange(&s, &tok, "tickets", None).await;
    assert_eq!((st, v["scope"].as_str()), (200, Some("read")), "{v}");
    assert_eq!(s.admin_get("/v1/approvals").await.1["approvals"].as_array().unwrap().len(), before);
    // The workflow's tool list is an allow-list the exchange honours.
    let (st, _) = s
        .call(
            "PUT",
            "/v1/workflows/deploy/tools",
            Some(&s.admin.clone()),
            Some(json!({"tools": ["wiki"], "reason": "x"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(err(&exchange(&s, &tok, "tickets", Some("read")).await.1), "invalid_target");
    // Discovery names the endpoint and the grant.
    let (_, meta) = s.call("GET", "/.well-known/oauth-authorization-server", None, None).await;
    assert_eq!(meta["token_endpoint"], format!("{}/oauth2/token", s.url));
    assert_eq!(meta["issuer"], s.url);
    assert_eq!(meta["grant_types_supported"], json!([GRANT, "urn:ietf:params:oauth:grant-type:jwt-bearer"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_that_needs_approval_is_granted_once_approved() {
    let (s, _, _) = server().await;
    let inst = s.join().await;
    let (_, tok) = task(&s, &inst, "internal").await;
    let (st, v) = exchange(&s, &tok, "tickets", Some("read write")).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    let id = v["approval_ids"][0].as_str().unwrap().to_owned();
    assert!(v["error_description"].as_str().unwrap().contains(&id));
    let a = s
        .http
        .post(format!("{}/v1/approvals/{id}/approve", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", "alice@example.com")
        .json(&json!({"reason": "ticket CHG-9"}))
        .send()
        .await
        .unwrap();
    let (st, a) = (a.status().as_u16(), a.text().await.unwrap());
    assert_eq!(st, 200, "{a:?}");
    let form = [
        ("grant_type", GRANT),
        ("subject_token", tok.as_str()),
        ("subject_token_type", JWT),
        ("audience", "tickets"),
        ("scope", "read write"),
        ("approval", id.as_str()),
    ];
    let (st, _, v) = token(&s, &form).await;
    assert_eq!((st, v["scope"].as_str()), (200, Some("read write")), "{v}");
    // An approval is used once: presented again, `write` is refused and the grant says so.
    let (st, _, v) = token(&s, &form).await;
    assert_eq!((st, v["scope"].as_str()), (200, Some("read")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_die_with_their_task_workflow_agent_or_tool() {
    let (s, secret, _) = server().await;
    let inst = s.join().await;
    let cred = |tok: String| {
        let s = &s;
        async move { exchange(s, &tok, "tickets", Some("read")).await.1["access_token"].as_str().unwrap().to_owned() }
    };
    // RFC 7009 on a credential ends it alone; its task goes on.
    let (_, t1) = task(&s, &inst, "internal").await;
    let (c1, c1b) = (cred(t1.clone()).await, cred(t1.clone()).await);
    let resp = s.http.post(format!("{}/oauth2/revoke", s.url)).form(&[("token", c1.as_str())]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!s.active(&c1).await);
    assert!(s.active(&c1b).await && s.active(&t1).await);
    // Revoking the task (a kill) ends every credential under it.
    let (id2, t2) = task(&s, &inst, "internal").await;
    let c2 = cred(t2).await;
    assert_eq!(s.admin_post(&format!("/v1/tasks/{id2}/revoke"), json!({"reason": "x"})).await.0, 200);
    assert!(!s.active(&c2).await);
    // Disabling the tool ends its credentials and stops new ones.
    let (_, t3) = task(&s, &inst, "internal").await;
    let c3 = cred(t3.clone()).await;
    assert_eq!(s.admin_post("/v1/tools/tickets/disable", json!({"reason": "breach"})).await.0, 200);
    assert!(!s.active(&c3).await);
    assert_eq!(introspect_as(&s, &secret, &c3).await.0, 401, "a disabled tool's secret opens nothing");
    assert_eq!(exchange(&s, &t3, "tickets", Some("read")).await.1["error"], "invalid_target");
    // The workflow and the agent kill switches (wiki: the remaining tool; public-internal task
    // can not get it, so use a confidential task).
    let (_, t4) = task(&s, &inst, "confidential").await;
    let c4 = exchange(&s, &t4, "wiki", Some("read")).await.1["access_token"].as_str().unwrap().to_owned();
    assert!(s.active(&c4).await);
    assert_eq!(s.admin_post("/v1/agents/deploy-bot/disable", json!({"reason": "x"})).await.0, 200);
    assert!(!s.active(&c4).await);
    assert_eq!(s.admin_post("/v1/agents/deploy-bot/enable", json!({"reason": "x"})).await.0, 200);
    let inst = s.join().await;
    let (_, t5) = task(&s, &inst, "confidential").await;
    let c5 = exchange(&s, &t5, "wiki", Some("read")).await.1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.admin_post("/v1/workflows/deploy/suspend", json!({"reason": "x"})).await.0, 200);
    assert!(!s.active(&c5).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_confusion_matrix() {
    let (s, secret, _) = server().await;
    let inst = s.join().await;
    let (id, tok) = task(&s, &inst, "internal").await;
    let cred = exchange(&s, &tok, "tickets", Some("read")).await.1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&cred)["https://remit.dev/claims"]["kind"], "tool");
    let kinds: [(&str, &str); 5] = [
        ("admin", &s.admin.clone()),
        ("instance", &inst),
        ("task", &tok),
        ("tool credential", &cred),
        ("tool secret", &secret),
    ];
    for (name, t) in kinds {
        // As a subject token: only a task token buys a credential.
        let (st, v) = exchange(&s, t, "tickets", Some("read")).await;
        assert_eq!(st == 200, name == "task", "{name} as subject_token: {v}");
        // As an actor token: only the task's instance.
        let form = [
            ("grant_type", GRANT),
            ("subject_token", tok.as_str()),
            ("subject_token_type", JWT),
            ("audience", "tickets"),
            ("scope", "read"),
            ("actor_token", t),
            ("actor_token_type", JWT),
        ];
        let (st, _, v) = token(&s, &form).await;
        assert_eq!(st == 200, name == "instance", "{name} as actor_token: {v}");
        // As the bearer of Remit's own API: never a tool credential or a tool secret.
        let (st, _) = s.call("GET", &format!("/v1/tasks/{id}"), Some(t), None).await;
        let api_ok = matches!(name, "admin" | "instance" | "task");
        assert_eq!(st == 200, api_ok, "{name} on /v1/tasks/{{id}}: {st}");
        let body = json!({"action": {"name": "read"}, "resource": {"type": "Tool", "id": "tickets"}});
        let (st, _) = s.call("POST", "/v1/decisions", Some(t), Some(body)).await;
        assert_eq!(st == 401, matches!(name, "tool credential" | "tool secret"), "{name} on /v1/decisions: {st}");
        // As the bearer of introspection: not a task token, not a tool credential.
        let (st, _) = introspect_as(&s, t, &cred).await;
        assert_eq!(st == 200, matches!(name, "admin" | "instance" | "tool secret"), "{name} introspecting: {st}");
    }
    // A tool credential is not a task token for decisions about a task either.
    let body = json!({"token": cred, "action": {"name": "read"}, "resource": {"type": "Tool", "id": "tickets"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!((st, v["decision"].as_bool()), (200, Some(false)), "{v}");
}
