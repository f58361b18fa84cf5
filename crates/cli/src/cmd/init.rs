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
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    let mut cfg = super::load_config(g)?;
    if let Some(td) = a.trust_domain {
        cfg.trust_domain = td;
    }
    if let Some(s) = a.store {
        cfg.store = s;
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
