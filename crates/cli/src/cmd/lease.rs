//! `remit lease list|show|revoke`: the database logins tools' engines made for tasks. A
//! lease is removed with its task (kill, completion, expiry); these commands show where each
//! one is and revoke one early. Passwords are never shown here: a task receives its login
//! once, from the proxy's `POST /credentials/<tool>`.

use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// List leases, newest first.
    List {
        /// Only this task's.
        #[arg(long)]
        task: Option<String>,
        /// Only this workflow's.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this tool's.
        #[arg(long)]
        tool: Option<String>,
        /// Only leases in this state: active, revoking or revoked.
        #[arg(long)]
        state: Option<String>,
        /// Only stuck leases (removal failed six times or more; still retried).
        #[arg(long)]
        stuck: bool,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one lease: its state, attempts and last error.
    Show {
        /// The lease id (`l-…`).
        id: String,
    },
    /// Revoke one lease now: its login is removed in the background; its task goes on.
    Revoke {
        /// The lease id (`l-…`).
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn show(v: &Value) {
    output::fields(
        v,
        &[
            "id",
            "tool",
            "task",
            "workflow",
            "agent",
            "engine",
            "handle",
            "state",
            "stuck",
            "created_at",
            "expires_at",
            "revoke_requested_at",
            "revoke_reason",
            "attempts",
            "next_attempt_at",
            "last_error",
            "revoked_at",
        ],
    );
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::List { task, workflow, tool, state, stuck, limit } => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in [("task", task), ("workflow", workflow), ("tool", tool), ("state", state)] {
                if let Some(v) = v {
                    q.append_pair(k, &v);
                }
            }
            if stuck {
                q.append_pair("stuck", "true");
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
            let v = c.get(&format!("/v1/leases?{}", q.finish())).await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|l| {
                    let state = match (output::s(l, "state"), l["stuck"].as_bool() == Some(true)) {
                        (s, true) => format!("{s} (STUCK)"),
                        (s, false) => s.to_owned(),
                    };
                    vec![
                        output::s(l, "id").into(),
                        output::s(l, "tool").into(),
                        output::s(l, "task").into(),
                        output::s(l, "handle").into(),
                        state,
                        l["attempts"].to_string(),
                        output::s(l, "expires_at").into(),
                        l["last_error"].as_str().unwrap_or("").into(),
                    ]
                });
                output::table(
                    &["id", "tool", "task", "role", "state", "attempts", "expires", "last error"],
                    rows.collect(),
                );
            }
            v
        }
        Cmd::Show { id } => {
            let v = c.get(&format!("/v1/leases/{id}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Revoke { id, reason } => {
            let v = c.post(&format!("/v1/leases/{id}/revoke"), &json!({"reason": reason})).await?;
            if !g.json {
                if v["revoking"].as_bool() == Some(true) {
                    println!("Lease {id} is being revoked (its login is removed in the background)");
                } else {
                    println!("Lease {id} was not active ({})", output::s(&v["lease"], "state"));
                }
                show(&v["lease"]);
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
