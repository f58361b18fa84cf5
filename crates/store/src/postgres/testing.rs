//! Throw-away databases on a real PostgreSQL server, for tests (this crate's conformance
//! run, the server's multi-replica tests, benchmarks).
//!
//! The server comes from `REMIT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the machine's trust-auth instance). Each
//! [`TempDb`] creates a fresh database with a random name and drops it (terminating any
//! connections still open) when the guard is dropped.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::rows::map_err;
use crate::{Result, StoreError};

/// The admin URL tests use to reach PostgreSQL.
pub fn admin_url() -> String {
    std::env::var("REMIT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database that exists for as long as this guard lives.
#[derive(Debug)]
pub struct TempDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TempDb {
    pub async fn create() -> Result<TempDb> {
        Self::create_on(&admin_url()).await
    }

    pub async fn create_on(admin: &str) -> Result<TempDb> {
        // Unique per process (counter) and across processes and runs (pid, clock).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("remit_test_{}_{n}_{}", std::process::id(), nanos % 1_000_000_000_000);
        let mut c = PgConnection::connect(admin).await.map_err(|e| {
            StoreError::Unavailable(format!("test postgres at {}: {}", super::redact_url(admin), map_err(e)))
        })?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.map_err(map_err)?;
        let _ = c.close().await;
        Ok(TempDb { url: with_database(admin, &name), name, admin: admin.to_owned() })
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any async context we can rely on: use a private runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// A private PostgreSQL server (`initdb` + `pg_ctl` on a free loopback port) for tests that
/// stop, restart or kill the database, so they never touch the machine's shared server.
/// Runs the server as the `postgres` user when the tests run as root (initdb refuses root).
#[derive(Debug)]
pub struct PgCluster {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    as_root: bool,
}

fn find_pg_bin() -> Result<std::path::PathBuf> {
    if let Ok(b) = std::env::var("REMIT_PG_BIN") {
        return Ok(b.into());
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| StoreError::Unavailable(format!("no PostgreSQL binaries (set REMIT_PG_BIN): {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| StoreError::Unavailable("no initdb under /usr/lib/postgresql (set REMIT_PG_BIN)".into()))
}

impl PgCluster {
    /// Creates and starts a new cluster that trusts every local login.
    pub fn start() -> Result<PgCluster> {
        Self::start_with(None)
    }

    /// Creates and starts a new cluster with password authentication (`scram-sha-256` for
    /// every connection), the `postgres` superuser's password being `password`.
    pub fn start_with_password(password: &str) -> Result<PgCluster> {
        Self::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Result<PgCluster> {
        let bin = find_pg_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| StoreError::Unavailable(format!("no free port: {e}")))?
            .port();
        let dir = std::env::temp_dir().join(format!("remit-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Internal(e.to_string()))?;
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let c = PgCluster { port, dir, bin, as_root };
        if as_root {
            c.run("chown", &["postgres", &c.dir.to_string_lossy()], false)?;
        }
        let data = c.dir.join("data").to_string_lossy().into_owned();
        match password {
            None => c.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"], true)?,
            Some(pw) => {
                let file = c.dir.join("pwfile");
                std::fs::write(&file, pw).map_err(|e| StoreError::Internal(e.to_string()))?;
                let pwfile = format!("--pwfile={}", file.to_string_lossy());
                let args = ["-D", &data, "-A", "scram-sha-256", "-U", "postgres", &pwfile, "--no-sync"];
                c.run("initdb", &args, true)?;
                let _ = std::fs::remove_file(&file);
            }
        }
        c.pg_ctl_start()?;
        Ok(c)
    }

    fn run(&self, prog: &str, args: &[&str], pg_tool: bool) -> Result<()> {
        let path = if pg_tool { self.bin.join(prog).to_string_lossy().into_owned() } else { prog.to_owned() };
        let mut cmd = if self.as_root && pg_tool {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = cmd.args(args).output().map_err(|e| StoreError::Unavailable(format!("{prog}: {e}")))?;
        if !out.status.success() {
            return Err(StoreError::Unavailable(format!(
                "{prog} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let log = self.dir.join("log").to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.to_string_lossy()
        );
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-o", &opts, "start"], true)
    }

    /// The admin URL of this cluster (with `password`, for a cluster started with one).
    pub fn admin_url_with(&self, password: &str) -> String {
        format!("postgres://postgres:{password}@127.0.0.1:{}/postgres", self.port)
    }

    /// The admin URL of this cluster.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server: `fast` (clean, disconnects clients) or `immediate` (like a crash).
    pub fn stop(&self, mode: &str) -> Result<()> {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"], true)
    }

    /// Starts it again after [`PgCluster::stop`], on the same port.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
