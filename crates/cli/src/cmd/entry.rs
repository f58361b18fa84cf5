//! `remit entry create|list|delete`: registration entries map what the Workload API attests
//! about a process (its uid, gid, executable path and hash) to an agent.

use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Register: processes with every given selector become instances of the agent.
    Create {
        /// The agent.
        #[arg(long)]
        agent: String,
        /// A selector the process must have (repeatable): `unix:uid:1000`, `unix:gid:1000`,
        /// `unix:path:/usr/local/bin/deploy-bot`, `unix:sha256:<hex>`.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// Hold its instances to one workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// The SVIDs' hint (e.g. `internal`).
        #[arg(long)]
        hint: Option<String>,
    },
    /// Every entry.
    List,
    /// Delete an entry (instances already attested live until their process exits).
    Delete {
        /// The entry id (`re-…`).
        id: String,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Create { agent, selectors, workflow, hint } => {
            let body = json!({"agent": agent, "selectors": selectors, "workflow": workflow, "hint": hint});
            let v = c.post("/v1/entries", &body).await?;
            if !g.json {
                println!("Registered entry {}", output::s(&v, "id"));
                output::fields(&v, &["agent", "workflow", "hint"]);
            }
            v
        }
        Cmd::List => {
            let v = c.get("/v1/entries").await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|x| {
                    let sels: Vec<&str> =
                        x["selectors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    vec![
                        output::s(x, "id").to_owned(),
                        output::s(x, "agent").to_owned(),
                        output::s(x, "workflow").to_owned(),
                        sels.join(" "),
                    ]
                });
                output::table(&["id", "agent", "workflow", "selectors"], rows.collect());
            }
            v
        }
        Cmd::Delete { id } => {
            let v = c.delete(&format!("/v1/entries/{id}")).await?;
            if !g.json {
                println!("Deleted entry {id}");
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
