//! `remit version`, `remit status` and `remit completions`: what this binary is, how the
//! server is doing, and shell completions.

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::client::Client;
use crate::{Cli, CliError, Global, output};

/// This binary's version (and the server's, if one answers at --url).
pub async fn version(g: &Global) -> Result<(), CliError> {
    let client = env!("CARGO_PKG_VERSION");
    if g.json {
        output::json(&json!({"version": client}));
    } else {
        println!("remit {client}");
    }
    Ok(())
}

/// The server's state: version, store, keys, audit head and checkpoint age, policy version,
/// cluster jobs.
pub async fn status(g: &Global) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = c.get("/v1/status").await?;
    if g.json {
        output::json(&v);
        return Ok(());
    }
    let age = match v["audit"]["checkpoint_age_secs"].as_u64() {
        Some(s) => format!("{} ago", remit_core::time::format_secs(s)),
        None => "none yet".into(),
    };
    let n = |x: &Value| x.as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "server:      {} (remit {}, trust domain {})",
        g.url,
        output::s(&v, "version"),
        output::s(&v, "trust_domain")
    );
    println!("issuer:      {}", output::s(&v, "issuer"));
    println!("store:       {} ({})", output::s(&v["store"], "kind"), output::s(&v["store"], "location"));
    println!(
        "keys:        signing {} ({} published), audit {}",
        output::s(&v["keys"], "jwt_signing_kid"),
        n(&v["keys"]["jwt_published"]),
        output::s(&v["keys"], "audit_signing_kid")
    );
    println!(
        "audit:       {} records; last checkpoint at {} ({age}, {} records after it)",
        n(&v["audit"]["head_seq"]),
        n(&v["audit"]["checkpoint_seq"]),
        n(&v["audit"]["unsigned_records"])
    );
    let pv = v["policy"]["version"].as_u64().unwrap_or(0);
    if pv == 0 {
        println!("policy:      none pushed (every decision is deny)");
    } else {
        println!("policy:      version {pv} ({} policies)", n(&v["policy"]["policies"]));
    }
    let bg = &v["break_glass"];
    match bg["uses_since_start"].as_u64().unwrap_or(0) {
        0 => println!("break-glass: not used since start"),
        n => println!(
            "break-glass: USED {n} time(s) since start, last at {} (the admin credential from `remit init`; every use is audited)",
            output::s(bg, "last_used_at")
        ),
    }
    let l = &v["leases"];
    match l["stuck"].as_u64().unwrap_or(0) {
        0 => println!("leases:      {} active, {} being revoked", n(&l["active"]), n(&l["revoking"])),
        s => println!(
            "leases:      {} active, {} being revoked, {s} STUCK (`remit lease list --stuck`; retried with backoff)",
            n(&l["active"]),
            n(&l["revoking"])
        ),
    }
    for j in v["jobs"].as_array().into_iter().flatten() {
        let whose = match (j["held"].as_bool(), j["held_here"].as_bool()) {
            (Some(true), Some(true)) => "held here".to_owned(),
            (Some(true), _) => format!("held by {}", output::s(j, "holder")),
            _ => "NOT HELD (taken over within its hold time)".to_owned(),
        };
        let behind = j["behind"].as_u64().map(|b| format!(", {b} audit records behind")).unwrap_or_default();
        println!("job:         {} {whose}{behind}", output::s(j, "name"));
    }
    println!("time:        {}", output::s(&v, "time"));
    Ok(())
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    clap_complete::generate(shell, &mut Cli::command(), "remit", &mut std::io::stdout());
    Ok(())
}
