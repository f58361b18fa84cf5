//! `remit agent create|list|show|disable|enable|join-token`.

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Give the agent a new owner (e.g. take over an orphan whose owner left).
    SetOwner {
        /// The agent's name.
        name: String,
        /// The new owner's email.
        #[arg(long)]
        owner: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Register an agent.
    Create {
        /// The agent's name (e.g. `deploy-bot`).
        name: String,
        /// A workflow it may run (repeatable, at least one).
        #[arg(long = "workflow", required = true)]
        workflows: Vec<String>,
        /// Email of its owner (default: the first workflow's owner).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show {
        /// The agent's name.
        name: String,
    },
    /// Kill switch: disable an agent, revoking its instances and their tasks.
    Disable {
        /// The agent's name.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Re-enable a disabled agent.
    Enable {
        /// The agent's name.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Create a one-time join token an instance of this agent proves itself with.
    JoinToken {
        /// The agent's name.
        name: String,
        /// How long it can be used (default 10m, at most the server's max_join_token_ttl).
        #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
        ttl: Option<u64>,
    },
}

fn show(v: &Value) {
    output::fields(v, &["name", "state", "owner", "workflows", "created_at"]);
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Create { name, workflows, owner } => {
            let owner = match owner {
                Some(o) => o,
                None => {
                    let wf = c.get(&format!("/v1/workflows/{}", workflows[0])).await?;
                    output::s(&wf, "owner").to_owned()
                }
            };
            let v = c.post("/v1/agents", &json!({ "name": name, "owner": owner, "workflows": workflows })).await?;
            if !g.json {
                println!("Created agent {}", output::s(&v, "name"));
                show(&v);
            }
            v
        }
        Cmd::List => {
            let v = c.get("/v1/agents").await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|a| {
                    let wfs: Vec<&str> =
                        a["workflows"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    vec![
                        output::s(a, "name").into(),
                        output::s(a, "state").into(),
                        output::s(a, "owner").into(),
                        wfs.join(","),
                    ]
                });
                output::table(&["name", "state", "owner", "workflows"], rows.collect());
            }
            v
        }
        Cmd::Show { name } => {
            let v = c.get(&format!("/v1/agents/{name}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Disable { name, reason } => {
            let v = c.post(&format!("/v1/agents/{name}/disable"), &json!({ "reason": reason })).await?;
            if !g.json {
                output::kill_report(&format!("Disabled agent {name}"), &v);
            }
            v
        }
        Cmd::SetOwner { name, owner, reason } => {
            let v = c.put(&format!("/v1/agents/{name}/owner"), &json!({ "owner": owner, "reason": reason })).await?;
            if !g.json {
                println!("agent {name} is now owned by {}", output::s(&v, "owner"));
            }
            v
        }
        Cmd::Enable { name, reason } => {
            let v = c.post(&format!("/v1/agents/{name}/enable"), &json!({ "reason": reason })).await?;
            if !g.json {
                println!("Enabled agent {name}");
            }
            v
        }
        Cmd::JoinToken { name, ttl } => {
            let v = c.post(&format!("/v1/agents/{name}/join-tokens"), &json!({ "ttl_seconds": ttl })).await?;
            if !g.json {
                println!("Join token for agent {name} (one use, expires {}):", output::s(&v, "expires_at"));
                println!("{}", output::s(&v, "token"));
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
