//! `remit task start|list|show|complete|revoke`.

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Start a task for an agent (admin) and print its id and token.
    Start {
        /// The workflow the task belongs to.
        #[arg(long)]
        workflow: String,
        /// The agent that runs it (must be registered for the workflow).
        #[arg(long)]
        agent: String,
        /// What the task is for.
        #[arg(long)]
        intent: String,
        /// Lifetime (e.g. 5m; default 5m, the server's default_task_ttl); at most the workflow's
        /// maximum.
        #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
        ttl: Option<u64>,
        /// Sensitivity of the data it touches (default internal; at most the workflow's
        /// ceiling).
        #[arg(long, value_parser = ["public", "internal", "confidential", "restricted"])]
        sensitivity: Option<String>,
        /// Audience of the task token (repeatable; the tool servers that will accept it).
        #[arg(long = "audience", default_value = "remit")]
        audience: Vec<String>,
    },
    /// List tasks, newest first.
    List {
        /// Only this workflow's tasks.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this agent's tasks.
        #[arg(long)]
        agent: Option<String>,
        /// Only tasks in this stored state.
        #[arg(long, value_parser = ["active", "completed", "revoked", "expired"])]
        state: Option<String>,
        /// Most tasks to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one task.
    Show {
        /// The task id (`t-` and 32 hex digits).
        id: String,
    },
    /// Complete a task: its token becomes inactive.
    Complete {
        /// The task id.
        id: String,
    },
    /// Kill switch: revoke a task and everything issued under it.
    Revoke {
        /// The task id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub fn show(v: &Value) {
    output::fields(
        v,
        &[
            "id",
            "spiffe_id",
            "state",
            "workflow",
            "agent",
            "instance",
            "intent",
            "sensitivity",
            "audience",
            "started_by",
            "created_at",
            "expires_at",
            "ended_at",
            "end_reason",
        ],
    );
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Start { workflow, agent, intent, ttl, sensitivity, audience } => {
            let body = json!({
                "workflow": workflow, "agent": agent, "intent": intent, "ttl_seconds": ttl,
                "sensitivity": sensitivity, "audience": audience,
            });
            let v = c.post("/v1/tasks", &body).await?;
            if !g.json {
                println!(
                    "Started task {} ({}), expires {}",
                    output::s(&v["task"], "id"),
                    output::s(&v, "spiffe_id"),
                    output::s(&v, "expires_at")
                );
                println!("{}", output::s(&v, "token"));
            }
            v
        }
        Cmd::List { workflow, agent, state, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(workflow.map(|w| ("workflow", w)));
            q.extend(agent.map(|a| ("agent", a)));
            q.extend(state.map(|s| ("state", s)));
            let v: Value = c
                .get_query("/v1/tasks", &q)
                .await?
                .json()
                .await
                .map_err(|e| CliError::Failed(format!("unreadable answer: {e}")))?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|t| {
                    vec![
                        output::s(t, "id").into(),
                        output::s(t, "state").into(),
                        output::s(t, "workflow").into(),
                        output::s(t, "agent").into(),
                        output::s(t, "expires_at").into(),
                        output::s(t, "intent").chars().take(40).collect(),
                    ]
                });
                output::table(&["id", "state", "workflow", "agent", "expires", "intent"], rows.collect());
            }
            v
        }
        Cmd::Show { id } => {
            let v = c.get(&format!("/v1/tasks/{id}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Complete { id } => {
            let v = c.post(&format!("/v1/tasks/{id}/complete"), &json!({})).await?;
            if !g.json {
                println!("Completed task {id}");
            }
            v
        }
        Cmd::Revoke { id, reason } => {
            let v = c.post(&format!("/v1/tasks/{id}/revoke"), &json!({ "reason": reason })).await?;
            if !g.json {
                output::kill_report(&format!("Revoked task {id}"), &v);
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
