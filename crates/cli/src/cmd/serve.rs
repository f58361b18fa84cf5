//! `remit serve`: runs the HTTP server, initializing the data directory on first run.
//!
//! On a terminal it prints a short human banner (where it listens, and on first run where the
//! admin credential is, with the credential itself); otherwise stdout stays empty and the same
//! facts are log lines on stderr (never the credential). Text logs carry colour codes only
//! when stderr is a terminal.

use std::net::SocketAddr;
use std::sync::Arc;

use remit_core::time::SystemClock;

use crate::{CliError, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (default 127.0.0.1:7878, or `listen` in remit.toml).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Store: `sqlite` (default, `remit.db` in the data directory), `sqlite:PATH`, or
    /// `postgres://user@host:5432/db` (shared by many replicas). Also `REMIT_STORE`.
    #[arg(long)]
    pub store: Option<String>,
    /// Log format on stderr (default: `log_format` in remit.toml, else auto: text on a terminal,
    /// JSON otherwise).
    #[arg(long, value_parser = ["auto", "json", "text"])]
    pub log_format: Option<String>,
}

fn init_logging(format: &str) -> Result<(), CliError> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = match format {
        "auto" if ansi => "text",
        "auto" | "json" => "json",
        "text" => "text",
        other => return Err(CliError::Failed(format!("log_format `{other}`: expected auto, json or text"))),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    Ok(())
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    let mut cfg = super::load_config(g)?;
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(s) = a.store {
        cfg.store = s;
    }
    if let Some(f) = a.log_format {
        cfg.log_format = f;
    }
    init_logging(&cfg.log_format)?;
    raise_fd_limit();
    // One server per SQLite store: held until the process ends.
    let _lock = remit_server::init::lock_store(&cfg).map_err(|e| CliError::Failed(e.to_string()))?;
    let store_display = cfg.store_display();
    let kek = std::env::var("REMIT_KEK").ok();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", cfg.listen)))?;
    // Port 0 means "any free port": the default issuer (at init) and the public URL (the
    // OpenID redirect) name the port actually bound.
    cfg.listen = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?;
    let (app, created) = remit_server::bootstrap(cfg, kek.as_deref(), Arc::new(SystemClock), true)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let scrape =
        remit_server::init::metrics_credential(&app.cfg.data_dir, std::env::var("REMIT_METRICS_TOKEN").ok().as_deref())
            .map_err(|e| CliError::Failed(e.to_string()))?;
    app.set_metrics_credential(&scrape);
    let scim =
        remit_server::init::scim_credential(&app.cfg.data_dir, std::env::var("REMIT_SCIM_TOKEN").ok().as_deref())
            .map_err(|e| CliError::Failed(e.to_string()))?;
    app.set_scim_credential(&scim);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if let Some(c) = &created {
        tracing::info!(
            trust_domain = %c.trust_domain,
            admin_token_file = %c.admin_token_path.display(),
            kek_file = ?c.kek_path.as_ref().map(|p| p.display().to_string()),
            "initialized a new installation; the admin credential is in admin_token_file (mode 0600)"
        );
        if tty {
            super::init::print_created(c);
        }
    }
    let addr = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?;
    let admin = remit_server::listen::bind_admin(&app.cfg)
        .await
        .map_err(|e| CliError::Failed(format!("cannot bind the admin listener: {e}")))?;
    let admin_at = admin.as_ref().map(|a| a.describe());
    let workload = remit_server::workload::bind(&app)
        .map_err(|e| CliError::Failed(format!("cannot bind the Workload API socket: {e}")))?;
    let workload_at = workload.as_ref().map(|w| w.endpoint());
    let tls = remit_server::tls::from_config(&app).map_err(|e| CliError::Failed(format!("TLS: {e}")))?;
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let proxy = match app.cfg.proxy.listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| CliError::Failed(format!("cannot bind the tool proxy on {at}: {e}")))?,
        ),
        None => None,
    };
    let proxy_at = match &proxy {
        Some(l) => Some(format!("http://{}", l.local_addr().map_err(|e| CliError::Failed(e.to_string()))?)),
        None => None,
    };
    if tty {
        if let Some(a) = &admin_at {
            println!("Admin listener on {a} (outside the public connection cap; use it with --url {a})");
        }
        if let Some(w) = &workload_at {
            println!("SPIFFE Workload API: SPIFFE_ENDPOINT_SOCKET={w}");
        }
        let how = if tls.is_some() { "TLS" } else { "plain HTTP: no [tls] configured" };
        println!("Remit listening on {url} ({how}; data in {})", g.data_dir.display());
    }
    tracing::info!(%url, tls = tls.is_some(), admin_url = admin_at.as_deref().unwrap_or("off"), trust_domain = %app.trust_domain,
                   spiffe_endpoint_socket = workload_at.as_deref().unwrap_or("off"),
                   proxy_url = proxy_at.as_deref().unwrap_or("off"),
                   store = %store_display, "remit serving");
    let listeners = remit_server::listen::Listeners { public: listener, admin, workload, tls, proxy };
    remit_server::serve_on(app, listeners, shutdown_signal()).await.map_err(|e| CliError::Failed(e.to_string()))
}

/// Raises the soft open-file limit to the hard limit, as servers do: the connection cap is
/// computed from it.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
