//! Dynamic PostgreSQL logins on the real server, against a private PostgreSQL cluster with
//! password authentication (`initdb -A scram-sha-256`; the machine's shared server trusts
//! every local login, so it could not show a login failing). The engine's admin is a
//! non-superuser with `CREATEROLE`.
//!
//! - A task gets a login through the proxy's credential endpoint; it connects with a real
//!   client (sqlx), may do what the grant template says and nothing more; when the task ends
//!   the login stops working — new connections fail, the open one is terminated, the role is
//!   gone — and neither its password nor the admin's is in the audit log.
//! - `remit exec --db` puts a login in the command's environment only when the workflow
//!   allows it; a workflow kill removes it.
//! - A server SIGKILLed in the middle of revoking a workflow's leases finishes after restart,
//!   and no role is left behind.
//! - With the database down, revocation keeps retrying with backoff, reports the lease as
//!   stuck, and removes it once the database is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use remit_store::postgres::testing::PgCluster;
use serde_json::{Value, json};
use sqlx::Connection;

mod common;

use common::{BIN, remit_json as run};

const SUPER_PW: &str = "super-7c2f9e";
const ADMIN_PW: &str = "admin-pw-4b8d1a6e";

/// A cluster with a `CREATEROLE` admin owning the database `app` and its table `items`.
async fn database() -> PgCluster {
    let cluster = PgCluster::start_with_password(SUPER_PW).expect("a private PostgreSQL (initdb + pg_ctl)");
    let mut c = sqlx::PgConnection::connect(&cluster.admin_url_with(SUPER_PW)).await.unwrap();
    for sql in [
        format!("CREATE ROLE remit_admin LOGIN CREATEROLE PASSWORD '{ADMIN_PW}'"),
        "CREATE DATABASE app OWNER remit_admin".into(),
    ] {
        sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
    }
    let mut a = sqlx::PgConnection::connect(&admin_url(&cluster)).await.unwrap();
    sqlx::raw_sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one')")
        .execute(&mut a)
        .await
        .unwrap();
    cluster
}

fn admin_url(c: &PgCluster) -> String {
    format!("postgres://remit_admin:{ADMIN_PW}@127.0.0.1:{}/app", c.port)
}

/// Remit's roles that exist in the cluster.
async fn roles(c: &PgCluster) -> Vec<String> {
    let mut s = sqlx::PgConnection::connect(&c.admin_url_with(SUPER_PW)).await.unwrap();
    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'remit\\_%' AND rolname <> 'remit_admin'")
        .fetch_all(&mut s)
        .await
        .unwrap()
}

/// A workflow `w`, an agent `bot`, the tool `db` with its engine, and a policy letting `bot`'s
/// tasks `connect`.
fn setup(url: &str, data: &Path, cluster: &PgCluster, env_ok: bool) {
    let mut wf = vec!["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com", "--max-ttl", "1h"];
    if env_ok {
        wf.extend(["--env-credentials", "db"]);
    }
    run(url, data, &wf, None);
    run(url, data, &["agent", "create", "bot", "--workflow", "w", "--owner", "alice@example.com"], None);
    let engine = json!({"engine": "postgres", "admin_secret": "admin-url", "scope": "connect",
                        "grants": ["GRANT SELECT, INSERT ON items TO {{role}}"], "connection_limit": 3});
    let file = data.join("db.json");
    std::fs::write(&file, engine.to_string()).unwrap();
    #[rustfmt::skip]
    run(url, data, &["tool", "create", "db", "--audience", "https://db.example", "--scope", "connect", "--class", "data",
                     "--owner", "o@example.com", "--database", file.to_str().unwrap()], None);
    run(url, data, &["secret", "set", "db", "admin-url"], Some(&admin_url(cluster)));
    let policies = data.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("p.cedar"),
        "permit (principal, action == Action::\"connect\", resource == Tool::\"db\");",
    )
    .unwrap();
    std::fs::write(
        policies.join("s.cedarschema"),
        "action connect appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
    )
    .unwrap();
    run(url, data, &["policy", "push", policies.to_str().unwrap()], None);
}

struct Agent {
    http: reqwest::Client,
    url: String,
    instance: String,
}

impl Agent {
    async fn join(url: &str, data: &Path) -> Agent {
        let jt = run(url, data, &["agent", "join-token", "bot"], None);
        let http = reqwest::Client::new();
        let r = http.post(format!("{url}/v1/join")).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        Agent { http, url: url.to_owned(), instance: v["token"].as_str().unwrap().to_owned() }
    }

    /// Starts a task: (id, token).
    async fn task(&self) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.url))
            .bearer_auth(&self.instance)
            .json(&json!({"workflow": "w", "intent": "read the items", "ttl_seconds": 600, "audience": ["remit"]}))
            .send()
            .await
            .unwrap();
        let t: Value = r.json().await.unwrap();
        assert!(t["token"].is_string(), "{t}");
        (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
    }

    async fn login(&self, proxy: &str, token: &str) -> Value {
        let r = self.http.post(format!("{proxy}/credentials/db")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
        r.json().await.unwrap()
    }
}

fn leases(url: &str, data: &Path, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["lease", "list", "--limit", "1000"];
    a.extend_from_slice(args);
    run(url, data, &a, None).as_array().cloned().unwrap_or_default()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_task_gets_a_real_postgres_login_that_stops_working_when_the_task_ends() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = rt.block_on(database());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("remit.toml"), "[proxy]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let s = common::serve(&data, &[], &[]);
    let proxy = s.proxy_url.clone().unwrap();
    setup(&s.url, &data, &cluster, false);
    let agent = rt.block_on(Agent::join(&s.url, &data));
    let (task, token) = rt.block_on(agent.task());

    // Without a token, or with the instance's token (not a task's), there is no login.
    rt.block_on(async {
        let r = agent.http.post(format!("{proxy}/credentials/db")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = agent.http.post(format!("{proxy}/credentials/db")).bearer_auth(&agent.instance).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
    let login = rt.block_on(agent.login(&proxy, &token));
    let db_url = login["url"].as_str().unwrap().to_owned();
    let password = login["password"].as_str().unwrap().to_owned();
    assert!(db_url.starts_with("postgres://remit_") && !db_url.contains(ADMIN_PW), "{db_url}");

    // It works, within its grants only; the session stays open across the end of the task.
    let mut held = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&db_url).await.expect("the login connects");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&mut c).await.unwrap();
        assert_eq!(n, 1);
        sqlx::query("INSERT INTO items VALUES (2, 'two')").execute(&mut c).await.unwrap();
        let e = sqlx::query("DELETE FROM items").execute(&mut c).await.unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
        c
    });
    let l = leases(&s.url, &data, &["--task", &task]);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["state"], "active");
    assert_eq!(rt.block_on(roles(&cluster)), [l[0]["handle"].as_str().unwrap().to_owned()]);
    // The password is for the task only: the engine gave PostgreSQL its SCRAM verifier.
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&cluster.admin_url_with(SUPER_PW)).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(l[0]["handle"].as_str().unwrap())
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert!(stored.starts_with("SCRAM-SHA-256$4096:") && !stored.contains(&password));
    });

    // The task ends: the login goes.
    let done: Value = rt.block_on(async {
        let r = agent
            .http
            .post(format!("{}/v1/tasks/{task}/complete", s.url))
            .bearer_auth(&agent.instance)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    });
    assert_eq!(done["leases_pending"], 1, "{done}");
    wait_until("the lease to be revoked", 20, || leases(&s.url, &data, &["--task", &task])[0]["state"] == "revoked");
    rt.block_on(async {
        let e = sqlx::PgConnection::connect(&db_url).await.expect_err("the login is gone");
        assert!(e.to_string().contains("password authentication failed"), "{e}");
        assert!(sqlx::query("SELECT 1").execute(&mut held).await.is_err(), "the open session was terminated");
    });
    assert!(rt.block_on(roles(&cluster)).is_empty());
    // A finished task gets no new login.
    rt.block_on(async {
        let r = agent.http.post(format!("{proxy}/credentials/db")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });

    // Nothing secret in the audit log; the login's life is in it.
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let audit = rt.block_on(async {
        let r = agent.http.get(format!("{}/v1/audit/export", s.url)).bearer_auth(&admin).send().await.unwrap();
        r.text().await.unwrap()
    });
    for secret in [password.as_str(), ADMIN_PW, &db_url] {
        assert!(!audit.contains(secret), "the audit log holds a secret");
    }
    for action in ["lease.create", "lease.revoke"] {
        assert!(audit.contains(action), "{action} is audited");
    }
    let status = run(&s.url, &data, &["status"], None);
    assert_eq!(status["leases"], json!({"active": 0, "revoking": 0, "stuck": 0}));

    // Disabling the tool cuts its logins like a kill.
    let (_, token) = rt.block_on(agent.task());
    let db_url = rt.block_on(agent.login(&proxy, &token))["url"].as_str().unwrap().to_owned();
    rt.block_on(async { sqlx::PgConnection::connect(&db_url).await.expect("the login connects") });
    run(&s.url, &data, &["tool", "disable", "db", "--reason", "breach at the vendor"], None);
    wait_until("the tool's logins to be removed", 20, || rt.block_on(roles(&cluster)).is_empty());
    rt.block_on(async { assert!(sqlx::PgConnection::connect(&db_url).await.is_err()) });
    assert_eq!(leases(&s.url, &data, &["--state", "revoked"]).len(), 2);
}

#[test]
fn exec_puts_a_login_in_the_environment_only_when_the_workflow_allows_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = rt.block_on(database());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("remit.toml"), "[proxy]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let s = common::serve(&data, &[], &[]);
    let proxy = s.proxy_url.clone().unwrap();
    setup(&s.url, &data, &cluster, false);
    let out = dir.path().join("url");
    let exec = |data: &Path| {
        let jt = run(&s.url, data, &["agent", "join-token", "bot"], None);
        #[rustfmt::skip]
        let child = Command::new(BIN)
            .args(["exec", "--workflow", "w", "--intent", "nightly report", "--db", "db", "--local-demo", "--",
                   "sh", "-c", &format!("echo \"$DATABASE_URL\" > {}; sleep 60", out.display())])
            .env("REMIT_URL", &s.url)
            .env("REMIT_DATA_DIR", data)
            .env("REMIT_PROXY_URL", &proxy)
            .env("REMIT_JOIN_TOKEN", jt["token"].as_str().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
    };
    // Not allowed: refused before the command runs.
    let o = exec(&data).wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not let logins"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());

    // Allowed: the command gets a working login, audited; a workflow kill removes it.
    #[rustfmt::skip]
    run(&s.url, &data, &["workflow", "set-trust", "w", "--env-credentials", "db", "--reason", "nightly report needs it"], None);
    let mut child = exec(&data);
    wait_until("the command to write its URL", 20, || std::fs::read_to_string(&out).is_ok_and(|u| u.trim().len() > 10));
    let db_url = std::fs::read_to_string(&out).unwrap().trim().to_owned();
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&db_url).await.expect("the login connects");
        sqlx::query("SELECT count(*) FROM items").execute(&mut c).await.unwrap();
    });
    let audit = run(&s.url, &data, &["audit", "list", "--action", "lease.env"], None);
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    let killed = run(&s.url, &data, &["workflow", "suspend", "w", "--reason", "incident"], None);
    assert_eq!(killed["leases_pending"], 1, "{killed}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "exec stops the command when its task ends");
    wait_until("the lease to be revoked", 20, || leases(&s.url, &data, &["--state", "revoked"]).len() == 1);
    rt.block_on(async {
        assert!(sqlx::PgConnection::connect(&db_url).await.is_err());
    });
}

#[test]
fn a_server_killed_mid_revocation_finishes_after_restart_and_stuck_leases_are_retried() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = rt.block_on(database());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Small batches with a pause: the revocation of 40 logins takes seconds, so the kill lands
    // in the middle of it. A short claim so the restarted server takes over soon.
    std::fs::write(
        data.join("remit.toml"),
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[leases]\nbatch = 4\nbatch_pause = \"250ms\"\nclaim = \"5s\"\nbackoff = \"50ms\"\nconnect_timeout = \"300ms\"\n",
    )
    .unwrap();
    let mut s = common::serve(&data, &[], &[]);
    let proxy = s.proxy_url.clone().unwrap();
    setup(&s.url, &data, &cluster, false);
    let agent = rt.block_on(Agent::join(&s.url, &data));
    let (_, token) = rt.block_on(agent.task());
    for _ in 0..40 {
        rt.block_on(agent.login(&proxy, &token));
    }
    assert_eq!(rt.block_on(roles(&cluster)).len(), 40);
    let killed = run(&s.url, &data, &["workflow", "suspend", "w", "--reason", "incident"], None);
    assert_eq!(killed["leases_pending"], 40, "{killed}");
    wait_until("revocation to be under way", 20, || !leases(&s.url, &data, &["--state", "revoked"]).is_empty());
    let done = leases(&s.url, &data, &["--state", "revoked"]).len();
    assert!(done < 40, "the kill must land mid-revocation ({done} of 40 done)");
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let left = rt.block_on(roles(&cluster)).len();
    assert!(left > 0, "roles are left when the server dies");

    // Restarted, it finishes the job from the store.
    let s = common::serve(&data, &[], &[]);
    wait_until("every lease to be revoked", 60, || leases(&s.url, &data, &["--state", "revoked"]).len() == 40);
    assert!(rt.block_on(roles(&cluster)).is_empty(), "no role is left behind");

    // The database goes down: revocation retries with backoff and reports the lease as stuck,
    // never dropping it; back up, the login is removed.
    run(&s.url, &data, &["workflow", "resume", "w", "--reason", "incident over"], None);
    let agent = rt.block_on(Agent::join(&s.url, &data));
    let proxy = s.proxy_url.clone().unwrap();
    let (task, token) = rt.block_on(agent.task());
    rt.block_on(agent.login(&proxy, &token));
    cluster.stop("fast").unwrap();
    run(&s.url, &data, &["task", "revoke", &task, "--reason", "done"], None);
    wait_until("the lease to be stuck", 30, || leases(&s.url, &data, &["--stuck"]).len() == 1);
    let stuck = &leases(&s.url, &data, &["--stuck"])[0];
    assert_eq!(stuck["state"], "revoking");
    assert!(stuck["last_error"].as_str().unwrap().contains("postgres"), "{stuck}");
    assert!(!stuck["last_error"].as_str().unwrap().contains(ADMIN_PW));
    assert_eq!(run(&s.url, &data, &["status"], None)["leases"]["stuck"], 1);
    assert_eq!(
        run(&s.url, &data, &["audit", "list", "--action", "lease.stuck"], None).as_array().map(Vec::len),
        Some(1)
    );
    cluster.restart().unwrap();
    wait_until("the stuck lease to be revoked", 30, || {
        leases(&s.url, &data, &["--task", &task])[0]["state"] == "revoked"
    });
    assert!(rt.block_on(roles(&cluster)).is_empty());
}
