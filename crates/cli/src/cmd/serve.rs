//! `remit serve`: runs the HTTP server, initializing the data directory on first run.

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
    /// Log format: json (default) or text.
    #[arg(long)]
    pub log_format: Option<String>,
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
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
    init_logging(&cfg.log_format);
    let store_display = cfg.store_display();
    let kek = std::env::var("REMIT_KEK").ok();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let (app, created) = remit_server::bootstrap(cfg, kek.as_deref(), Arc::new(SystemClock), true)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(c) = &created {
        super::init::print_created(c);
    }
    let addr = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?;
    println!("Remit listening on http://{addr} (data in {})", g.data_dir.display());
    tracing::info!(%addr, trust_domain = %app.trust_domain, store = %store_display, "remit serving");
    remit_server::serve(app, listener, shutdown_signal()).await.map_err(|e| CliError::Failed(e.to_string()))
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
