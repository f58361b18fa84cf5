//! `remit governance …`: a workflow's governance settings (containment rules, recertification
//! period).

use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Show a workflow's governance settings in effect (its own or the defaults).
    Show {
        /// The workflow's name.
        workflow: String,
    },
    /// Replace a workflow's governance settings from a JSON file (`-`: stdin):
    /// `{"containment": [{"signal": "deny_rate", "scope": "workflow", "window_secs": 60,
    /// "min_calls": 20, "ratio": 0.5, "action": "suspend_workflow"}], "recertification":
    /// {"period_days": 90, "grace_days": 7}}`.
    Set {
        /// The workflow's name.
        workflow: String,
        /// The settings (JSON); `-` reads stdin.
        #[arg(long)]
        file: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// What is due for recertification (agents, workflows, standing grants).
    Due,
    /// Agents serving several workflows: equivalent or not, accepted or flagged.
    Reuse,
    /// The governance report mapped to OWASP NHI 2025, OWASP Agentic 2026, CSA MAESTRO and NIST
    /// AI RMF 1.0, from live state.
    Report {
        /// `markdown` (default on a terminal), `html` or `json`.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// The window usage is measured over, in days.
        #[arg(long, default_value_t = 30)]
        window_days: u32,
    },
    /// A workflow's granted versus used tools, and the narrower list suggested.
    Usage {
        /// The workflow's name.
        workflow: String,
        /// The window, in days.
        #[arg(long, default_value_t = 30)]
        window_days: u32,
    },
    /// Accept the suggested narrower tool list of a workflow in one step.
    Accept {
        /// The workflow's name.
        workflow: String,
        /// The window, in days.
        #[arg(long, default_value_t = 30)]
        window_days: u32,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Recertify an agent, workflow or grant (as a signed-in human, `remit login`).
    Recertify {
        /// `agent`, `workflow` or `grant`.
        kind: String,
        /// Its name or id.
        id: String,
        /// Why it is still needed (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn read_json(file: &str) -> Result<Value, CliError> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::Failed(format!("stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| CliError::Failed(format!("{file}: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| CliError::Failed(format!("{file}: not JSON: {e}")))
}

fn show(v: &Value) {
    output::fields(v, &["workflow", "declared"]);
    println!("containment:");
    for r in v["containment"].as_array().into_iter().flatten() {
        println!("  {r}");
    }
    println!("recertification: {}", v["recertification"]);
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Show { workflow } => c.get(&format!("/v1/workflows/{workflow}/governance")).await?,
        Cmd::Set { workflow, file, reason } => {
            let settings = read_json(&file)?;
            c.put(&format!("/v1/workflows/{workflow}/governance"), &json!({"settings": settings, "reason": reason}))
                .await?
        }
        Cmd::Due => {
            let v = c.get("/v1/recertifications").await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|d| {
                    vec![
                        output::s(d, "kind").into(),
                        output::s(d, "id").into(),
                        output::s(d, "owner").into(),
                        output::s(d, "standing").into(),
                        output::s(d, "due_at").into(),
                        output::s(d, "suspend_at").into(),
                        if d["orphaned"] == true { "orphaned".into() } else { String::new() },
                    ]
                });
                output::table(&["kind", "id", "owner", "standing", "due", "suspended at", ""], rows.collect());
            }
            if g.json {
                output::json(&v);
            }
            return Ok(());
        }
        Cmd::Report { format, window_days } => {
            let format = if g.json { "json".to_owned() } else { format };
            let q = [("format", format.clone()), ("window_days", window_days.to_string())];
            let resp = c.get_query("/v1/governance/report", &q).await?;
            let body = resp.text().await.map_err(|e| CliError::Unavailable(e.to_string()))?;
            print!("{body}");
            if !body.ends_with('\n') {
                println!();
            }
            return Ok(());
        }
        Cmd::Reuse => {
            let v = c.get("/v1/reuse").await?;
            if g.json {
                output::json(&v);
            } else {
                let rows = v.as_array().into_iter().flatten().map(|r| {
                    vec![
                        output::s(r, "agent").into(),
                        r["workflows"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                        if r["flagged"] == true { "FLAGGED".into() } else { "accepted".into() },
                        r["differs"].as_str().or(r["accepted_until"].as_str()).unwrap_or("").into(),
                    ]
                });
                output::table(&["agent", "workflows", "", "why / until"], rows.collect());
            }
            return Ok(());
        }
        Cmd::Usage { workflow, window_days } => {
            let v = c.get(&format!("/v1/workflows/{workflow}/usage?window_days={window_days}")).await?;
            if !g.json {
                output::fields(&v, &["workflow", "window_days", "unrestricted", "decisions", "denied", "narrows"]);
                for k in ["granted", "used", "unused", "suggested"] {
                    let list: Vec<&str> = v[k].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!("{k}: {}", list.join(", "));
                }
                return Ok(());
            }
            v
        }
        Cmd::Accept { workflow, window_days, reason } => {
            let body = json!({"reason": reason, "window_days": window_days});
            let v = c.post(&format!("/v1/workflows/{workflow}/usage/accept"), &body).await?;
            if !g.json {
                let list: Vec<&str> =
                    v["allowed_tools"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!("{workflow} may now use: {}", list.join(", "));
                return Ok(());
            }
            v
        }
        Cmd::Recertify { kind, id, reason } => {
            c.post("/v1/recertifications", &json!({"kind": kind, "id": id, "reason": reason})).await?
        }
    };
    if g.json {
        output::json(&v);
    } else if v.get("standing").is_some() {
        output::fields(
            &v,
            &["kind", "id", "standing", "last_certified_at", "last_certified_by", "due_at", "suspend_at"],
        );
    } else {
        show(&v);
    }
    Ok(())
}
