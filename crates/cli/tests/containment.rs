//! Automatic containment end to end, on the real server over real sockets: a task token
//! presented from a second place is a sharing event that suspends the task (the default rule);
//! a gateway asking about a task on its behalf is not; a deny-rate spike under a workflow's
//! declared rule suspends the workflow; a signed external risk signal suspends its task; every
//! trip is audited with its evidence and a human resumes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RISK_SECRET: &str = "risk-detector-shared-secret-0123456789";

struct Env {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    s: common::Server,
    admin: String,
    inst: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// The `tickets` tool's own secret (it introspects its credentials with it).
    tickets_secret: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(dir.path().join("risk-secret"), RISK_SECRET).unwrap();
        // 127.0.0.1 is a trusted proxy: its `X-Forwarded-For` names the client.
        let conf = format!(
            "[limits]\ntrusted_proxies = [\"127.0.0.1\"]\n[governance]\nrisk_secret_file = \"{}\"\n",
            dir.path().join("risk-secret").display()
        );
        std::fs::write(data.join("remit.toml"), conf).unwrap();
        let s = common::serve(&data, &[], &[]);
        let run = |args: &[&str]| common::remit_json(&s.url, &data, args, None);
        #[rustfmt::skip]
        let tickets = run(&["tool", "create", "tickets", "--audience", "https://tickets.example", "--scope", "read", "--owner", "o@example.com"]);
        let tickets_secret = tickets["introspection_secret"].as_str().unwrap().to_owned();
        for w in ["w", "w2"] {
            run(&["workflow", "create", w, "--purpose", "p", "--owner", "alice@example.com", "--tool", "tickets"]);
        }
        run(&["agent", "create", "bot", "--workflow", "w", "--workflow", "w2", "--owner", "alice@example.com"]);
        let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
        let jt = run(&["agent", "join-token", "bot"]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let http = reqwest::Client::new();
        let inst = rt.block_on(async {
            let schema = "action read, write appliesTo { principal: [Task], resource: [Tool], context: TaskContext };";
            let policy = "permit (principal, action == Action::\"read\", resource);";
            let policies = json!({"schema": schema, "policies": [{"name": "p.cedar", "source": policy}]});
            let r =
                http.put(format!("{}/v1/policies", s.url)).bearer_auth(&admin).json(&policies).send().await.unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            let r =
                http.post(format!("{}/v1/join", s.url)).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
            r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
        });
        Env { _dir: dir, data, s, admin, inst, http, rt, tickets_secret }
    }

    fn start(&self, workflow: &str) -> (String, String) {
        self.rt.block_on(async {
            let b = json!({"workflow": workflow, "intent": "triage", "audience": ["remit"], "ttl_seconds": 300});
            let r = self.http.post(format!("{}/v1/tasks", self.s.url)).bearer_auth(&self.inst).json(&b).send();
            let t: Value = r.await.unwrap().json().await.unwrap();
            (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
        })
    }

    fn admin_get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = self.http.get(format!("{}{path}", self.s.url)).bearer_auth(&self.admin).send().await.unwrap();
            r.json().await.unwrap()
        })
    }

    /// Waits (a hang guard, not a performance bound) until `f` holds.
    fn until(&self, what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < end, "{what} never happened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn task_state(&self, id: &str) -> String {
        self.admin_get(&format!("/v1/tasks/{id}"))["state"].as_str().unwrap_or_default().to_owned()
    }

    /// The audit records of `action`, their `detail` parsed.
    fn audit(&self, action: &str) -> Vec<Value> {
        let all =
            self.admin_get(&format!("/v1/audit?action={action}&limit=1000")).as_array().cloned().unwrap_or_default();
        all.into_iter()
            .map(|mut r| {
                if let Some(d) = r["detail"].as_str() {
                    r["detail"] = serde_json::from_str(d).unwrap_or(Value::Null);
                }
                r
            })
            .collect()
    }
}

#[test]
fn a_token_from_a_second_place_is_shared_and_the_task_is_suspended() {
    let e = Env::new();
    // A gateway asks about a task on its behalf (the task token in the body) from elsewhere:
    // the gateway is the bearer, the task the subject — no sharing.
    let (t0, tok0) = e.start("w");
    e.rt.block_on(async {
        let r = e.http.get(format!("{}/v1/tasks/{t0}", e.s.url)).bearer_auth(&tok0).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let gateway = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().unwrap()).build().unwrap();
        let body = json!({"token": tok0, "action": {"name": "read"}, "resource": {"type": "Tool", "id": "tickets"}});
        let r =
            gateway.post(format!("{}/v1/decisions", e.s.url)).bearer_auth(&e.inst).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    });

    // Presented directly from two client addresses (127.0.0.1, then 127.0.0.2).
    let (t1, tok1) = e.start("w");
    e.rt.block_on(async {
        let r = e.http.get(format!("{}/v1/tasks/{t1}", e.s.url)).bearer_auth(&tok1).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let other = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().unwrap()).build().unwrap();
        let r = other.get(format!("{}/v1/tasks/{t1}", e.s.url)).bearer_auth(&tok1).send().await.unwrap();
        assert_eq!(r.status(), 200);
    });
    e.until("t1's suspension", || e.task_state(&t1) == "revoked");
    let sharing = e.audit("security.token_sharing");
    let ev = sharing.iter().find(|r| r["task"] == t1.as_str()).expect("a sharing event for t1");
    assert_eq!(ev["detail"]["first"]["addr"], "127.0.0.1");
    assert_eq!(ev["detail"]["now"]["addr"], "127.0.0.2");
    let trip = e.audit("containment.trip");
    let trip = trip.iter().find(|r| r["task"] == t1.as_str()).expect("a containment record for t1");
    assert_eq!(trip["detail"]["signal"], "sharing");
    assert_eq!(trip["detail"]["action"], "suspend_task");
    assert_eq!(trip["detail"]["evidence"]["now"]["addr"], "127.0.0.2");
    // Its token is refused now; the task the gateway asked about was never touched.
    e.rt.block_on(async {
        let r = e.http.get(format!("{}/v1/tasks/{t1}", e.s.url)).bearer_auth(&tok1).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
    assert!(!sharing.iter().any(|r| r["task"] == t0.as_str()), "a gateway's question is no sharing: {sharing:?}");
    assert_eq!(e.task_state(&t0), "active");

    // One instance identity used from a second place: its token from 127.0.0.2 is a sharing
    // event naming the agent (recorded; no task to suspend).
    e.rt.block_on(async {
        let other = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().unwrap()).build().unwrap();
        let r = other.get(format!("{}/v1/tasks", e.s.url)).bearer_auth(&e.inst).send().await.unwrap();
        assert_eq!(r.status(), 200);
    });
    e.until("the instance's sharing event", || {
        e.audit("security.token_sharing").iter().any(|r| r["task"].is_null() && r["agent"] == "bot")
    });

    // Behind the trusted proxy, the forwarded address is the client's.
    let (t2, tok2) = e.start("w");
    e.rt.block_on(async {
        for from in ["198.51.100.7", "203.0.113.9"] {
            let r = e
                .http
                .get(format!("{}/v1/tasks/{t2}", e.s.url))
                .bearer_auth(&tok2)
                .header("x-forwarded-for", from)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    e.until("t2's suspension", || e.task_state(&t2) == "revoked");
    let ev = e.audit("security.token_sharing");
    let ev = ev.iter().find(|r| r["task"] == t2.as_str()).unwrap();
    assert_eq!(
        (ev["detail"]["first"]["addr"].as_str(), ev["detail"]["now"]["addr"].as_str()),
        (Some("198.51.100.7"), Some("203.0.113.9"))
    );

    // A token presented to a party it was not issued for: the `wiki` tool introspects a
    // per-tool credential of `tickets` — the agent (or `tickets`) handed it on. It is inactive to
    // `wiki`, a sharing event names the task and who presented it, and the default rule for this
    // signal alerts (the presenter may be a tool that got the token legitimately: no suspension
    // on its word). `tickets` introspecting its own credential is no such event.
    #[rustfmt::skip]
    let wiki = common::remit_json(&e.s.url, &e.data, &["tool", "create", "wiki", "--audience", "https://wiki.example", "--scope", "read", "--owner", "o@example.com"], None);
    let wiki_secret = wiki["introspection_secret"].as_str().unwrap().to_owned();
    let exchange = |task_token: &str| -> String {
        e.rt.block_on(async {
            let form = [
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", task_token),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("audience", "https://tickets.example"),
                ("scope", "read"),
            ];
            let v: Value = e
                .http
                .post(format!("{}/oauth2/token", e.s.url))
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned()
        })
    };
    let introspect = |secret: &str, token: &str| -> Value {
        e.rt.block_on(async {
            let r = e.http.post(format!("{}/oauth2/introspect", e.s.url)).bearer_auth(secret).form(&[("token", token)]);
            r.send().await.unwrap().json().await.unwrap()
        })
    };
    let (t4, tok4) = e.start("w");
    assert_eq!(introspect(&e.tickets_secret, &exchange(&tok4))["active"], true, "its own credential");
    let (t3, tok3) = e.start("w");
    assert_eq!(introspect(&wiki_secret, &exchange(&tok3))["active"], false);
    e.until("the misdirected token's alert", || {
        e.audit("containment.trip").iter().any(|r| r["task"] == t3.as_str() && r["detail"]["signal"] == "misdirected")
    });
    let trip = e.audit("containment.trip");
    let trip = trip.iter().find(|r| r["task"] == t3.as_str()).unwrap();
    assert_eq!(trip["detail"]["action"], "alert");
    assert_eq!(e.task_state(&t3), "active", "an alert, not a suspension");
    let ev = e.audit("security.token_sharing");
    let ev = ev.iter().find(|r| r["task"] == t3.as_str()).expect("a sharing event for t3");
    assert_eq!(
        (ev["detail"]["presented_to"].as_str(), ev["detail"]["via"].as_str(), ev["detail"]["by"]["tool"].as_str()),
        (Some("tool:wiki"), Some("introspection"), Some("wiki"))
    );
    assert_eq!(ev["detail"]["audience"], json!(["https://tickets.example"]));
    assert!(!e.audit("security.token_sharing").iter().any(|r| r["task"] == t4.as_str()));
    assert_eq!(e.task_state(&t4), "active");
}

#[test]
fn a_deny_rate_spike_suspends_the_workflow_and_a_signed_risk_signal_its_task() {
    let e = Env::new();
    let run = |args: &[&str], stdin: Option<&str>| common::remit_json(&e.s.url, &e.data, args, stdin);
    // w2 declares: half its decisions denied over a minute (at least 10) suspends it.
    let rules = json!({"containment": [
        {"signal": "deny_rate", "scope": "workflow", "window_secs": 60, "min_calls": 10, "ratio": 0.5,
         "action": "suspend_workflow"}]});
    let set = run(&["governance", "set", "w2", "--reason", "contain probing", "--file", "-"], Some(&rules.to_string()));
    assert_eq!(set["declared"], true);
    // A bad rule is refused with its name.
    let bad = json!({"settings": {"containment": [{"signal": "deny_rate", "window_secs": 0, "min_calls": 1, "ratio": 0.5,
        "action": "alert"}]}, "reason": "x"});
    e.rt.block_on(async {
        let r = e.http.put(format!("{}/v1/workflows/w2/governance", e.s.url)).bearer_auth(&e.admin).json(&bad).send();
        let r = r.await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("window_secs"));
    });
    let (a, tok_a) = e.start("w2");
    let (b, _) = e.start("w2");
    // Reads are allowed, writes denied: 4 reads, then writes until the workflow is stopped.
    let decide = |tok: &str, action: &str| -> u16 {
        e.rt.block_on(async {
            let body = json!({"action": {"name": action}, "resource": {"type": "Tool", "id": "tickets"}});
            e.http
                .post(format!("{}/v1/decisions", e.s.url))
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    for _ in 0..4 {
        assert_eq!(decide(&tok_a, "read"), 200);
    }
    for _ in 0..6 {
        decide(&tok_a, "write");
    }
    e.until("w2's suspension", || e.admin_get("/v1/workflows/w2")["state"] == "suspended");
    assert_eq!(e.task_state(&a), "revoked");
    assert_eq!(e.task_state(&b), "revoked", "every task of the workflow");
    let trip = e.audit("containment.trip");
    let trip = trip.iter().find(|r| r["workflow"] == "w2" && r["detail"]["signal"] == "deny_rate").unwrap();
    assert_eq!(trip["detail"]["action"], "suspend_workflow");
    assert_eq!(trip["detail"]["evidence"]["denied"], 6);
    assert_eq!(trip["detail"]["evidence"]["calls"], 10);
    let kill = e.audit("workflow.suspend");
    assert!(kill.iter().any(|r| r["workflow"] == "w2" && r["actor"] == "governance:containment"), "{kill:?}");
    // A human resumes it; the counters started over.
    run(&["workflow", "resume", "w2", "--reason", "probing explained"], None);
    let (_, tok_c) = e.start("w2");
    assert_eq!(decide(&tok_c, "write"), 200, "a denied decision is still an answer");
    assert_eq!(e.admin_get("/v1/workflows/w2")["state"], "active");

    // A detector's signed risk signal about a task of w: the default rule suspends it.
    let (t, _) = e.start("w");
    let sign = |secret: &str, score: f64| -> (String, String) {
        let body = json!({"task": t, "score": score, "source": "injection-detector", "reason": "prompt injection"})
            .to_string();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sig = remit_token_sign(secret.as_bytes(), now, body.as_bytes());
        (body, sig)
    };
    let post = |(body, sig): &(String, String)| -> (u16, Value) {
        e.rt.block_on(async {
            let r =
                e.http.post(format!("{}/v1/signals/risk", e.s.url)).header("remit-signature", sig).body(body.clone());
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    };
    let send = |secret: &str, score: f64| -> u16 { post(&sign(secret, score)).0 };
    assert_eq!(send("not-the-secret-at-all-0123456789", 0.95), 401);
    assert_eq!(send(RISK_SECRET, 0.3), 202);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(e.task_state(&t), "active", "below the rule's score");
    let risky = sign(RISK_SECRET, 0.95);
    let (status, body) = post(&risky);
    assert_eq!((status, body["recorded"].as_bool()), (202, Some(true)), "{body}");
    e.until("the risky task's suspension", || e.task_state(&t) == "revoked");
    // The same signed message again (a replay within its five minutes, or a detector's retry)
    // acts once: answered, not recorded a second time.
    let signals = e.audit("security.risk_signal").len();
    let (status, body) = post(&risky);
    assert_eq!((status, body["recorded"].as_bool()), (202, Some(false)), "{body}");
    assert_eq!(e.audit("security.risk_signal").len(), signals, "a replay is not a second signal");
    let trip = e.audit("containment.trip");
    let trip = trip.iter().find(|r| r["task"] == t.as_str()).unwrap();
    assert_eq!(
        (trip["detail"]["signal"].as_str(), trip["detail"]["evidence"]["source"].as_str()),
        (Some("risk"), Some("injection-detector"))
    );
}

/// `Remit-Signature` as a detector computes it (HMAC-SHA256 over `t.body`), by Python's
/// standard library, not the server's code.
fn remit_token_sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let code = "import hashlib, hmac, sys; k, t, b = sys.argv[1].encode(), sys.argv[2], sys.argv[3].encode(); \
                print(f't={t},v1=' + hmac.new(k, t.encode() + b'.' + b, hashlib.sha256).hexdigest())";
    let o = std::process::Command::new(common::python())
        .args(["-c", code, std::str::from_utf8(secret).unwrap(), &t.to_string(), std::str::from_utf8(body).unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}
