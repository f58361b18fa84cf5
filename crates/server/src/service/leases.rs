//! Dynamic credentials: a login made for one task by its tool's engine, and the background
//! revocation that removes it when the task ends, the lease expires or someone revokes it.
//!
//! Issuing ([`App::issue_login`]): the lease row is written first (inside a transaction that
//! re-checks the task is live), then the engine makes the login with a fresh password whose
//! SCRAM verifier is all the database sees; the connection URL goes to the task once and is
//! kept nowhere. A login that fails to be made is marked for revocation at once.
//!
//! Revoking ([`App::revoke_due`], run by [`revoker`]): claims due leases in bounded batches
//! (`[leases] batch`), asks each tool's engine to remove them, and records every outcome — a
//! success as `lease.revoke`, a failure as one more attempt scheduled after
//! `remit_core::lease::backoff`, with a `lease.stuck` record when it has failed
//! `STUCK_AFTER_ATTEMPTS` times. Nothing is ever dropped: a stuck lease keeps being retried
//! and shows in `remit lease list --stuck` and `remit status`. A kill wakes the revoker at
//! once; on other replicas the change feed does.

use std::collections::BTreeMap;
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{LeaseId, SecretName};
use remit_core::lease::{self, DatabaseConfig, Lease, LeaseState, STUCK_AFTER_ATTEMPTS};
use remit_core::time::UnixMillis;
use remit_core::tool::Tool;
use remit_policy::admin::{AdminAction, AdminTarget};
use remit_store::{LeaseCounts, LeaseFilter, TaskSnapshot};
use zeroize::Zeroizing;

use super::Caller;
use super::admin::check_reason;
use crate::app::App;
use crate::engines::{Admin, EngineError, NewLogin};
use crate::error::Error;
use crate::metrics::Metrics;

/// A login made for a task: everything it needs to connect, once.
pub struct IssuedLogin {
    pub lease: Lease,
    pub username: String,
    pub password: Zeroizing<String>,
    /// `postgres://user:password@host:port/database` (only `sslmode` kept from the admin URL).
    pub url: Zeroizing<String>,
    /// The environment variable `remit exec` sets (when the login is for a child's
    /// environment).
    pub env: String,
}

impl std::fmt::Debug for IssuedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedLogin({}, {})", self.lease.id, self.username)
    }
}

/// The URL a task connects with: the admin URL's host, port, database and `sslmode`, with
/// the new login (and `connect_host` in place of the host when set).
fn connection_url(admin: &str, cfg: &DatabaseConfig, user: &str, password: &str) -> Result<String, Error> {
    let bad = || Error::Unavailable("the tool's admin secret is not a postgres:// URL".into());
    let admin = url::Url::parse(admin).map_err(|_| bad())?;
    if !matches!(admin.scheme(), "postgres" | "postgresql") || admin.host_str().is_none() {
        return Err(bad());
    }
    let host = match &cfg.connect_host {
        Some(h) => h.clone(),
        None => match admin.port() {
            Some(p) => format!("{}:{p}", admin.host_str().unwrap_or_default()),
            None => admin.host_str().unwrap_or_default().to_owned(),
        },
    };
    let mut out = url::Url::parse(&format!("postgres://{host}")).map_err(|_| bad())?;
    out.set_path(admin.path());
    out.set_username(user).map_err(|_| bad())?;
    out.set_password(Some(password)).map_err(|_| bad())?;
    let keep: Vec<(String, String)> = admin.query_pairs().into_owned().filter(|(k, _)| k == "sslmode").collect();
    if !keep.is_empty() {
        out.query_pairs_mut().extend_pairs(keep);
    }
    Ok(out.to_string())
}

impl App {
    /// A tool's engine admin URL, opened from its sealed secret, with the version's
    /// fingerprint.
    async fn engine_admin(&self, tool: &Tool, cfg: &DatabaseConfig) -> Result<(String, Zeroizing<String>), Error> {
        let name = SecretName::parse(&cfg.admin_secret)?;
        let versions = self.store.secrets().secret_versions(&tool.name, &name).await?;
        let v = remit_core::secret::current(&versions, self.clock.now()).ok_or_else(|| {
            Error::Unavailable(format!("tool `{}` has no usable secret `{name}` (its engine's admin URL)", tool.name))
        })?;
        let value = self.open_secret(v)?;
        let url = std::str::from_utf8(&value)
            .map_err(|_| Error::Unavailable(format!("secret `{name}` of tool `{}` is not text", tool.name)))?;
        Ok((v.fingerprint.clone(), Zeroizing::new(url.trim().to_owned())))
    }

    /// Makes a login on `tool`'s database for the task in `snap` (authenticated and allowed
    /// by the caller). `for_env`: the login goes into a child's environment (`remit exec`),
    /// which the task's workflow must allow for this tool.
    pub async fn issue_login(
        &self,
        snap: &TaskSnapshot,
        tool: &Tool,
        actor: &str,
        for_env: bool,
    ) -> Result<IssuedLogin, Error> {
        let result = self.issue_login_inner(snap, tool, actor, for_env).await;
        self.metrics.leases.get_or_create(&Metrics::label(if result.is_ok() { "issued" } else { "refused" })).inc();
        result
    }

    async fn issue_login_inner(
        &self,
        snap: &TaskSnapshot,
        tool: &Tool,
        actor: &str,
        for_env: bool,
    ) -> Result<IssuedLogin, Error> {
        let cfg = tool
            .database
            .as_ref()
            .ok_or_else(|| Error::NotFound(format!("tool `{}` makes no database logins", tool.name)))?;
        let task = &snap.task;
        if for_env && !snap.workflow.trust.env_credentials.contains(tool.name.as_str()) {
            return Err(Error::Denied(format!(
                "workflow `{}` does not let logins of tool `{}` into a child's environment",
                task.workflow, tool.name
            )));
        }
        let now = self.clock.now();
        let expires_at = lease::lease_expiry(now, task.expires_at, cfg.max_ttl());
        if expires_at.0 <= now.0 + 1000 {
            return Err(Error::Conflict(format!("task `{}` ends too soon for a login", task.id)));
        }
        let (fingerprint, admin_url) = self.engine_admin(tool, cfg).await?;
        let engine = self.engines.get(cfg.engine);
        let target = engine.target(&admin_url).map_err(|e| Error::Unavailable(e.message))?;
        let mut r8 = [0u8; 8];
        self.random.fill(&mut r8);
        let role = lease::role_name(&task.id, r8);
        let password = Zeroizing::new(hex::encode(self.random.bytes32()));
        let verifier = remit_token::scram::verifier(&password, &self.random.bytes16());
        let url = Zeroizing::new(connection_url(&admin_url, cfg, &role, &password)?);
        // The login has half the claim to be made; revocation waits the whole claim for it.
        let claim = self.cfg.leases.claim;
        let hold = UnixMillis(now.0 + i64::try_from(claim.as_millis()).unwrap_or(i64::MAX));
        let l = Lease {
            id: LeaseId::from_random(self.random.bytes16()),
            tool: tool.name.clone(),
            task: task.id.clone(),
            workflow: task.workflow.clone(),
            agent: task.agent.clone(),
            engine: cfg.engine,
            handle: role.clone(),
            target,
            state: LeaseState::Active,
            created_at: now,
            expires_at,
            revoke_requested_at: None,
            revoke_reason: None,
            attempts: 0,
            next_attempt_at: Some(hold),
            last_error: None,
            revoked_at: None,
        };
        let on = |action| {
            AuditEvent::new(now, actor, action).task(&task.id).workflow(&task.workflow).agent(&task.agent).detail([
                ("lease", l.id.as_str().into()),
                ("tool", tool.name.as_str().into()),
                ("engine", cfg.engine.as_str().into()),
                ("role", role.clone().into()),
                ("target", l.target.clone().into()),
                ("expires_at", expires_at.0.into()),
                ("admin_secret", fingerprint.clone().into()),
            ])
        };
        let mut audits = vec![on(AuditAction::LeaseCreate)];
        if for_env {
            audits.push(on(AuditAction::LeaseEnv).with_detail_field("env", cfg.env_var().into()));
        }
        // Written before the login exists: a crash from here on leaves a row to clean up.
        self.store.leases().create_lease(l.clone(), audits).await?;
        let login = NewLogin {
            tool: &tool.name,
            admin_fingerprint: &fingerprint,
            admin_url: &admin_url,
            cfg,
            role: &role,
            verifier: &verifier,
            until: expires_at,
        };
        let made = match tokio::time::timeout(claim / 2, engine.create(login)).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::new("making the login timed out")),
        };
        if let Err(e) = made {
            tracing::warn!(lease = %l.id, tool = %tool.name, error = %e, "making a database login failed");
            let leases = self.store.leases();
            let marked = leases.revoke_lease(&l.id, now, "the login could not be made", None).await;
            if e.exists {
                // Someone else's role of that name: the lease ends without touching it.
                let audit = record(self.clock.now(), &l, AuditAction::LeaseRevoke)
                    .reason("a role of that name existed already; left untouched");
                let _ = leases.revoked(vec![l.id.clone()], self.clock.now(), vec![audit]).await;
            } else {
                self.lease_wake.notify_one();
            }
            if let Err(m) = marked {
                tracing::error!(lease = %l.id, error = %m, "could not mark a failed login for revocation; it expires with its task");
            }
            return Err(Error::Unavailable(format!(
                "the database did not make the login (lease {}; the server log says why)",
                l.id
            )));
        }
        // A kill, an expiry or a revoke may have come while it was made: then it goes now.
        let made = match self.store.leases().lease_made(&l.id).await {
            Ok(m) => m,
            Err(e) => {
                // The password is never handed out: the login goes.
                let _ =
                    self.store.leases().revoke_lease(&l.id, self.clock.now(), "the login's record failed", None).await;
                return Err(e.into());
            }
        };
        if !made {
            let admin = Admin { tool: &tool.name, admin_fingerprint: &fingerprint, admin_url: &admin_url };
            if let Some(Ok(())) = engine.revoke(admin, std::slice::from_ref(&role)).await.into_iter().next() {
                let audit = record(self.clock.now(), &l, AuditAction::LeaseRevoke).reason("revoked while being made");
                self.store.leases().revoked(vec![l.id.clone()], self.clock.now(), vec![audit]).await?;
            } else {
                self.lease_wake.notify_one();
            }
            return Err(Error::Conflict(format!("task `{}` ended while its login was being made", task.id)));
        }
        Ok(IssuedLogin { lease: l, username: role, password, url, env: cfg.env_var().to_owned() })
    }

    /// Leases, newest first.
    pub async fn leases(&self, caller: &Caller, filter: LeaseFilter) -> Result<Vec<Lease>, Error> {
        self.allow(caller, AdminAction::LeaseRead, AdminTarget::Installation).await?;
        Ok(self.store.leases().list_leases(filter).await?)
    }

    pub async fn lease(&self, caller: &Caller, id: &LeaseId) -> Result<Lease, Error> {
        self.allow(caller, AdminAction::LeaseRead, AdminTarget::Installation).await?;
        self.store.leases().lease(id).await?.ok_or_else(|| Error::NotFound(format!("lease `{id}` not found")))
    }

    pub async fn lease_counts(&self) -> Result<LeaseCounts, Error> {
        Ok(self.store.leases().lease_counts().await?)
    }

    /// Revokes one lease now (its task goes on). `Ok(false)` if it was not active.
    pub async fn revoke_lease(&self, caller: &Caller, id: &LeaseId, reason: &str) -> Result<bool, Error> {
        self.allow(caller, AdminAction::LeaseRevoke, AdminTarget::Installation).await?;
        check_reason(reason)?;
        let l =
            self.store.leases().lease(id).await?.ok_or_else(|| Error::NotFound(format!("lease `{id}` not found")))?;
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::LeaseRevokeRequest)
            .task(&l.task)
            .workflow(&l.workflow)
            .agent(&l.agent)
            .reason(reason)
            .detail([("lease", id.as_str().into()), ("tool", l.tool.as_str().into())]);
        let moved = self.store.leases().revoke_lease(id, now, reason, Some(audit)).await?;
        self.lease_wake.notify_one();
        Ok(moved)
    }

    /// One batch of due revocations; returns how many leases it claimed. Each tool's logins
    /// are removed concurrently with the others', so a database that is down delays only its
    /// own.
    pub async fn revoke_due(&self) -> Result<usize, Error> {
        let cfg = &self.cfg.leases;
        let now = self.clock.now();
        // A cheap read first: the claim is a write through the store's writer.
        if !self.store.leases().revocation_due(now).await? {
            return Ok(0);
        }
        let claim = i64::try_from(cfg.claim.as_millis()).unwrap_or(i64::MAX);
        let due = self.store.leases().claim_revocations(now, cfg.batch, UnixMillis(now.0 + claim)).await?;
        let claimed = due.len();
        let mut by_tool: BTreeMap<String, Vec<Lease>> = BTreeMap::new();
        for l in due {
            by_tool.entry(l.tool.to_string()).or_default().push(l);
        }
        let results = futures_util::future::join_all(by_tool.into_values().map(|ls| self.revoke_tool(ls))).await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(claimed)
    }

    /// Removes one tool's claimed logins and records each outcome.
    async fn revoke_tool(&self, leases: Vec<Lease>) -> Result<(), Error> {
        let roles: Vec<String> = leases.iter().map(|l| l.handle.clone()).collect();
        let results = match self.engine_for(&leases[0]).await {
            Ok((tool, cfg, fingerprint, url)) => {
                let engine = self.engines.get(cfg.engine);
                let target = engine.target(&url).unwrap_or_default();
                // Only logins made on the database the admin secret names now: a login made
                // elsewhere is not "gone" because this database does not know it.
                let here: Vec<String> =
                    leases.iter().filter(|l| l.target == target).map(|l| l.handle.clone()).collect();
                let admin = Admin { tool: &tool.name, admin_fingerprint: &fingerprint, admin_url: &url };
                let mut done = engine.revoke(admin, &here).await.into_iter();
                let mut out: Vec<Result<(), EngineError>> = Vec::with_capacity(leases.len());
                for l in &leases {
                    out.push(if l.target == target {
                        done.next().unwrap_or_else(|| Err(EngineError::new("no answer from the engine")))
                    } else {
                        Err(EngineError::new(format!(
                            "the tool's admin secret now names {target}; this login was made on {}",
                            l.target
                        )))
                    });
                }
                out
            }
            Err(e) => roles.iter().map(|_| Err(EngineError::new(e.to_string()))).collect(),
        };
        let at = self.clock.now();
        let (mut done, mut audits) = (Vec::new(), Vec::new());
        for (l, r) in leases.iter().zip(results) {
            match r {
                Ok(()) => {
                    done.push(l.id.clone());
                    audits.push(
                        record(at, l, AuditAction::LeaseRevoke)
                            .reason(l.revoke_reason.clone().unwrap_or_else(|| "revoked".into())),
                    );
                }
                Err(e) => {
                    let attempts = l.attempts.saturating_add(1);
                    let base = i64::try_from(self.cfg.leases.backoff.as_millis()).unwrap_or(1000);
                    let next = UnixMillis(at.0 + lease::backoff(attempts, base));
                    let audit = (attempts == STUCK_AFTER_ATTEMPTS)
                        .then(|| record(at, l, AuditAction::LeaseStuck).reason(lease::error_text(&e.message)));
                    if attempts >= STUCK_AFTER_ATTEMPTS {
                        tracing::error!(lease = %l.id, attempts, error = %e, "a lease is stuck: its login could not be removed");
                    } else {
                        tracing::warn!(lease = %l.id, attempts, error = %e, "revoking a lease failed; will retry");
                    }
                    match self.store.leases().revocation_failed(&l.id, &e.message, next, audit).await {
                        // Another replica finished it after this claim lapsed.
                        Ok(_) | Err(remit_store::StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.metrics.leases.get_or_create(&Metrics::label("failed")).inc();
                }
            }
        }
        if !done.is_empty() {
            let n = self.store.leases().revoked(done, at, audits).await?;
            self.metrics.leases.get_or_create(&Metrics::label("revoked")).inc_by(n);
        }
        Ok(())
    }

    /// A lease's tool, its engine configuration and the engine's admin URL.
    async fn engine_for(&self, l: &Lease) -> Result<(Tool, DatabaseConfig, String, Zeroizing<String>), Error> {
        let tool = self
            .store
            .tools()
            .tool(&l.tool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("tool `{}` is gone", l.tool)))?;
        let cfg = tool
            .database
            .clone()
            .ok_or_else(|| Error::NotFound(format!("tool `{}` has no engine any more", l.tool)))?;
        let (fp, url) = self.engine_admin(&tool, &cfg).await?;
        Ok((tool, cfg, fp, url))
    }
}

fn record(at: UnixMillis, l: &Lease, action: AuditAction) -> AuditEvent {
    AuditEvent::new(at, "remit", action).task(&l.task).workflow(&l.workflow).agent(&l.agent).detail([
        ("lease", l.id.as_str().into()),
        ("tool", l.tool.as_str().into()),
        ("role", l.handle.clone().into()),
        ("attempts", (l.attempts + 1).into()),
    ])
}

/// Whether a change may have marked leases for revocation (a kill or an ended task here or
/// on another replica).
fn may_mark_leases(c: &remit_store::Change) -> bool {
    use remit_store::Change;
    matches!(c, Change::Task(_) | Change::Workflow(_) | Change::Agent(_) | Change::Instance(_) | Change::Resync)
}

/// Runs revocation until `stop`: batch after batch while they come back full (with
/// `batch_pause` between), then waits for a kill, a change on the feed (coalesced) or
/// `interval`. A stop is seen between batches and during one (a batch cut short is due again
/// once its claim lapses).
pub async fn revoker(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut changes = app.store.subscribe();
    let batch = app.cfg.leases.batch as usize;
    loop {
        loop {
            if *stop.borrow() {
                return;
            }
            let result = tokio::select! {
                r = app.revoke_due() => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(n) if n >= batch => {
                    let pause = app.cfg.leases.batch_pause;
                    if !pause.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stop.changed() => return,
                        }
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "lease revocation: a batch failed; retrying later");
                    break;
                }
            }
        }
        let deadline = tokio::time::sleep(app.cfg.leases.interval);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = app.lease_wake.notified() => break,
                _ = &mut deadline => break,
                c = changes.recv() => match c {
                    Ok(c) if may_mark_leases(&c) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => changes = app.store.subscribe(),
                },
            }
        }
        // A burst of task ends wakes one pass, not one per change.
        loop {
            match changes.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    changes = app.store.subscribe();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use remit_core::lease::EngineKind;

    fn cfg() -> DatabaseConfig {
        DatabaseConfig {
            engine: EngineKind::Postgres,
            admin_secret: "admin-url".into(),
            scope: "connect".into(),
            grants: vec![],
            max_ttl_secs: None,
            connection_limit: None,
            connect_host: None,
            env: None,
        }
    }

    #[test]
    fn the_task_url_keeps_only_where_to_connect() {
        let admin = "postgres://admin:s3cret@db.internal:5433/app?sslmode=require&password=x&options=-c%20y";
        let u = connection_url(admin, &cfg(), "remit_ab_01", "pw").unwrap();
        assert_eq!(u, "postgres://remit_ab_01:pw@db.internal:5433/app?sslmode=require");
        let mut c = cfg();
        c.connect_host = Some("pgbouncer:6432".into());
        let u = connection_url("postgresql://a:b@10.0.0.1/app", &c, "r", "p").unwrap();
        assert_eq!(u, "postgres://r:p@pgbouncer:6432/app");
        let err = connection_url("mysql://admin:s3cret@h/db", &cfg(), "r", "p").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
