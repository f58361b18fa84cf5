//! `remit secret set|list|delete`: a tool's upstream secrets, write-only (a value goes in from
//! stdin, a file or an environment variable — never the command line, where it would land in
//! shell history and `ps`); and `remit secret scan`: the leak guard.

use std::io::Read;

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Set a tool's secret, or rotate it (a new version). The value is read from stdin unless
    /// --from-file or --from-env says otherwise; a trailing newline is dropped.
    Set {
        /// The tool's name.
        tool: String,
        /// The secret's name within the tool (e.g. `api-key`).
        name: String,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "from_env")]
        from_file: Option<std::path::PathBuf>,
        /// Read the value from this environment variable.
        #[arg(long)]
        from_env: Option<String>,
        /// How long the previous version stays usable (e.g. `10m`; default 0).
        #[arg(long, value_parser = parse_secs)]
        overlap: Option<u64>,
    },
    /// List a tool's secrets: versions, fingerprints, lengths — never a value.
    List {
        /// The tool's name.
        tool: String,
    },
    /// Delete every version of a secret.
    Delete {
        /// The tool's name.
        tool: String,
        /// The secret's name within the tool.
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Scan a file (or stdin, `-`) for stored secrets and credential formats: prints where,
    /// never what. Exits 3 when something was found.
    Scan {
        /// The file to scan; `-` for stdin.
        #[arg(default_value = "-")]
        path: String,
    },
}

/// Bytes sent per scan request (under the server's body limit once JSON-escaped), and the
/// overlap between requests, so a secret across a boundary is still found whole.
const CHUNK: usize = 40 * 1024;
const OVERLAP: usize = remit_core::secret::MAX_SECRET_BYTES + 1;

fn read_value(from_file: Option<std::path::PathBuf>, from_env: Option<String>) -> Result<String, CliError> {
    let raw = match (from_file, from_env) {
        (Some(p), _) => std::fs::read(&p).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?,
        (None, Some(var)) => {
            std::env::var(&var).map_err(|_| CliError::Failed(format!("${var} is not set")))?.into_bytes()
        }
        (None, None) => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map_err(|e| CliError::Failed(format!("stdin: {e}")))?;
            b
        }
    };
    let mut s = String::from_utf8(raw).map_err(|_| CliError::Failed("the value must be UTF-8 text".into()))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

fn show(v: &Value) {
    output::fields(v, &["tool", "name", "version", "fingerprint", "length", "created_at", "retire_after"]);
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let c = Client::admin(g).await?;
    let v = match cmd {
        Cmd::Set { tool, name, from_file, from_env, overlap } => {
            let value = zeroize::Zeroizing::new(read_value(from_file, from_env)?);
            // Borrowed, not copied: the only copy in this process is zeroized when dropped.
            #[derive(serde::Serialize)]
            struct SetBody<'a> {
                value: &'a str,
                overlap_seconds: Option<u64>,
            }
            let body = SetBody { value: &value, overlap_seconds: overlap };
            let v = c.put(&format!("/v1/tools/{tool}/secrets/{name}"), &body).await?;
            if !g.json {
                println!("Stored version {} of {tool}/{name}", v["version"]);
                show(&v);
            }
            v
        }
        Cmd::List { tool } => {
            let v = c.get(&format!("/v1/tools/{tool}/secrets")).await?;
            if !g.json {
                let rows = v.as_array().into_iter().flatten().map(|s| {
                    vec![
                        output::s(s, "name").into(),
                        s["version"].to_string(),
                        output::s(s, "fingerprint").into(),
                        s["length"].to_string(),
                        output::s(s, "created_at").into(),
                        s["retire_after"].as_str().unwrap_or("").into(),
                    ]
                });
                output::table(&["name", "version", "fingerprint", "length", "created", "retires"], rows.collect());
            }
            v
        }
        Cmd::Delete { tool, name, reason } => {
            let q: String =
                url::form_urlencoded::Serializer::new(String::new()).append_pair("reason", &reason).finish();
            let v = c.delete(&format!("/v1/tools/{tool}/secrets/{name}?{q}")).await?;
            if !g.json {
                println!("Deleted {} version(s) of {tool}/{name}", v["deleted_versions"]);
            }
            v
        }
        Cmd::Scan { path } => return scan(g, &c, &path).await,
    };
    if g.json {
        output::json(&v);
    }
    Ok(())
}

async fn scan(g: &Global, c: &Client, path: &str) -> Result<(), CliError> {
    let bytes = if path == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map_err(|e| CliError::Failed(format!("stdin: {e}")))?;
        b
    } else {
        std::fs::read(path).map_err(|e| CliError::Failed(format!("{path}: {e}")))?
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut findings: Vec<Value> = Vec::new();
    let mut start = 0;
    loop {
        // Chunk on character boundaries.
        let mut end = (start + CHUNK).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let r = c.post("/v1/leak-scan", &json!({"text": &text[start..end]})).await?;
        for mut f in r["findings"].as_array().cloned().unwrap_or_default() {
            let at = f["offset"].as_u64().unwrap_or(0) as usize + start;
            f["offset"] = at.into();
            // Found again in the overlap of the previous chunk: once is enough.
            if !findings
                .iter()
                .any(|x| x["offset"] == f["offset"] && x["kind"] == f["kind"] && x["secret"] == f["secret"])
            {
                findings.push(f);
            }
        }
        if end >= text.len() {
            break;
        }
        let mut next = end.saturating_sub(OVERLAP).max(start + 1);
        while !text.is_char_boundary(next) {
            next += 1;
        }
        start = next;
    }
    findings.sort_by_key(|f| f["offset"].as_u64().unwrap_or(0));
    if g.json {
        output::json(&json!({ "findings": findings }));
    } else if findings.is_empty() {
        println!("nothing found");
    } else {
        let rows = findings.iter().map(|f| {
            vec![
                f["offset"].to_string(),
                f["length"].to_string(),
                output::s(f, "kind").into(),
                f["secret"].as_str().unwrap_or("").into(),
                f["fingerprint"].as_str().unwrap_or("").into(),
            ]
        });
        output::table(&["offset", "length", "kind", "secret", "fingerprint"], rows.collect());
    }
    if findings.is_empty() { Ok(()) } else { Err(CliError::Exit(3)) }
}
