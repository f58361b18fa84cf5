//! `remit grant create|confirm|list|show|revoke`: a signed-in human (`remit login`) delegates
//! part of a workflow's authority to an agent, confirms it in a second step, and revokes it.

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Propose a grant (prints its id and the confirmation code; nothing is usable until
    /// `remit grant confirm`).
    Create {
        /// The agent that may act on your behalf.
        #[arg(long)]
        agent: String,
        /// The workflow it may act in.
        #[arg(long)]
        workflow: String,
        /// A tool it may use (repeatable; default: the workflow's).
        #[arg(long = "allow-tool")]
        tools: Vec<String>,
        /// A scope / action it may use (repeatable; default: any the policy allows).
        #[arg(long = "allow-scope")]
        scopes: Vec<String>,
        /// Resources its calls must be under.
        #[arg(long)]
        resource_prefix: Option<String>,
        /// The most allowed calls each task under it may make.
        #[arg(long)]
        max_calls: Option<u64>,
        /// How long it lasts (e.g. 1h; at most 1d).
        #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
        ttl: u64,
        /// How deep its tasks may delegate further (default 0).
        #[arg(long, default_value = "0")]
        max_depth: u32,
    },
    /// Confirm a grant you proposed, with its confirmation code.
    Confirm {
        /// The grant id.
        id: String,
        /// The confirmation code `grant create` printed.
        #[arg(long)]
        code: String,
    },
    /// Your grants (`--all`: everyone's).
    List {
        /// Every grant, not only yours (needs `grant.read`).
        #[arg(long)]
        all: bool,
    },
    /// Show one grant.
    Show {
        /// The grant id.
        id: String,
    },
    /// Revoke a grant: every task started under it ends at once.
    Revoke {
        /// The grant id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn show(v: &Value) {
    output::fields(v, &["id", "state", "agent", "workflow", "human_email", "max_depth", "expires_at"]);
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Create { agent, workflow, tools, scopes, resource_prefix, max_calls, ttl, max_depth } => {
            let mut body = json!({"agent": agent, "workflow": workflow, "ttl_seconds": ttl, "max_depth": max_depth,
                                  "resource_prefix": resource_prefix, "max_calls": max_calls});
            if !tools.is_empty() {
                body["tools"] = json!(tools);
            }
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let v = c.post("/v1/grants", &body).await?;
            if !g.json {
                let id = output::s(&v["grant"], "id");
                println!("Proposed grant {id}; confirm it with:");
                println!("  remit grant confirm {id} --code {}", output::s(&v, "confirmation_code"));
            }
            v
        }
        Cmd::Confirm { id, code } => {
            let v = c.post(&format!("/v1/grants/{id}/confirm"), &json!({ "code": code })).await?;
            if !g.json {
                println!("Grant {id} is active");
                show(&v);
            }
            v
        }
        Cmd::List { all } => {
            let v = c.get(&format!("/v1/grants?all={all}")).await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|x| {
                    ["id", "state", "agent", "workflow", "human_email", "expires_at"]
                        .iter()
                        .map(|k| output::s(x, k).to_owned())
                        .collect()
                });
                output::table(&["id", "state", "agent", "workflow", "human", "expires"], rows.collect());
            }
            v
        }
        Cmd::Show { id } => {
            let v = c.get(&format!("/v1/grants/{id}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Revoke { id, reason } => {
            let v = c.post(&format!("/v1/grants/{id}/revoke"), &json!({ "reason": reason })).await?;
            if !g.json {
                output::kill_report(&format!("Revoked grant {id}"), &v);
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
