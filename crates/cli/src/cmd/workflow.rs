//! `remit workflow create|list|show|suspend|resume|set-tools`.

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Give the workflow a new owner (e.g. take over an orphan whose owner left).
    SetOwner {
        /// The workflow's name.
        name: String,
        /// The new owner's email.
        #[arg(long)]
        owner: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Create a workflow.
    Create {
        /// The workflow's name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// What the workflow is for.
        #[arg(long)]
        purpose: String,
        /// Email of the human who answers for it.
        #[arg(long)]
        owner: String,
        /// Longest task it allows (e.g. 15m; default 1h, at most the server's hard_max_task_ttl).
        #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
        max_ttl: Option<u64>,
        /// Most sensitive data its tasks may touch (default internal).
        #[arg(long, value_parser = ["public", "internal", "confidential", "restricted"])]
        ceiling: Option<String>,
        /// A tool its tasks may use (repeatable; none given: no restriction beyond policy).
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// Deepest delegation chain it allows (default 0, at most 16).
        #[arg(long)]
        max_depth: Option<u32>,
        /// Who may start child tasks for whom: `FROM=TO[,TO…]` (agent names or `*`; repeatable).
        #[arg(long = "delegate", value_name = "FROM=TO,…")]
        delegate: Vec<String>,
        /// Child tasks may delegate further (within the depth).
        #[arg(long)]
        workers_may_delegate: bool,
        /// Every task token must be DPoP-bound (RFC 9449).
        #[arg(long)]
        require_dpop: bool,
        /// A tool whose per-task database logins `remit exec --db TOOL` may put into a child's
        /// environment (repeatable; none by default; each such login is audited).
        #[arg(long = "env-credentials", value_name = "TOOL")]
        env_credentials: Vec<String>,
    },
    /// Replace a workflow's trust rules (who may start child tasks for whom).
    SetTrust {
        /// The workflow's name.
        name: String,
        /// `FROM=TO[,TO…]` (agent names or `*`; repeatable; none: no delegation).
        #[arg(long = "delegate", value_name = "FROM=TO,…")]
        delegate: Vec<String>,
        /// Child tasks may delegate further (within the depth).
        #[arg(long)]
        workers_may_delegate: bool,
        /// Every task token must be DPoP-bound (RFC 9449).
        #[arg(long)]
        require_dpop: bool,
        /// A tool whose per-task database logins `remit exec --db TOOL` may put into a child's
        /// environment (repeatable; none by default; each such login is audited).
        #[arg(long = "env-credentials", value_name = "TOOL")]
        env_credentials: Vec<String>,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// List workflows.
    List,
    /// Show one workflow.
    Show {
        /// The workflow's name.
        name: String,
    },
    /// Kill switch: suspend a workflow and revoke all its live tasks.
    Suspend {
        /// The workflow's name.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Replace the tools its tasks may use (the allow-list no policy can widen); live tasks'
    /// next decisions use the new list.
    SetTools {
        /// The workflow's name.
        name: String,
        /// A tool its tasks may use (repeatable; give none, with --clear, for no restriction).
        #[arg(long = "tool", required_unless_present = "clear")]
        tools: Vec<String>,
        /// Remove every tool from the list: no restriction beyond policy.
        #[arg(long, conflicts_with = "tools")]
        clear: bool,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended workflow.
    Resume {
        /// The workflow's name.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn show(v: &Value) {
    output::fields(
        v,
        &[
            "name",
            "state",
            "purpose",
            "owner",
            "ceiling",
            "allowed_tools",
            "max_task_ttl_seconds",
            "max_delegation_depth",
            "created_at",
        ],
    );
}

/// Trust rules from `FROM=TO,TO` arguments.
fn trust(
    delegate: &[String],
    workers_may_delegate: bool,
    require_dpop: bool,
    env_credentials: &[String],
) -> Result<Value, CliError> {
    let rules = delegate
        .iter()
        .map(|d| {
            let (from, to) = d
                .split_once('=')
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| CliError::Failed(format!("--delegate `{d}`: expected FROM=TO[,TO…]")))?;
            Ok(json!({"from": from, "to": to.split(',').collect::<Vec<_>>()}))
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    Ok(json!({"delegations": rules, "workers_may_delegate": workers_may_delegate, "require_dpop": require_dpop,
              "env_credentials": env_credentials}))
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::SetTrust { name, delegate, workers_may_delegate, require_dpop, env_credentials, reason } => {
            let trust = trust(&delegate, workers_may_delegate, require_dpop, &env_credentials)?;
            let body = json!({"trust": trust, "reason": reason});
            let v = c.put(&format!("/v1/workflows/{name}/trust"), &body).await?;
            if !g.json {
                println!("workflow {name}: trust rules replaced");
            }
            v
        }
        Cmd::Create {
            name,
            purpose,
            owner,
            max_ttl,
            ceiling,
            tools,
            max_depth,
            delegate,
            workers_may_delegate,
            require_dpop,
            env_credentials,
        } => {
            let body = json!({
                "name": name, "purpose": purpose, "owner": owner, "ceiling": ceiling,
                "allowed_tools": tools, "max_task_ttl_seconds": max_ttl, "max_delegation_depth": max_depth,
                "trust": trust(&delegate, workers_may_delegate, require_dpop, &env_credentials)?,
            });
            let v = c.post("/v1/workflows", &body).await?;
            if !g.json {
                println!("Created workflow {}", output::s(&v, "name"));
                show(&v);
            }
            v
        }
        Cmd::List => {
            let v = c.get("/v1/workflows").await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|w| {
                    vec![
                        output::s(w, "name").to_owned(),
                        output::s(w, "state").to_owned(),
                        output::s(w, "owner").to_owned(),
                        output::s(w, "ceiling").to_owned(),
                        w["max_task_ttl_seconds"].to_string(),
                    ]
                });
                output::table(&["name", "state", "owner", "ceiling", "max ttl (s)"], rows.collect());
            }
            v
        }
        Cmd::Show { name } => {
            let v = c.get(&format!("/v1/workflows/{name}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Suspend { name, reason } => {
            let v = c.post(&format!("/v1/workflows/{name}/suspend"), &json!({ "reason": reason })).await?;
            if !g.json {
                output::kill_report(&format!("Suspended workflow {name}"), &v);
            }
            v
        }
        Cmd::SetTools { name, tools, clear: _, reason } => {
            let v = c.put(&format!("/v1/workflows/{name}/tools"), &json!({ "tools": tools, "reason": reason })).await?;
            if !g.json {
                println!("Updated the tools of workflow {name}");
                show(&v);
            }
            v
        }
        Cmd::SetOwner { name, owner, reason } => {
            let v = c.put(&format!("/v1/workflows/{name}/owner"), &json!({ "owner": owner, "reason": reason })).await?;
            if !g.json {
                println!("workflow {name} is now owned by {}", output::s(&v, "owner"));
            }
            v
        }
        Cmd::Resume { name, reason } => {
            let v = c.post(&format!("/v1/workflows/{name}/resume"), &json!({ "reason": reason })).await?;
            if !g.json {
                println!("Resumed workflow {name}");
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
