//! `remit task start|list|show|complete|revoke`.

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

/// How a child task is narrowed from its parent (each absent: the parent's).
#[derive(clap::Args, Debug, Default)]
pub struct Narrow {
    /// A tool the child may use (repeatable; ⊆ the parent's).
    #[arg(long = "allow-tool")]
    pub allow_tools: Vec<String>,
    /// A scope / action the child may use (repeatable; ⊆ the parent's).
    #[arg(long = "allow-scope")]
    pub allow_scopes: Vec<String>,
    /// Resources the child's calls must be under (within the parent's prefix).
    #[arg(long)]
    pub resource_prefix: Option<String>,
    /// The most allowed calls the child may make (≤ the parent's).
    #[arg(long)]
    pub max_calls: Option<u64>,
    /// The child may not delegate further.
    #[arg(long)]
    pub no_delegate: bool,
}

impl Narrow {
    /// Adds the narrowing fields to a start-task body.
    pub fn add_to(&self, body: &mut serde_json::Value) {
        if !self.allow_tools.is_empty() {
            body["tools"] = json!(self.allow_tools);
        }
        if !self.allow_scopes.is_empty() {
            body["scopes"] = json!(self.allow_scopes);
        }
        if let Some(p) = &self.resource_prefix {
            body["resource_prefix"] = json!(p);
        }
        if let Some(m) = self.max_calls {
            body["max_calls"] = json!(m);
        }
        if self.no_delegate {
            body["may_delegate"] = json!(false);
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Start a task for an agent (admin) and print its id and token.
    Start {
        /// The workflow the task belongs to (a child's is its parent's).
        #[arg(long, required_unless_present = "parent")]
        workflow: Option<String>,
        /// The agent that runs it (must be registered for the workflow); for a child, the worker.
        #[arg(long)]
        agent: String,
        /// Start a child of this task: its authority is the parent's, narrowed (see below).
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        narrow: Narrow,
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
    /// Renew a live task (long-running agents): its expiry is extended within its limits and
    /// a new token is printed (`--json`: the whole answer).
    Renew {
        /// The task id.
        id: String,
        /// Seconds from now (default: the workflow's task TTL).
        #[arg(long)]
        ttl_seconds: Option<u64>,
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
        Cmd::Start { workflow, agent, parent, narrow, intent, ttl, sensitivity, audience } => {
            let mut body = json!({
                "workflow": workflow, "agent": agent, "intent": intent, "ttl_seconds": ttl,
                "sensitivity": sensitivity, "audience": audience, "parent": parent,
            });
            narrow.add_to(&mut body);
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
        Cmd::Renew { id, ttl_seconds } => {
            let v = c.post(&format!("/v1/tasks/{id}/renew"), &json!({ "ttl_seconds": ttl_seconds })).await?;
            if !g.json {
                println!("Renewed task {id} until {}", v["expires_at"].as_str().unwrap_or(""));
                println!("{}", v["token"].as_str().unwrap_or(""));
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
