//! `remit init`: creates keys and the admin credential in the data directory.

use std::sync::Arc;

use remit_core::time::SystemClock;
use serde_json::json;

use crate::{CliError, Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// SPIFFE trust domain of every issued identity.
    #[arg(long, env = "REMIT_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Store to initialize: `sqlite` (default), `sqlite:PATH` or `postgres://…` (an empty
    /// database; its schema is created). Also `REMIT_STORE`.
    #[arg(long)]
    pub store: Option<String>,
    /// Also make a self-signed TLS certificate for local use (`tls.crt`, `tls.key` in the data
    /// directory, for localhost, 127.0.0.1 and ::1) and serve HTTPS with it: `[tls]` is added
    /// to remit.toml. Clients trust it with `REMIT_TLS_CA=<data-dir>/tls.crt`.
    #[arg(long)]
    pub tls_self_signed: bool,
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    let mut cfg = super::load_config(g)?;
    if let Some(td) = a.trust_domain {
        cfg.trust_domain = td;
    }
    if let Some(s) = a.store {
        cfg.store = s;
    }
    if a.tls_self_signed {
        enable_self_signed_tls(&mut cfg)?;
    }
    // Not while a server uses this store.
    let _lock = remit_server::init::lock_store(&cfg).map_err(|e| CliError::Failed(e.to_string()))?;
    let store_display = cfg.store_display();
    let kek = std::env::var("REMIT_KEK").ok();
    let (_app, created) = remit_server::bootstrap(cfg, kek.as_deref(), Arc::new(SystemClock), true)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let Some(c) = created else {
        return Err(CliError::Failed(format!("the store {store_display} is already initialized")));
    };
    if g.json {
        output::json(&json!({
            "admin_token": c.admin_token,
            "admin_token_file": c.admin_token_path,
            "kek_file": c.kek_path,
            "trust_domain": c.trust_domain,
        }));
    } else {
        print_created(&c);
    }
    Ok(())
}

/// Writes a self-signed pair into the data directory and `[tls]` into remit.toml (before the
/// installation's issuer, `https://…`, is sealed).
fn enable_self_signed_tls(cfg: &mut remit_server::config::Config) -> Result<(), CliError> {
    let fail = |e: String| CliError::Failed(format!("TLS: {e}"));
    let conf = cfg.data_dir.join(remit_server::config::CONFIG_FILE);
    let existing = std::fs::read_to_string(&conf).unwrap_or_default();
    if cfg.tls.cert.is_some() || existing.lines().any(|l| l.trim() == "[tls]") {
        return Err(fail(format!("{} already configures TLS", conf.display())));
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| fail(e.to_string()))?;
    let pair = remit_server::tls::self_signed(&[]).map_err(fail)?;
    let (c, k) = remit_server::tls::write_pair(&cfg.data_dir, &pair).map_err(|e| fail(e.to_string()))?;
    let section = "\n[tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n";
    std::fs::write(&conf, format!("{existing}{section}")).map_err(|e| fail(e.to_string()))?;
    cfg.tls.cert = Some(c);
    cfg.tls.key = Some(k);
    Ok(())
}

/// The first-run message: the credential once, and where it is kept.
pub fn print_created(c: &remit_server::init::Initialized) {
    println!("Initialized Remit (trust domain {}).", c.trust_domain);
    println!("Admin credential (shown once; also saved, mode 0600, to {}):", c.admin_token_path.display());
    println!("  {}", c.admin_token);
    if let Some(k) = &c.kek_path {
        println!(
            "Key-encryption key written to {} (mode 0600); keep it apart from backups of the database.",
            k.display()
        );
    }
}
