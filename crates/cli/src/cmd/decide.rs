//! `remit decide`: an agent asks whether its task may take an action, with its own task token
//! as the bearer (`REMIT_TASK_TOKEN`, which `remit exec` sets). With `--wait`, a call that
//! needs a human's approval waits for the decision on the approval's event stream and then
//! asks again presenting it.
//!
//! Exit codes: 0 allow; 3 deny; 7 a human must approve first (approval required, or still
//! pending after `--timeout`).

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tool the call uses: the resource `Tool::"NAME"`.
    #[arg(long, conflicts_with = "resource", required_unless_present = "resource")]
    pub tool: Option<String>,
    /// The resource as TYPE:ID (e.g. `Ticket:OPS-12`), for a call on something other than a
    /// tool (name the tool with `--fact tool=NAME`).
    #[arg(long, value_name = "TYPE:ID")]
    pub resource: Option<String>,
    /// The action.
    #[arg(long, default_value = "call_tool")]
    pub action: String,
    /// A fact for the context, KEY=VALUE (repeatable). VALUE is read as JSON when it is JSON
    /// (`n=3`, `flag=true`), else as a string. Facts Remit vouches for are ignored.
    #[arg(long = "fact", value_name = "KEY=VALUE")]
    pub facts: Vec<String>,
    /// The context as one JSON object; `--fact`s are merged over it.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Present an approved request (the retry of a call that needed approval).
    #[arg(long, value_name = "APPROVAL_ID")]
    pub approval: Option<String>,
    /// If a human must approve: wait for the decision, then ask again presenting it.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits for a human (e.g. 90s, 15m); the approval's expiry ends it
    /// sooner.
    #[arg(long, value_parser = parse_secs, allow_hyphen_values = true, default_value = "15m")]
    pub timeout: u64,
    /// The task token to ask with.
    #[arg(long, env = "REMIT_TASK_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// The call's body, without the approval.
fn body(a: &Args) -> Result<Value, CliError> {
    let resource = match (&a.tool, &a.resource) {
        (Some(t), _) => json!({"type": "Tool", "id": t}),
        (None, Some(r)) => {
            let (t, id) = r
                .split_once(':')
                .filter(|(t, id)| !t.is_empty() && !id.is_empty())
                .ok_or_else(|| CliError::Failed(format!("--resource `{r}`: expected TYPE:ID")))?;
            json!({"type": t, "id": id})
        }
        (None, None) => return Err(CliError::Failed("name the tool (--tool) or the resource (--resource)".into())),
    };
    let mut ctx: Map<String, Value> = match &a.context {
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(CliError::Failed("--context must be a JSON object".into())),
        },
        None => Map::new(),
    };
    for f in &a.facts {
        let (k, v) = f
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CliError::Failed(format!("--fact `{f}`: expected KEY=VALUE")))?;
        ctx.insert(k.to_owned(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())));
    }
    Ok(json!({"action": {"name": a.action}, "resource": resource, "context": ctx}))
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    let client = Client::new(&g.url, Some(a.token.clone()), None)?;
    let mut req = body(&a)?;
    if let Some(id) = &a.approval {
        req["approval"] = id.clone().into();
    }
    let mut v = client.post("/v1/decisions", &req).await?;
    if a.wait {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        // At most twice: the first answer may open a request; the retry presents it.
        for _ in 0..2 {
            let outcome = v["outcome"].as_str().unwrap_or_default();
            let Some(id) = v["approval"]["id"].as_str().map(str::to_owned) else { break };
            if outcome != "approval_required" && outcome != "pending" {
                break;
            }
            if !g.json {
                eprintln!(
                    "waiting for a human to decide approval {id} (expires {}): remit approval approve {id} --reason …",
                    output::s(&v["approval"], "expires_at")
                );
            }
            let state = wait(&client, &id, deadline).await?;
            if state == "pending" {
                return finish(
                    g,
                    &json!({"decision": false, "outcome": "pending", "approval": v["approval"].clone(),
                                         "errors": [format!("approval {id} is still pending after --timeout")]}),
                );
            }
            if state != "approved" {
                return finish(
                    g,
                    &json!({"decision": false, "outcome": "deny", "approval": {"id": id, "state": state},
                                         "errors": [format!("approval {id} was {state}")]}),
                );
            }
            req["approval"] = id.into();
            v = client.post("/v1/decisions", &req).await?;
        }
    }
    finish(g, &v)
}

/// Waits on the approval's event stream until a human decided it (or it expired); `pending`
/// if `deadline` came first.
async fn wait(client: &Client, id: &str, deadline: tokio::time::Instant) -> Result<String, CliError> {
    let path = format!("/v1/approvals/{id}/events");
    let decided = crate::sse::follow(client, &path, |e| {
        let s = e["state"].as_str().unwrap_or("pending");
        (s != "pending").then(|| s.to_owned())
    });
    match tokio::time::timeout_at(deadline, decided).await {
        Ok(r) => r,
        Err(_) => Ok("pending".into()),
    }
}

/// Prints the answer and maps it to the exit code.
fn finish(g: &Global, v: &Value) -> Result<(), CliError> {
    let outcome = v["outcome"].as_str().unwrap_or("deny");
    if g.json {
        output::json(v);
    } else {
        let mut line = outcome.replace('_', " ");
        let reasons = list_of(&v["reasons"], ", ");
        if !reasons.is_empty() {
            line.push_str(&format!(" (by {reasons})"));
        }
        let errors = list_of(&v["errors"], ", ");
        if !errors.is_empty() {
            line.push_str(&format!(": {errors}"));
        }
        println!("{line}");
        if let Some(id) = v["approval"]["id"].as_str()
            && (outcome == "approval_required" || outcome == "pending")
        {
            println!(
                "approval {id} (expires {}): {}; a human decides it with `remit approval approve {id} --reason …`, \
                     then ask again with --approval {id} (or use --wait)",
                output::s(&v["approval"], "expires_at"),
                list_of(&v["approval"]["reasons"], "; ")
            );
        }
    }
    match outcome {
        "allow" => Ok(()),
        "approval_required" | "pending" => Err(CliError::Exit(7)),
        _ => Err(CliError::Exit(3)),
    }
}

/// The strings of a JSON array, joined by `sep`.
fn list_of(v: &Value, sep: &str) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(sep)).unwrap_or_default()
}
