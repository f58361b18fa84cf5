//! `remit reseal`: vouch, under the KEK, for an installation made before Remit sealed its
//! records (or one an operator has checked after an incident).
//!
//! Remit refuses to start when its installation record or a key row does not prove itself
//! under the KEK (see `remit_server::seal`). This command runs offline, against the store
//! directly, with the KEK: it refuses any key whose private half does not open under the KEK,
//! shows what it would vouch for (trust domain, issuer, the admin credential hash's prefix,
//! every key), and writes the seals only with `--yes`. The stored admin credential hash is
//! vouched for as it is: if the database may have been written by someone else, rotate the
//! credential by initializing anew instead.

use std::sync::Arc;

use remit_core::time::{Clock, SystemClock};
use serde_json::json;

use crate::{CliError, Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Store: `sqlite` (default), `sqlite:PATH` or `postgres://…`. Also `REMIT_STORE`.
    #[arg(long)]
    pub store: Option<String>,
    /// The issuer to seal (default: `issuer` from the configuration, else `http://<listen>`).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Write the seals (without it, only show what would be vouched for).
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    let mut cfg = super::load_config(g)?;
    if let Some(s) = a.store {
        cfg.store = s;
    }
    let issuer = a.issuer.unwrap_or_else(|| cfg.issuer());
    // Not while a server uses this store.
    let _lock = remit_server::init::lock_store(&cfg).map_err(|e| CliError::Failed(e.to_string()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let kek_env = std::env::var("REMIT_KEK").ok();
    let (kek, _) =
        remit_server::init::load_kek(&cfg, kek_env.as_deref(), false).map_err(|e| CliError::Failed(e.to_string()))?;
    let store = remit_server::open_store(&cfg, clock.clone()).await.map_err(|e| CliError::Failed(e.to_string()))?;
    let plan = remit_server::seal::plan_reseal(&*store, &kek, &issuer).await.map_err(CliError::Failed)?;
    let keys: Vec<_> = plan.keys.iter().map(|(k, p)| json!({"kid": k, "purpose": p.as_str()})).collect();
    if g.json && !a.yes {
        output::json(&json!({"trust_domain": plan.trust_domain, "issuer": plan.issuer,
            "admin_hash_prefix": plan.admin_hash_prefix, "keys": keys, "written": false}));
    } else if !g.json {
        println!("trust domain:          {}", plan.trust_domain);
        println!("issuer:                {}", plan.issuer);
        println!("admin credential hash: {}…", plan.admin_hash_prefix);
        for (k, p) in &plan.keys {
            println!("key:                   {k} ({}) opens under this KEK", p.as_str());
        }
    }
    if !a.yes {
        if !g.json {
            println!("Nothing written. Run again with --yes to seal these under the KEK.");
        }
        return Ok(());
    }
    let (td, iss) = (plan.trust_domain.clone(), plan.issuer.clone());
    remit_server::seal::reseal(&*store, plan, "admin:reseal", clock.now()).await.map_err(CliError::Failed)?;
    if g.json {
        output::json(&json!({"trust_domain": td, "issuer": iss, "keys": keys, "written": true}));
    } else {
        println!("Sealed. `remit serve` will now start with this installation.");
    }
    Ok(())
}
