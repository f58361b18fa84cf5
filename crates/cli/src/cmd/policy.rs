//! `remit policy validate|push|show|test|explain`.

use std::path::PathBuf;

use remit_policy::{Bundle, Engine};
use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Validate a policy directory offline (strict Cedar validation against Remit's schema
    /// plus the directory's `*.cedarschema`); prints Cedar's diagnostics on failure.
    Validate { dir: PathBuf },
    /// Validate and activate a policy directory on the server as the next version.
    Push { dir: PathBuf },
    /// Show the active version.
    Show,
    /// Run decision cases against the server: a JSON file with `evaluation` (and/or
    /// `evaluations`) arrays of `{"request": …, "expected": …}`, as the AuthZEN interop
    /// suites use. Exits non-zero if any answer differs.
    Test { cases: PathBuf },
    /// Decide one AuthZEN request (JSON file or `-` for stdin) and show which policies decided.
    Explain { request: PathBuf },
}

/// Reads a policy directory: every `*.cedar` file (sorted by name), every `*.cedarschema`
/// file (concatenated), and `mapping.json` if present. (File IO lives here, in the CLI:
/// `remit-policy` only compiles and decides what it is handed.)
fn bundle(dir: &std::path::Path) -> Result<Bundle, CliError> {
    let fail = |m: String| CliError::Failed(m);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| fail(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let read =
        |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| fail(format!("cannot read {}: {e}", p.display())));
    let mut b = Bundle::default();
    for p in &names {
        let file = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match p.extension().and_then(|e| e.to_str()) {
            Some("cedar") => b.policies.push(remit_policy::PolicyFile { name: file, source: read(p)? }),
            Some("cedarschema") => {
                b.schema.push_str(&read(p)?);
                b.schema.push('\n');
            }
            _ if file == "mapping.json" => {
                b.mapping = serde_json::from_str(&read(p)?).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            }
            _ => {}
        }
    }
    if b.policies.is_empty() {
        return Err(fail(format!("no .cedar files in {}", dir.display())));
    }
    Ok(b)
}

fn read_json(p: &std::path::Path) -> Result<Value, CliError> {
    let text = if p.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::Failed(e.to_string()))?
    } else {
        std::fs::read_to_string(p).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?
    };
    serde_json::from_str(&text).map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    match cmd {
        Cmd::Validate { dir } => {
            let b = bundle(&dir)?;
            let engine = Engine::compile(0, &b).map_err(|e| CliError::Failed(e.to_string()))?;
            if g.json {
                output::json(&json!({"valid": true, "policies": engine.len()}));
            } else {
                println!("{}: {} policies valid (strict)", dir.display(), engine.len());
            }
        }
        Cmd::Push { dir } => {
            let b = bundle(&dir)?;
            // Same check the server makes, so mistakes show before the round trip.
            Engine::compile(0, &b).map_err(|e| CliError::Failed(e.to_string()))?;
            let v = Client::admin(g)?.put("/v1/policies", &b).await?;
            if g.json {
                output::json(&v);
            } else {
                println!("Activated policy version {} ({} files)", v["version"], b.policies.len());
            }
        }
        Cmd::Show => {
            let v = Client::admin(g)?.get("/v1/policies").await?;
            if g.json {
                output::json(&v);
            } else {
                let files = v["bundle"]["policies"].as_array().map(|a| a.len()).unwrap_or(0);
                println!("Active policy version {} ({files} files, by {})", v["version"], output::s(&v, "created_by"));
            }
        }
        Cmd::Test { cases } => {
            let d = read_json(&cases)?;
            let client = Client::admin(g)?;
            let (mut pass, mut fail) = (0usize, Vec::new());
            for (key, path) in [
                ("evaluation", "/access/v1/evaluation"),
                ("decisions", "/access/v1/evaluation"),
                ("evaluations", "/access/v1/evaluations"),
            ] {
                for case in d.get(key).and_then(Value::as_array).into_iter().flatten() {
                    let got = client.post(path, &case["request"]).await?;
                    let got = if key == "evaluations" { got["evaluations"].clone() } else { got["decision"].clone() };
                    if got == case["expected"] {
                        pass += 1;
                    } else {
                        fail.push(json!({"request": case["request"], "expected": case["expected"], "got": got}));
                    }
                }
            }
            if g.json {
                output::json(&json!({"passed": pass, "failed": fail}));
            } else {
                for f in &fail {
                    println!("FAIL {} expected {} got {}", f["request"], f["expected"], f["got"]);
                }
                println!("{pass} passed, {} failed", fail.len());
            }
            if !fail.is_empty() {
                return Err(CliError::Failed(format!("{} of {} cases failed", fail.len(), pass + fail.len())));
            }
        }
        Cmd::Explain { request } => {
            let body = read_json(&request)?;
            let v = Client::admin(g)?.post("/v1/decisions/explain", &body).await?;
            if g.json {
                output::json(&v);
            } else {
                println!("{} (policy version {})", output::s(&v, "outcome"), v["policy_version"]);
                for (id, src) in v["policies"].as_object().into_iter().flatten() {
                    println!("\n-- decided by {id}:\n{}", src.as_str().unwrap_or_default());
                }
                for e in v["errors"].as_array().into_iter().flatten() {
                    println!("\n-- error: {}", e.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}
