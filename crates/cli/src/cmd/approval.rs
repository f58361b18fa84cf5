//! `remit approval list|show|approve|deny`: the human side of `@approval` policies.

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Approval requests, newest first.
    List {
        /// Only requests in this state (`all`: every request).
        #[arg(long, default_value = "pending", value_parser = ["pending", "approved", "denied", "used", "all"])]
        state: String,
    },
    /// One request, with the exact call it would allow.
    Show {
        /// The approval id (`a-` and 32 hex digits).
        id: String,
    },
    /// Approve a pending request (you are named by --operator / $USER).
    Approve {
        /// The approval id.
        id: String,
        /// Why (recorded in the audit log and shown to the agent).
        #[arg(long)]
        reason: String,
    },
    /// Deny a pending request.
    Deny {
        /// The approval id.
        id: String,
        /// Why (recorded in the audit log and shown to the agent).
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    match cmd {
        Cmd::List { state } => {
            let path = if state == "all" { "/v1/approvals".to_owned() } else { format!("/v1/approvals?state={state}") };
            let v = c.get(&path).await?;
            if g.json {
                // Every list under --json is a bare array.
                output::json(&v["approvals"]);
            } else {
                let rows = v["approvals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let r = &a["request"];
                        vec![
                            output::s(a, "id").to_owned(),
                            output::s(a, "state").to_owned(),
                            match a["task"].as_str() {
                                // An agent's task asked: name it and its workflow.
                                Some(t) => format!("Task:{t} ({})", output::s(a, "workflow")),
                                None => format!(
                                    "{}:{}",
                                    r["subject"]["type"].as_str().unwrap_or(""),
                                    r["subject"]["id"].as_str().unwrap_or("")
                                ),
                            },
                            r["action"]["name"].as_str().unwrap_or("").to_owned(),
                            format!(
                                "{}:{}",
                                r["resource"]["type"].as_str().unwrap_or(""),
                                r["resource"]["id"].as_str().unwrap_or("")
                            ),
                            a["reasons"]
                                .as_array()
                                .and_then(|r| r.first())
                                .and_then(|r| r.as_str())
                                .unwrap_or("")
                                .to_owned(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "STATE", "SUBJECT", "ACTION", "RESOURCE", "WHY"], rows);
            }
        }
        Cmd::Show { id } => {
            let v = c.get(&format!("/v1/approvals/{id}")).await?;
            output::json(&v);
        }
        Cmd::Approve { id, reason } | Cmd::Deny { id, reason } if reason.trim().is_empty() => {
            return Err(CliError::Failed(format!("approval {id}: --reason must not be empty")));
        }
        Cmd::Approve { id, reason } => {
            let v = c.post(&format!("/v1/approvals/{id}/approve"), &serde_json::json!({"reason": reason})).await?;
            if g.json { output::json(&v) } else { println!("Approved {id}: the caller may retry this exact call once") }
        }
        Cmd::Deny { id, reason } => {
            let v = c.post(&format!("/v1/approvals/{id}/deny"), &serde_json::json!({"reason": reason})).await?;
            if g.json { output::json(&v) } else { println!("Denied {id}") }
        }
    }
    Ok(())
}
