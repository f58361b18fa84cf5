//! `remit audit list|verify|export`.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only records about this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only records about this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only records about this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this action, e.g. task.start, task.revoke, workflow.suspend, access.evaluate.
    #[arg(long)]
    pub action: Option<String>,
    /// Only records at or after this time (RFC 3339, or epoch milliseconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339, or epoch milliseconds).
    #[arg(long)]
    pub until: Option<String>,
    /// Only records after this sequence number.
    #[arg(long)]
    pub after: Option<u64>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut add = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        };
        add("workflow", &self.workflow);
        add("task", &self.task);
        add("agent", &self.agent);
        add("action", &self.action);
        add("since", &self.since);
        add("until", &self.until);
        if let Some(a) = self.after {
            q.push(("after", a.to_string()));
        }
        q
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// List audit records, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Most records to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Recompute the hash chain and check the signed checkpoints; names the first broken record.
    Verify,
    /// Write records as JSON Lines.
    Export {
        #[command(flatten)]
        filter: Filter,
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn time(ms: &Value) -> String {
    let ms = ms.as_i64().unwrap_or(0);
    let d = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + d).to_string()
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    match cmd {
        Cmd::List { filter, limit } => {
            let mut q = filter.query();
            q.push(("limit", limit.to_string()));
            let v: Value =
                c.get_query("/v1/audit", &q).await?.json().await.map_err(|e| CliError::Failed(e.to_string()))?;
            if g.json {
                // One timestamp format in output: RFC 3339 (the API's `time` is the chained
                // record's epoch milliseconds; `audit export` keeps it, for verification).
                let mut v = v;
                for r in v.as_array_mut().into_iter().flatten() {
                    if let Some(ms) = r["time"].as_i64() {
                        r["time"] = remit_core::time::UnixMillis(ms).to_rfc3339().into();
                    }
                }
                output::json(&v);
            } else {
                let rows = v.as_array().into_iter().flatten().map(|r| {
                    vec![
                        r["seq"].to_string(),
                        time(&r["time"]),
                        output::s(r, "actor").into(),
                        output::s(r, "action").into(),
                        output::s(r, "outcome").into(),
                        output::s(r, "workflow").into(),
                        output::s(r, "task").into(),
                        output::s(r, "reason").into(),
                    ]
                });
                output::table(
                    &["seq", "time", "actor", "action", "outcome", "workflow", "task", "reason"],
                    rows.collect(),
                );
            }
            Ok(())
        }
        Cmd::Verify => {
            let v = c.post("/v1/audit/verify", &serde_json::json!({})).await?;
            let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
            if g.json {
                output::json(&v);
            } else if ok {
                let r = &v["report"];
                println!(
                    "audit log OK: {} records, {} signed checkpoints (latest at record {}), head {}",
                    r["records"],
                    r["checkpoints"],
                    r["last_checkpoint_seq"],
                    output::s(r, "head_hash")
                );
            }
            if ok {
                Ok(())
            } else {
                Err(CliError::Failed(format!("audit log verification FAILED: {}", output::s(&v, "error"))))
            }
        }
        Cmd::Export { filter, out } => {
            let mut q = filter.query();
            q.push(("limit", "0".into()));
            let body = c
                .get_query("/v1/audit/export", &q)
                .await?
                .bytes()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            match out {
                Some(p) => std::fs::write(&p, &body).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?,
                None => std::io::stdout().write_all(&body).map_err(|e| CliError::Failed(e.to_string()))?,
            }
            Ok(())
        }
    }
}
