//! `remit human list|show|deactivate`, `remit session revoke`, `remit orphans`: humans known to
//! Remit (signed in, provisioned by SCIM, or named as owners), their sessions, and what was
//! left without an owner.

use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// List humans (by email).
    List {
        /// `unverified`, `active` or `deactivated`.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one human and their sessions.
    Show {
        /// The human's id (`h-…`).
        id: String,
    },
    /// Create a local human (no identity provider); the password is read from the first line
    /// of standard input (12 characters at least).
    Create {
        /// Their email.
        email: String,
        /// Their name, as shown.
        #[arg(long, default_value = "")]
        name: String,
        /// A role (repeatable): admin, operator, approver, auditor.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Deactivate a human: their sessions are revoked and what they own is orphaned.
    Deactivate {
        /// The human's id (`h-…`).
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::List { state } => {
            let q: Vec<(&str, String)> = state.map(|s| vec![("state", s)]).unwrap_or_default();
            let v: Value = c
                .get_query("/v1/humans", &q)
                .await?
                .json()
                .await
                .map_err(|e| CliError::Failed(format!("unreadable answer from server: {e}")))?;
            if !g.json {
                let rows = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        let roles: Vec<&str> =
                            h["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        vec![
                            output::s(h, "id").to_owned(),
                            output::s(h, "email").to_owned(),
                            output::s(h, "state").to_owned(),
                            roles.join(","),
                        ]
                    })
                    .collect();
                output::table(&["ID", "EMAIL", "STATE", "ROLES"], rows);
            }
            v
        }
        Cmd::Show { id } => {
            let v = c.get(&format!("/v1/humans/{id}")).await?;
            if !g.json {
                output::fields(
                    &v["human"],
                    &[
                        "id",
                        "email",
                        "display_name",
                        "state",
                        "roles",
                        "groups",
                        "issuer",
                        "created_at",
                        "deactivated_at",
                    ],
                );
                for s in v["sessions"].as_array().into_iter().flatten() {
                    let state = if s["revoked_at"].is_string() {
                        format!("revoked ({})", output::s(s, "revoke_reason"))
                    } else {
                        "live".into()
                    };
                    println!(
                        "session {} via {}: {state}, ends {}",
                        output::s(s, "id"),
                        output::s(s, "method"),
                        output::s(s, "ends_at")
                    );
                }
            }
            v
        }
        Cmd::Create { email, name, roles } => {
            let password = crate::session::read_secret("password")?;
            let body = json!({"email": email, "display_name": name, "roles": roles, "password": password});
            let v = c.post("/v1/humans", &body).await?;
            if !g.json {
                println!(
                    "Created {} ({}); they sign in with `remit login --local {}`",
                    output::s(&v, "email"),
                    output::s(&v, "id"),
                    output::s(&v, "email")
                );
            }
            v
        }
        Cmd::Deactivate { id, reason } => {
            let v = c.post(&format!("/v1/humans/{id}/deactivate"), &json!({ "reason": reason })).await?;
            if !g.json {
                let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
                println!(
                    "Deactivated {}: {} session(s) revoked, {} workflow(s) and {} agent(s) orphaned",
                    output::s(&v["human"], "email"),
                    n("sessions_revoked"),
                    n("workflows_orphaned"),
                    n("agents_orphaned")
                );
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}

/// `remit session revoke ID --reason R`.
#[derive(clap::Subcommand, Debug)]
pub enum SessionCmd {
    /// Revoke one session of a human.
    Revoke {
        /// The session's id (`s-…`).
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub async fn session(g: &Global, cmd: SessionCmd) -> Result<(), CliError> {
    let SessionCmd::Revoke { id, reason } = cmd;
    let v = Client::admin(g).await?.post(&format!("/v1/sessions/{id}/revoke"), &json!({ "reason": reason })).await?;
    if g.json {
        output::json(&v);
    } else {
        println!("Revoked session {id}");
    }
    Ok(())
}

/// `remit orphans`: what a deactivated human left without an owner.
pub async fn orphans(g: &Global) -> Result<(), CliError> {
    let v = Client::admin(g).await?.get("/v1/orphans").await?;
    if g.json {
        output::json(&v);
        return Ok(());
    }
    let rows = |k: &str| -> Vec<Vec<String>> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                vec![
                    k.trim_end_matches('s').to_owned(),
                    output::s(x, "name").to_owned(),
                    output::s(x, "owner").to_owned(),
                    output::s(x, "orphaned_at").to_owned(),
                ]
            })
            .collect()
    };
    let mut all = rows("workflows");
    all.extend(rows("agents"));
    all.extend(rows("tools"));
    if all.is_empty() {
        println!("nothing is orphaned");
    } else {
        output::table(&["KIND", "NAME", "FORMER OWNER", "ORPHANED AT"], all);
        println!(
            "take one over with `remit workflow set-owner NAME --owner EMAIL --reason …` (or `agent set-owner`, `tool set-owner`)"
        );
    }
    Ok(())
}
