//! A real Remit server on 127.0.0.1:0 over a real SQLite file, for integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod oidc;
pub mod signin;

use std::sync::Arc;

use remit_core::time::{ManualClock, UnixMillis};
use remit_server::App;
use remit_server::config::Config;
use serde_json::{Value, json};

pub struct TestServer {
    pub url: String,
    pub admin: String,
    pub app: Arc<App>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(tweak, None, None).await
    }

    /// One replica on a shared PostgreSQL database. The first one (`admin: None`)
    /// initializes it; the others join with the same KEK and the first one's credential.
    pub async fn start_replica(db_url: &str, kek: &str, admin: Option<String>) -> Self {
        let url = db_url.to_owned();
        Self::start_full(move |c| c.store = url, Some(kek), admin).await
    }

    pub async fn start_full(tweak: impl FnOnce(&mut Config), env_kek: Option<&str>, admin: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = Config { data_dir: dir.path().to_path_buf(), listen: addr, ..Config::default() };
        tweak(&mut cfg);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let clock = ManualClock::new(UnixMillis(now));
        let (app, created) = remit_server::bootstrap(cfg, env_kek, Arc::new(clock.clone()), true).await.unwrap();
        let admin = match admin {
            Some(a) => a,
            None => created.expect("a fresh store is initialized").admin_token,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serve_app = app.clone();
        let task = tokio::spawn(async move {
            remit_server::serve(serve_app, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            admin,
            app,
            clock,
            http: reqwest::Client::new(),
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Stops the server and hands back its data directory (to start again on it).
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        let TestServer { dir, shutdown, task, .. } = self;
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
        if let Some(t) = task {
            t.await.unwrap();
        }
        dir
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("remit.db")
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&self.admin.clone()), Some(body)).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, Some(&self.admin.clone()), None).await
    }

    /// Introspects `token` with the admin credential; returns the response body.
    pub async fn introspect(&self, token: &str) -> Value {
        let resp = self
            .http
            .post(format!("{}/oauth2/introspect", self.url))
            .bearer_auth(&self.admin)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn active(&self, token: &str) -> bool {
        self.introspect(token).await["active"].as_bool().unwrap()
    }

    /// Creates workflow `deploy` (max ttl 600s) and agent `deploy-bot`.
    pub async fn setup(&self) {
        let (s, b) = self
            .admin_post(
                "/v1/workflows",
                json!({"name": "deploy", "purpose": "ship releases", "owner": "alice@example.com",
                       "max_task_ttl_seconds": 600, "ceiling": "confidential"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, _) = self
            .admin_post(
                "/v1/agents",
                json!({"name": "deploy-bot", "owner": "bob@example.com", "workflows": ["deploy"]}),
            )
            .await;
        assert_eq!(s, 201);
    }

    /// A join token for `deploy-bot`, redeemed; returns the instance token.
    pub async fn join(&self) -> String {
        let (s, jt) = self.admin_post("/v1/agents/deploy-bot/join-tokens", json!({})).await;
        assert_eq!(s, 201);
        let (s, inst) = self.call("POST", "/v1/join", None, Some(json!({"join_token": jt["token"]}))).await;
        assert_eq!(s, 201, "{inst}");
        inst["token"].as_str().unwrap().to_owned()
    }

    /// Starts a task through an instance; returns (task id, token).
    pub async fn start_task(&self, instance_token: &str) -> (String, String) {
        let (s, t) = self
            .call(
                "POST",
                "/v1/tasks",
                Some(instance_token),
                Some(json!({"workflow": "deploy", "intent": "deploy v1.2 to prod", "audience": ["tools"], "ttl_seconds": 300})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
    }

    pub async fn audit_head(&self) -> u64 {
        self.app.store.audit().head().await.unwrap().0
    }
}

/// Reads a policy directory into a bundle, as `remit policy push DIR` does.
pub fn bundle_from_dir(dir: &std::path::Path) -> remit_policy::Bundle {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut b = remit_policy::Bundle::default();
    for p in &names {
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        match p.extension().and_then(|e| e.to_str()) {
            Some("cedar") => {
                b.policies.push(remit_policy::PolicyFile { name: file, source: std::fs::read_to_string(p).unwrap() })
            }
            Some("cedarschema") => {
                b.schema.push_str(&std::fs::read_to_string(p).unwrap());
                b.schema.push('\n');
            }
            _ if file == "mapping.json" => {
                b.mapping = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
            }
            _ => {}
        }
    }
    b
}

/// The shared test venv's interpreter: `REMIT_TEST_PYTHON` (`scripts/test.sh` sets it), else
/// what `scripts/python-env.sh` builds.
pub fn python() -> String {
    if let Ok(p) = std::env::var("REMIT_TEST_PYTHON")
        && !p.trim().is_empty()
    {
        return p.trim().to_owned();
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python-env.sh");
    let out = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; set REMIT_TEST_PYTHON", script.display()));
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
