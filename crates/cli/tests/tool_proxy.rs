//! The injecting tool proxy on the real server, against a real HTTP upstream (Python's
//! standard-library server, echoing what it received): an agent reaches the upstream with its
//! task token or per-tool credential and never holds the key (it is in nothing the agent
//! received, nor in the audit log); the agent's `Authorization`, cookies and hop-by-hop
//! headers never reach the upstream; traversal (`..`, `%2e%2e`, `//host`, encoded slashes),
//! absolute-form targets and undeclared routes are refused before the upstream sees them;
//! redirects are passed back, not followed; a policy deny and a killed task stop the next call;
//! oversized bodies are cut; every call is audited with its route template.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

mod common;

use common::{python, repo};

const KEY: &str = "upstream-key-7d1c0b9a8f6e5d4c";

struct Upstream(Child, u16);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn upstream(log: &Path) -> Upstream {
    let mut child = Command::new(python())
        .arg(repo().join("tests/proxy/upstream.py"))
        .args(["--log", log.to_str().unwrap(), "--big", "3000000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    Upstream(child, line.trim().parse().unwrap())
}

fn seen(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Sends raw request bytes (so nothing normalises the target first); returns the status.
fn raw(proxy: &str, request: &str) -> u16 {
    let addr = proxy.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_agent_calls_an_upstream_through_the_proxy_without_ever_holding_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let log = dir.path().join("upstream.log");
    let up = upstream(&log);
    std::fs::write(data.join("remit.toml"), "[proxy]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let s = common::serve(&data, &[], &[]);
    let proxy = s.proxy_url.clone().expect("the serving line names the proxy");
    let run = |args: &[&str], stdin: Option<&str>| common::remit_json(&s.url, &data, args, stdin);
    let cfg = json!({
        "upstream": format!("http://127.0.0.1:{}/v2", up.1),
        "routes": [
            {"method": "GET", "path": "/issues/{id}", "scope": "read"},
            {"method": "POST", "path": "/issues", "scope": "write"},
            {"method": "GET", "path": "/redirect", "scope": "read"},
            {"method": "GET", "path": "/big", "scope": "read"},
            {"method": "GET", "path": "/reflect", "scope": "read"},
            {"method": "POST", "path": "/upload", "scope": "read"}
        ],
        "max_request_bytes": 1000,
        "inject": {"type": "header", "name": "X-Api-Key", "secret": "api-key"},
        "max_response_bytes": 1_000_000
    });
    std::fs::write(dir.path().join("proxy.json"), cfg.to_string()).unwrap();
    run(&["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com"], None);
    run(&["agent", "create", "bot", "--workflow", "w", "--owner", "alice@example.com"], None);
    #[rustfmt::skip]
    run(&["tool", "create", "tickets", "--audience", "https://tickets.example", "--scope", "read", "--scope", "write",
          "--owner", "o@example.com", "--proxy", dir.path().join("proxy.json").to_str().unwrap()], None);
    run(&["secret", "set", "tickets", "api-key"], Some(KEY));
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut received = String::new(); // everything the agent got back
    rt.block_on(async {
        let policies = json!({"schema": "action read, write appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
            "policies": [{"name": "p.cedar", "source": "permit (principal, action == Action::\"read\", resource == Tool::\"tickets\");"}]});
        let r = http.put(format!("{}/v1/policies", s.url)).bearer_auth(&admin).json(&policies).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    });
    let jt = run(&["agent", "join-token", "bot"], None);
    let (task, task_id, inst) = rt.block_on(async {
        let r = http.post(format!("{}/v1/join", s.url)).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
        let inst: Value = r.json().await.unwrap();
        let inst = inst["token"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{}/v1/tasks", s.url))
            .bearer_auth(&inst)
            .json(&json!({"workflow": "w", "intent": "triage tickets", "audience": ["remit"], "ttl_seconds": 300}))
            .send()
            .await
            .unwrap();
        let t: Value = r.json().await.unwrap();
        (t["token"].as_str().unwrap().to_owned(), t["task"]["id"].as_str().unwrap().to_owned(), inst)
    });

    // The call: the key reaches the upstream; the agent's own credentials and cookies do not.
    rt.block_on(async {
        let r = http
            .get(format!("{proxy}/tools/tickets/issues/42?fields=title"))
            .bearer_auth(&task)
            .header("Cookie", "agent_session=1")
            .header("X-Request-Id", "abc")
            .header("X-HTTP-Method-Override", "DELETE")
            .header("X-Original-URL", "/v2/admin")
            .header("Connection", "X-Drop-Me")
            .header("X-Drop-Me", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none(), "the upstream's cookies stay with the proxy");
        received.push_str(&format!("{:?}", r.headers()));
        let body = r.text().await.unwrap();
        received.push_str(&body);
    });
    let first = seen(&log).pop().unwrap();
    assert_eq!(
        (first["method"].as_str(), first["path"].as_str(), first["query"].as_str()),
        (Some("GET"), Some("/v2/issues/42"), Some("fields=title"))
    );
    let h = &first["headers"];
    assert_eq!(h["x-api-key"], KEY);
    assert_eq!(h["x-request-id"], "abc");
    for gone in ["authorization", "cookie", "x-drop-me", "dpop", "x-http-method-override", "x-original-url"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }

    // A per-tool credential from token exchange works too (scope read only).
    let cred = rt.block_on(async {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", task.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", "https://tickets.example"),
            ("scope", "read"),
        ];
        let r = http.post(format!("{}/oauth2/token", s.url)).form(&form).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    });
    let status = |method: &str, path: &str, token: Option<&str>, body: Option<Vec<u8>>| {
        let http = http.clone();
        let url = format!("{proxy}{path}");
        let (method, token) = (reqwest::Method::from_bytes(method.as_bytes()).unwrap(), token.map(str::to_owned));
        rt.block_on(async move {
            let mut r = http.request(method, url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.body(b);
            }
            let resp = r.send().await.unwrap();
            let st = resp.status().as_u16();
            (st, resp.text().await.unwrap_or_default())
        })
    };
    let (st, body) = status("GET", "/tools/tickets/issues/7", Some(&cred), None);
    assert_eq!(st, 200, "{body}");
    received.push_str(&body);
    let before = seen(&log).len();
    // Refused before the upstream: no token, an undeclared route, a policy deny, a credential
    // without the route's scope, an unknown tool.
    for (m, p, t, want) in [
        ("GET", "/tools/tickets/issues/7", None, 401),
        ("DELETE", "/tools/tickets/issues/7", Some(task.as_str()), 403),
        ("GET", "/tools/tickets/admin", Some(task.as_str()), 403),
        ("POST", "/tools/tickets/issues", Some(task.as_str()), 403),
        ("POST", "/tools/tickets/issues", Some(cred.as_str()), 403),
        ("GET", "/tools/nope/issues/7", Some(task.as_str()), 404),
    ] {
        let (st, body) = status(m, p, t, None);
        assert_eq!(st, want, "{m} {p}: {body}");
        received.push_str(&body);
    }
    // Traversal and absolute-form targets, sent byte for byte.
    for target in [
        "/tools/tickets/issues/../../admin",
        "/tools/tickets/issues/%2e%2e/%2E%2E/admin",
        "/tools/tickets//evil.example/issues/1",
        "/tools/tickets/issues/1%2f..%2f..%2fadmin",
        "/tools/tickets/issues/%5c..%5cadmin",
        "http://evil.example/tools/tickets/issues/1",
    ] {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {task}\r\nConnection: close\r\n\r\n");
        let st = raw(&proxy, &req);
        assert!(st == 400 || st == 403, "{target}: {st}");
    }
    assert_eq!(seen(&log).len(), before, "nothing refused reached the upstream");

    // A redirect to another host is handed back, not followed.
    let (st, _) = status("GET", "/tools/tickets/redirect", Some(&task), None);
    assert_eq!(st, 302);
    assert_eq!(seen(&log).len(), before + 1);
    // A response over the tool's limit is cut short; a request body over it is refused.
    let got = rt.block_on(async {
        let r = http.get(format!("{proxy}/tools/tickets/big")).bearer_auth(&task).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.map(|b| b.len())
    });
    assert!(got.is_err() || got.as_ref().is_ok_and(|n| *n <= 1_000_000), "{got:?}");
    let (st, _) = status("POST", "/tools/tickets/upload", Some(&task), Some(vec![b'x'; 5000]));
    assert_eq!(st, 413, "a request body over the tool's limit");
    // An upstream quoting the key: the header is dropped and the body cut before it.
    // (The cut may come before the response head is flushed: then the agent gets nothing.)
    let (headers, body) = rt.block_on(async {
        match http.get(format!("{proxy}/tools/tickets/reflect")).bearer_auth(&task).send().await {
            Ok(r) => {
                let h = format!("{:?}", r.headers());
                (h, r.bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default())
            }
            Err(_) => (String::new(), String::new()),
        }
    });
    assert!(!headers.contains(KEY) && !body.contains(KEY), "{headers} {body}");
    received.push_str(&headers);
    received.push_str(&body);
    // A task token minted for another audience is no key to the proxy — and, presented here,
    // it left the party it was for: a sharing event naming its task.
    let (other_id, other) = rt.block_on(async {
        let b = json!({"workflow": "w", "intent": "for a partner", "audience": ["https://partner.example"], "ttl_seconds": 300});
        let r = http.post(format!("{}/v1/tasks", s.url)).bearer_auth(&inst).json(&b).send().await.unwrap();
        let t: Value = r.json().await.unwrap();
        (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
    });
    assert_eq!(status("GET", "/tools/tickets/issues/7", Some(&other), None).0, 401);
    let sharing = run(&["audit", "list", "--action", "security.token_sharing", "--task", &other_id], None);
    let ev = sharing.as_array().unwrap().first().unwrap_or_else(|| panic!("no sharing event: {sharing}"));
    let d: Value = serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!((d["presented_to"].as_str(), d["via"].as_str()), (Some("tool:tickets"), Some("proxy")), "{d}");
    assert_eq!(d["by"]["addr"], "127.0.0.1", "who presented it: {d}");

    // The audit log records each call by route template, with the secret's fingerprint.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let audit = run(&["audit", "list", "--action", "tool.call", "--limit", "100"], None);
    let all = audit.to_string();
    assert!(all.contains("GET /issues/{id}") && all.contains("tickets/api-key@1"), "{all}");
    let full = run(&["audit", "list", "--limit", "1000"], None).to_string();
    assert!(!full.contains(KEY), "the key is in the audit log");
    assert!(!received.contains(KEY), "the agent received the key");

    // Killed: the next call is refused.
    rt.block_on(async {
        let r = http
            .post(format!("{}/v1/tasks/{task_id}/revoke", s.url))
            .bearer_auth(&admin)
            .json(&json!({"reason": "done"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    });
    let n = seen(&log).len();
    assert_eq!(status("GET", "/tools/tickets/issues/7", Some(&task), None).0, 401);
    assert_eq!(status("GET", "/tools/tickets/issues/7", Some(&cred), None).0, 401);
    assert_eq!(seen(&log).len(), n);
}

/// A fresh server (with `conf` as its `remit.toml`) and upstream, a workflow `w`, an agent
/// `bot` joined once (`inst`), and the tool `tickets` (scope `scope`) proxied to the upstream
/// with `routes` and `inject`, its secret `secret` set, and the policy `policy` pushed.
struct Proxied {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    _up: Upstream,
    s: common::Server,
    data: std::path::PathBuf,
    proxy: String,
    admin: String,
    inst: String,
    http: reqwest::Client,
}

#[allow(clippy::too_many_arguments)]
fn proxied(
    rt: &tokio::runtime::Runtime,
    conf: &str,
    routes: Value,
    inject: Value,
    scope: &str,
    secret: (&str, &str),
    policy: &str,
) -> Proxied {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let log = dir.path().join("upstream.log");
    let up = upstream(&log);
    std::fs::write(data.join("remit.toml"), conf).unwrap();
    let s = common::serve(&data, &[], &[]);
    let proxy = s.proxy_url.clone().unwrap();
    let run = |args: &[&str], stdin: Option<&str>| common::remit_json(&s.url, &data, args, stdin);
    let cfg = json!({"upstream": format!("http://127.0.0.1:{}/v2", up.1), "routes": routes, "inject": inject});
    std::fs::write(dir.path().join("proxy.json"), cfg.to_string()).unwrap();
    run(&["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com"], None);
    run(&["agent", "create", "bot", "--workflow", "w", "--owner", "alice@example.com"], None);
    #[rustfmt::skip]
    run(&["tool", "create", "tickets", "--audience", "https://tickets.example", "--scope", scope,
          "--owner", "o@example.com", "--proxy", dir.path().join("proxy.json").to_str().unwrap()], None);
    run(&["secret", "set", "tickets", secret.0], Some(secret.1));
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let jt = run(&["agent", "join-token", "bot"], None);
    let inst = rt.block_on(async {
        let schema =
            format!("action {scope} appliesTo {{ principal: [Task], resource: [Tool], context: TaskContext }};");
        let policies = json!({"schema": schema, "policies": [{"name": "p.cedar", "source": policy}]});
        let r = http.put(format!("{}/v1/policies", s.url)).bearer_auth(&admin).json(&policies).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let r = http.post(format!("{}/v1/join", s.url)).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
        let inst: Value = r.json().await.unwrap();
        inst["token"].as_str().unwrap().to_owned()
    });
    Proxied { _dir: dir, log, _up: up, s, data, proxy, admin, inst, http }
}

impl Proxied {
    /// Starts a task of `w` for `intent`; its token.
    fn task(&self, rt: &tokio::runtime::Runtime, intent: &str) -> String {
        rt.block_on(async {
            let b = json!({"workflow": "w", "intent": intent, "audience": ["remit"], "ttl_seconds": 300});
            let r = self.http.post(format!("{}/v1/tasks", self.s.url)).bearer_auth(&self.inst).json(&b).send();
            let t: Value = r.await.unwrap().json().await.unwrap();
            t["token"].as_str().unwrap().to_owned()
        })
    }

    fn run(&self, args: &[&str]) -> Value {
        common::remit_json(&self.s.url, &self.data, args, None)
    }
}

const PLAIN: &str = "[proxy]\nlisten = \"127.0.0.1:0\"\n";

/// An approval-gated route: the call answers with an approval id bound to the request's
/// method, query, content type and body digest; after a human approves, the retry with that
/// body goes through exactly once, and a retry with another body (or another content type)
/// does not.
#[test]
fn an_approved_call_goes_through_once_and_only_with_the_body_it_was_approved_for() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    #[rustfmt::skip]
    let p = proxied(&rt, PLAIN, json!([{"method": "POST", "path": "/issues", "scope": "write"}]),
        json!({"type": "bearer", "secret": "api-key"}), "write", ("api-key", KEY),
        "@approval(\"filing an issue needs a human\")\npermit (principal, action == Action::\"write\", resource == Tool::\"tickets\");");
    let (proxy, admin, http, log, s) = (p.proxy.clone(), p.admin.clone(), p.http.clone(), p.log.clone(), &p.s);
    let task = p.task(&rt, "file one issue");
    let call = |body: &str, approval: Option<&str>| {
        let mut r =
            http.post(format!("{proxy}/tools/tickets/issues?project=ops")).bearer_auth(&task).body(body.to_owned());
        if let Some(a) = approval {
            r = r.header("Remit-Approval", a);
        }
        rt.block_on(async move {
            let resp = r.send().await.unwrap();
            let st = resp.status().as_u16();
            (st, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let shown = r#"{"title": "rotate the keys"}"#;
    let (st, v) = call(shown, None);
    assert_eq!((st, v["error"].as_str()), (403, Some("approval_required")), "{v}");
    let id = v["approval"].as_str().unwrap().to_owned();
    assert!(seen(&log).is_empty(), "nothing reached the upstream before the approval");
    rt.block_on(async {
        let r = http
            .post(format!("{}/v1/approvals/{id}/approve", s.url))
            .bearer_auth(&admin)
            .header("x-remit-operator", "alice@example.com")
            .json(&json!({"reason": "looks right"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    });
    // Another body under the same approval: refused, and the approval is not spent.
    let (st, v) = call(r#"{"title": "delete every key"}"#, Some(&id));
    assert_eq!(st, 403, "{v}");
    // The same bytes read as another content type: refused too.
    let (st, v) = rt.block_on(async {
        let r = http
            .post(format!("{proxy}/tools/tickets/issues?project=ops"))
            .bearer_auth(&task)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Remit-Approval", &id)
            .body(shown)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(st, 403, "{v}");
    assert!(seen(&log).is_empty());
    // The body the human saw: through, once.
    let (st, v) = call(shown, Some(&id));
    assert_eq!(st, 200, "{v}");
    let got = seen(&log);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body_bytes"], shown.len(), "{:?}", got[0]);
    let (st, v) = call(shown, Some(&id));
    assert_eq!(st, 403, "a used approval does not go through twice: {v}");
    assert_eq!(seen(&log).len(), 1);
}

/// A DPoP-bound task token (RFC 9449) reaches the upstream through the proxy only as
/// `Authorization: DPoP …` with a fresh proof from its key for that very request; a replayed
/// proof, another key, another URL or method, or the Bearer scheme are refused, and the other
/// key is a security event in the audit log. Proofs come from PyJWT (`tests/proxy/dpop_proxy.py`).
#[test]
fn dpop_bound_tokens_need_a_fresh_proof_at_the_proxy() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // DPoP proofs name the proxy's public URL: a fixed port, so the configuration can say it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n");
    #[rustfmt::skip]
    let p = proxied(&rt, &conf, json!([{"method": "GET", "path": "/issues/{id}", "scope": "read"}]),
        json!({"type": "header", "name": "X-Api-Key", "secret": "api-key"}), "read", ("api-key", KEY),
        "permit (principal, action == Action::\"read\", resource == Tool::\"tickets\");");
    let (s, proxy, inst, log) = (&p.s, p.proxy.clone(), p.inst.clone(), p.log.clone());
    let out = Command::new(python())
        .arg(repo().join("tests/proxy/dpop_proxy.py"))
        .args([&s.url, &proxy, &inst])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["start"].as_u64(), r["bound"].as_bool()), (Some(201), Some(true)), "{r}");
    assert_eq!(r["with_proof"], 200, "{r}");
    assert_eq!(r["first"], 200, "{r}");
    for refused in ["bearer_scheme", "no_proof", "replay", "other_key", "wrong_htu", "wrong_method"] {
        assert_eq!(r[refused], 401, "{refused}: {r}");
    }
    assert_eq!(seen(&log).len(), 2, "only the two proper calls reached the upstream");
    assert!(r["challenge"].as_str().unwrap().starts_with("DPoP error=\"invalid_dpop_proof\""), "{r}");
    let misuse = p.run(&["audit", "list", "--action", "security.token_misuse"]);
    assert_eq!(misuse.as_array().map(Vec::len), Some(1), "{misuse}");
}

#[path = "../../server/tests/common/oidc.rs"]
#[allow(dead_code)]
mod oidc;

/// An OAuth tool: the proxy obtains an access token from the upstream's authorization server
/// (the shared test OpenID provider) with the client-credentials grant and the tool's client
/// secret, caches it, and sends it as the bearer; the agent holds neither the secret nor the
/// token.
#[test]
fn an_oauth_tool_gets_a_client_credentials_token_the_agent_never_sees() {
    const CLIENT_SECRET: &str = "cc-secret-5e0a9c3f1b7d4e2a";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config = oidc::default_config();
    config["clients"].as_array_mut().unwrap().push(json!({
        "client_id": "tickets-proxy", "client_secret": CLIENT_SECRET, "grant_types": ["client_credentials"],
        "response_types": [], "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic"}));
    let op = rt.block_on(oidc::OidcProvider::start_with(config));
    let meta: Value = rt.block_on(async {
        let r = op.http.get(format!("{}/.well-known/openid-configuration", op.issuer)).send().await.unwrap();
        r.json().await.unwrap()
    });
    #[rustfmt::skip]
    let p = proxied(&rt, PLAIN, json!([{"method": "GET", "path": "/issues/{id}", "scope": "read"}]),
        json!({"type": "oauth", "token_url": meta["token_endpoint"], "client_id": "tickets-proxy", "secret": "client-secret"}),
        "read", ("client-secret", CLIENT_SECRET),
        "permit (principal, action == Action::\"read\", resource == Tool::\"tickets\");");
    let (proxy, http, log) = (p.proxy.clone(), p.http.clone(), p.log.clone());
    let task = p.task(&rt, "read issues");
    let mut received = String::new();
    rt.block_on(async {
        // Four first calls at once: one token request (single flight), then the cache.
        let mut calls = tokio::task::JoinSet::new();
        for id in 1..=4 {
            let (http, url, task) = (http.clone(), format!("{proxy}/tools/tickets/issues/{id}"), task.clone());
            calls.spawn(async move {
                let r = http.get(url).bearer_auth(&task).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let headers = format!("{:?}", r.headers());
                headers + &r.text().await.unwrap()
            });
        }
        while let Some(got) = calls.join_next().await {
            received.push_str(&got.unwrap());
        }
        let r = http.get(format!("{proxy}/tools/tickets/issues/5")).bearer_auth(&task).send().await.unwrap();
        assert_eq!(r.status(), 200);
    });
    // The upstream got one access token every time (fetched once, then cached), a live one of
    // that client.
    let got = seen(&log);
    assert_eq!(got.len(), 5);
    let bearer =
        |v: &Value| v["headers"]["authorization"].as_str().unwrap().strip_prefix("Bearer ").unwrap().to_owned();
    let token = bearer(&got[0]);
    assert!(got.iter().all(|g| bearer(g) == token), "one token for every call: {got:?}");
    let info: Value = rt.block_on(async {
        let r = op
            .http
            .post(meta["introspection_endpoint"].as_str().unwrap())
            .basic_auth("tickets-proxy", Some(CLIENT_SECRET))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    });
    assert_eq!((info["active"].as_bool(), info["client_id"].as_str()), (Some(true), Some("tickets-proxy")), "{info}");
    // Neither the client secret nor the token reached the agent or the audit log.
    let audit = p.run(&["audit", "list", "--limit", "1000"]).to_string();
    for secret in [CLIENT_SECRET, token.as_str()] {
        assert!(!received.contains(secret) && !audit.contains(secret));
    }
}
