//! `remit tool create|list|show|disable`: the registered tools tasks obtain per-tool
//! credentials for (`remit token exchange`).

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Register a tool. Prints its introspection secret once.
    Create {
        /// The tool's name (e.g. `tickets`): policies see it as `Tool::"<name>"`.
        name: String,
        /// The `aud` of its credentials: an absolute URI (e.g. `https://tickets.example/api`).
        #[arg(long)]
        audience: String,
        /// A scope it accepts (repeatable, at least one); each is decided as the Cedar action
        /// of the same name.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The longest credential it accepts (default 5m, at most 1h).
        #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
        max_ttl: Option<u64>,
        /// The most sensitive data behind it: public, internal (default), confidential, restricted.
        #[arg(long)]
        classification: Option<String>,
        /// What it gives access to: model, tool (default) or data. A class with its own trust
        /// domain (`[trust_domains]`) has its tools' credentials signed there.
        #[arg(long, value_parser = ["model", "tool", "data"])]
        class: Option<String>,
        /// A JSON file making it callable through the injecting proxy: `{"upstream": URL,
        /// "routes": [{"method", "path", "scope"}…], "inject": {"type": "header", "name",
        /// "secret"}…}` (see docs/DEPLOYMENT.md).
        #[arg(long)]
        proxy: Option<std::path::PathBuf>,
        /// A JSON file giving it a dynamic engine (a database login per task, removed when
        /// the task ends): `{"engine": "postgres", "admin_secret": NAME, "scope": SCOPE,
        /// "grants": ["GRANT … TO {{role}}"…]}` (see docs/DEPLOYMENT.md).
        #[arg(long)]
        database: Option<std::path::PathBuf>,
        /// Email of the human who answers for it.
        #[arg(long)]
        owner: String,
    },
    /// Give the tool a new owner (e.g. take over an orphan whose owner left).
    SetOwner {
        /// The tool's name.
        name: String,
        /// The new owner's email.
        #[arg(long)]
        owner: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// List tools.
    List,
    /// Show one tool.
    Show {
        /// The tool's name.
        name: String,
    },
    /// Kill switch: disable a tool; every credential issued for it turns inactive at once.
    Disable {
        /// The tool's name.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn show(v: &Value) {
    output::fields(
        v,
        &["name", "state", "audience", "scopes", "max_ttl_seconds", "classification", "class", "trust_domain", "owner"],
    );
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Create { name, audience, scopes, max_ttl, classification, class, proxy, database, owner } => {
            let json_file = |p: Option<std::path::PathBuf>| -> Result<Option<Value>, CliError> {
                let Some(p) = p else { return Ok(None) };
                let text =
                    std::fs::read_to_string(&p).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?;
                Ok(Some(serde_json::from_str(&text).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?))
            };
            let (proxy, database) = (json_file(proxy)?, json_file(database)?);
            let body = json!({"name": name, "audience": audience, "scopes": scopes, "max_ttl_seconds": max_ttl,
                              "classification": classification, "class": class, "proxy": proxy,
                              "database": database, "owner": owner});
            let v = c.post("/v1/tools", &body).await?;
            if !g.json {
                println!("Registered tool {}", output::s(&v["tool"], "name"));
                show(&v["tool"]);
                println!("Introspection secret (shown once; the tool's only credential for /oauth2/introspect):");
                println!("{}", output::s(&v, "introspection_secret"));
            }
            v
        }
        Cmd::List => {
            let v = c.get("/v1/tools").await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|t| {
                    let scopes: Vec<&str> =
                        t["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    vec![
                        output::s(t, "name").into(),
                        output::s(t, "state").into(),
                        output::s(t, "audience").into(),
                        scopes.join(","),
                        output::s(t, "classification").into(),
                        output::s(t, "trust_domain").into(),
                    ]
                });
                output::table(
                    &["name", "state", "audience", "scopes", "classification", "trust domain"],
                    rows.collect(),
                );
            }
            v
        }
        Cmd::SetOwner { name, owner, reason } => {
            let v = c.put(&format!("/v1/tools/{name}/owner"), &json!({ "owner": owner, "reason": reason })).await?;
            if !g.json {
                println!("tool {name} is now owned by {}", output::s(&v, "owner"));
            }
            v
        }
        Cmd::Show { name } => {
            let v = c.get(&format!("/v1/tools/{name}")).await?;
            if !g.json {
                show(&v);
            }
            v
        }
        Cmd::Disable { name, reason } => {
            let v = c.post(&format!("/v1/tools/{name}/disable"), &json!({ "reason": reason })).await?;
            if !g.json {
                println!("Disabled tool {name}: its credentials are inactive");
            }
            v
        }
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}
