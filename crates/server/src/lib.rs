//! Remit's server: configuration, startup, the service layer and the HTTP API.
//!
//! - [`config`]: the typed configuration (file, env, flags).
//! - [`init`]: first-run initialization (keys, admin credential).
//! - [`app`]: the running application state.
//! - [`caller`]: who is calling, established once per request.
//! - [`service`]: the operations, one file per area, free of HTTP types, with their own
//!   error type ([`service::Error`]).
//! - [`pdp`]: the decision service (policy, entities, AuthZEN, search, task decisions,
//!   approvals), which owns its engine handle and caches.
//! - [`api`]: axum handlers, one file per area, and the middleware stack.
//! - [`listen`]: the public and admin listeners, connection caps and timeouts.
//! - [`bundles`]: federated trust domains' SPIFFE bundles, fetched and kept fresh.
//! - [`error`]: the service layer's errors (no HTTP vocabulary); `api::error` maps them to
//!   statuses in one place.
//! - [`seal`]: what Remit trusts from its database proves itself under the KEK.
//! - [`tls`]: native TLS on the public listener (rustls), with X.509-SVID client certificates.
//! - [`workload`]: the SPIFFE Workload API on a Unix socket, with Unix attestation.

pub mod api;
pub mod app;
pub mod authz;
pub mod bundles;
pub mod caller;
pub mod config;
pub mod engines;
pub mod error;
pub mod governance;
pub mod init;
pub mod listen;
pub mod metrics;
pub mod pdp;
pub mod proxy;
pub mod scim;
pub mod seal;
pub mod service;
pub mod signin;
pub mod tls;
pub mod workload;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use app::App;

/// Serves `app` on `listener`, and on the admin listener its configuration names, until
/// `shutdown` resolves; see [`serve_on`].
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin = listen::bind_admin(&app.cfg).await?;
    let workload = workload::bind(&app)?;
    let tls = tls::from_config(&app)?;
    let proxy = match app.cfg.proxy.listen {
        Some(at) => Some(TcpListener::bind(at).await?),
        None => None,
    };
    serve_on(app, listen::Listeners { public: listener, admin, workload, tls, proxy }, shutdown).await
}

/// Serves `app` on `listeners` until `shutdown` resolves, then drains in-flight requests.
/// Also runs the periodic audit checkpointer, which signs a final checkpoint on the way out.
pub async fn serve_on(
    app: Arc<App>,
    listeners: listen::Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let conn_stop = stop_rx.clone();
    let workload_stop = stop_rx.clone();
    let proxy_stop = stop_rx.clone();
    let cp_app = app.clone();
    let checkpointer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(cp_app.cfg.audit.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.changed() => break,
            }
            if let Err(e) = cp_app.checkpoint_now().await {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
            // The X.509 CA renews itself well before it expires.
            match cp_app.rotate_x509_ca_if_due().await {
                Ok(true) => tracing::info!("rotated the X.509 CA (its audit record says why)"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "checking the X.509 CA's age failed"),
            }
            // Per-tool credentials an hour past their expiry: their rows go (bounded growth).
            let before = remit_core::time::UnixMillis(cp_app.clock.now().0 - 3_600_000);
            match cp_app.store.tools().prune_credentials(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned expired per-tool credentials"),
                Err(e) => tracing::warn!(error = %e, "pruning expired credentials failed"),
            }
            // Secret versions whose overlap has ended: their sealed values go.
            match cp_app.store.secrets().prune_secrets(cp_app.clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned retired secret versions"),
                Err(e) => tracing::warn!(error = %e, "pruning retired secret versions failed"),
            }
            // Revoked leases past their retention: their rows go (their history is audited).
            let keep = i64::try_from(cp_app.cfg.leases.retention.as_millis()).unwrap_or(i64::MAX);
            let before = remit_core::time::UnixMillis(cp_app.clock.now().0.saturating_sub(keep));
            if let Err(e) = cp_app.store.leases().prune_leases(before).await {
                tracing::warn!(error = %e, "pruning revoked leases failed");
            }
            // Presentations of bound tokens not seen for 30 days (the first stays audited).
            let before = remit_core::time::UnixMillis(cp_app.clock.now().0 - 30 * 86_400_000);
            if let Err(e) = cp_app.store.tools().prune_presentations(before).await {
                tracing::warn!(error = %e, "pruning old presentations failed");
            }
        }
        if let Err(e) = cp_app.checkpoint_now().await {
            tracing::warn!(error = %e, "final audit checkpoint failed");
        }
    });
    // Offboarding at the providers: renew every kept sign-in now and then.
    let rc_app = app.clone();
    let mut rc_stop = conn_stop.clone();
    let reconciler = tokio::spawn(async move {
        let every = rc_app.cfg.sessions.reconcile_interval;
        if every.is_zero() || rc_app.providers.all().iter().all(|p| !p.offline()) {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = rc_stop.changed() => return,
            }
            match rc_app.reconcile_providers().await {
                Ok((checked, gone)) => {
                    tracing::info!(checked, deactivated = gone, "reconciled sign-ins with the providers")
                }
                Err(e) => tracing::warn!(error = %e, "reconciling sign-ins with the providers failed"),
            }
        }
    });
    // Keys rotated or a policy pushed (here or on another replica): reload them.
    let mut changes = app.store.subscribe();
    let keys_app = app.clone();
    let key_follower = tokio::spawn(async move {
        use remit_store::Change;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                // Fell behind: what was missed is unknown, so reload everything.
                Err(RecvError::Lagged(_)) => Change::Resync,
                Err(RecvError::Closed) => return,
            };
            let (keys, policy) = match change {
                Change::Keys => (true, false),
                Change::Policy => (false, true),
                Change::Resync => (true, true),
                _ => continue,
            };
            if keys && let Err(e) = keys_app.reload_keys().await {
                tracing::warn!(error = %e, "reloading keys after a change failed");
            }
            if policy && let Err(e) = keys_app.pdp.reload_policy().await {
                tracing::warn!(error = %e, "reloading the policy bundle failed");
            }
        }
    });
    let router = api::router(app.clone());
    let settings = listen::ConnSettings::from_config(&app.cfg);
    let limits = &app.cfg.limits;
    let cap = listen::effective_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            "connection cap lowered to stay below the open-file limit"
        );
    }
    let tls_reloader = listeners.tls.clone().map(|t| tokio::spawn(tls::follow(app.clone(), t)));
    let bundle_follower = tokio::spawn(bundles::follow(app.bundles.clone()));
    // Dynamic credentials die with their tasks: revocation runs until shutdown and resumes
    // (from the store) after a restart.
    let revoker = tokio::spawn(service::leases::revoker(app.clone(), conn_stop.clone()));
    // Governance: one replica at a time reads the audit log into the Shared Signals outbox
    // (and containment); one pushes SETs to receivers. Both resume from the store.
    let tail = tokio::spawn(governance::tail::run(app.clone(), conn_stop.clone()));
    let pusher = tokio::spawn(governance::push::run(app.clone(), conn_stop.clone()));
    let recert = tokio::spawn(governance::recert::run(app.clone(), conn_stop.clone()));
    let public = tokio::spawn(listen::accept_loop(
        "public",
        listeners.public,
        router.clone(),
        settings.clone(),
        listen::Admission {
            max_connections: cap,
            per_peer: (limits.max_connections_per_peer, limits.trusted_proxies.clone()),
            tls: listeners.tls,
        },
        conn_stop.clone(),
    ));
    let proxy = match listeners.proxy {
        Some(l) => {
            let router = proxy::router(app.clone()).map_err(std::io::Error::other)?;
            let admission = listen::Admission { max_connections: cap, per_peer: (0, vec![]), tls: None };
            Some(tokio::spawn(listen::accept_loop("proxy", l, router, settings.clone(), admission, proxy_stop)))
        }
        None => None,
    };
    let admin_cap = listen::ADMIN_MAX_CONNECTIONS;
    let admin = listeners.admin.map(|a| match a {
        listen::AdminListener::Tcp(l) => {
            tokio::spawn(listen::accept_loop("admin", l, router, settings, admin_only(admin_cap), conn_stop))
        }
        listen::AdminListener::Unix(l, file) => tokio::spawn(async move {
            listen::accept_loop("admin", l, router, settings, admin_only(admin_cap), conn_stop).await;
            drop(file);
        }),
    });
    let workload = listeners.workload.map(|l| tokio::spawn(workload::serve(app.clone(), l, workload_stop)));
    shutdown.await;
    app.begin_shutdown();
    let _ = stop_tx.send(true);
    let _ = public.await;
    if let Some(a) = admin {
        let _ = a.await;
    }
    if let Some(w) = workload {
        let _ = w.await;
    }
    if let Some(p) = proxy {
        let _ = p.await;
    }
    let _ = checkpointer.await;
    key_follower.abort();
    if let Some(t) = tls_reloader {
        t.abort();
    }
    bundle_follower.abort();
    reconciler.abort();
    let _ = revoker.await;
    let _ = tail.await;
    let _ = pusher.await;
    let _ = recert.await;
    Ok(())
}

/// The admin listener's admission: its own small cap, no per-peer cap, no TLS (local only).
fn admin_only(cap: usize) -> listen::Admission {
    listen::Admission { max_connections: cap, per_peer: (0, vec![]), tls: None }
}

/// Opens (and migrates) the configured backend.
pub async fn open_store(
    cfg: &config::Config,
    clock: Arc<dyn remit_core::time::Clock>,
) -> Result<Arc<dyn remit_store::Store>, app::StartError> {
    let backend: Arc<dyn remit_store::Store> = match cfg.store_kind()? {
        config::StoreKind::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| app::StartError::Io(format!("cannot create {}: {e}", parent.display())))?;
            }
            Arc::new(remit_store::sqlite::SqliteStore::open_with_clock(&path, clock.clone())?)
        }
        config::StoreKind::Postgres(url) => {
            let opts = remit_store::postgres::PgOptions::default();
            Arc::new(remit_store::postgres::PgStore::connect_with(&url, opts, clock.clone()).await?)
        }
    };
    Ok(if cfg.cache.enabled {
        Arc::new(remit_store::cache::CachingStore::with_clock(
            backend,
            cfg.cache.max_age,
            cfg.limits.entity_cache_bytes / 2,
            clock,
        ))
    } else {
        backend
    })
}

/// Opens the configured store, initializes it when `init_if_needed` and it is empty, and
/// builds the app. Returns what initialization created, if it ran.
pub async fn bootstrap(
    cfg: config::Config,
    env_kek: Option<&str>,
    clock: Arc<dyn remit_core::time::Clock>,
    init_if_needed: bool,
) -> Result<(Arc<App>, Option<init::Initialized>), app::StartError> {
    let store = open_store(&cfg, clock.clone()).await?;
    let (kek, created) = if init_if_needed || store.keys().installation().await?.is_some() {
        init::initialize(&cfg, &*store, &*clock, env_kek).await?
    } else {
        return Err(app::StartError::NotInitialized);
    };
    let app = App::new(cfg, store, clock, Arc::new(remit_token::OsRandom), kek).await?;
    app.ensure_x509_ca().await.map_err(|e| app::StartError::Keys(format!("creating the X.509 CA: {e}")))?;
    app.ensure_class_keys().await.map_err(|e| app::StartError::Keys(format!("the tool classes' keys: {e}")))?;
    // A CA that does not chain to the configured upstream (added, replaced or removed since
    // the last start) is replaced now, not at the first checkpoint.
    // A malformed upstream CA configuration is (checked now, not at the first rotation).
    crate::service::x509::load_upstream(&app.cfg).map_err(|e| app::StartError::Keys(format!("the X.509 CA: {e}")))?;
    // Not fatal: an expiring upstream leaves the CA in use (and the rest of
    // Remit) working; the checkpoint loop keeps trying and logging.
    match app.rotate_x509_ca_if_due().await {
        Ok(true) => tracing::info!("rotated the X.509 CA (its audit record says why)"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "the X.509 CA could not be rotated"),
    }
    if let Err(e) = app.pdp.reload_policy().await {
        // Deny everything rather than refuse to start: identity and kill switches still work.
        tracing::error!(error = %e, "the active policy bundle could not be loaded; every decision is deny");
    }
    Ok((Arc::new(app), created))
}
