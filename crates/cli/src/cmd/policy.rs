//! `remit policy validate|push|show|schema|test|explain`. `test` decides task cases offline
//! (the server's own fact-building code, no server, no token) and runs AuthZEN cases against
//! a server only with `--server`.

use std::path::PathBuf;

use remit_policy::{Bundle, Engine};
use serde_json::{Value, json};

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Validate a policy directory offline (strict Cedar validation against Remit's schema
    /// plus the directory's `*.cedarschema`); prints Cedar's diagnostics on failure.
    Validate {
        /// The policy directory (`*.cedar`, `*.cedarschema`, `mapping.json`).
        dir: PathBuf,
    },
    /// Validate and activate a policy directory on the server as the next version.
    Push {
        /// The policy directory (`*.cedar`, `*.cedarschema`, `mapping.json`).
        dir: PathBuf,
    },
    /// Show the active version.
    Show,
    /// Print Remit's base Cedar schema (the entities, `call_tool` and its context).
    Schema,
    /// Run decision cases; exits 1 if any outcome differs. A `"kind": "task"` file is decided
    /// offline: synthetic tasks, the policies of `--policies` (default: the file's
    /// `policies`, relative to it), no server. A `"kind": "authzen"` file (`evaluation` /
    /// `evaluations` arrays of `{"request", "expected"}`, the AuthZEN interop format) is sent
    /// to the server with `--server`: real, audited evaluations.
    Test {
        /// The case file (JSON).
        cases: PathBuf,
        /// The policy directory for task cases (overrides the file's `policies`).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Send AuthZEN cases to the server at --url (they are audited and may open approvals).
        #[arg(long)]
        server: bool,
    },
    /// Decide one AuthZEN request (JSON file or `-` for stdin) and show which policies decided.
    Explain {
        /// The AuthZEN request (a JSON file, or `-` for standard input).
        request: PathBuf,
    },
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
            let engine = compile(g, &dir)?;
            if g.json {
                output::json(&json!({"valid": true, "policies": engine.len(), "warnings": engine.warnings()}));
            } else {
                for w in engine.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{}: {} policies valid (strict)", dir.display(), engine.len());
            }
        }
        Cmd::Schema => {
            if g.json {
                output::json(&json!({"schema": remit_policy::BASE_SCHEMA.trim_start()}));
            } else {
                print!("{}", remit_policy::BASE_SCHEMA.trim_start());
            }
        }
        Cmd::Push { dir } => {
            let b = bundle(&dir)?;
            // Same check the server makes, so mistakes show before the round trip.
            compile(g, &dir)?;
            let v = Client::admin(g).await?.put("/v1/policies", &b).await?;
            if g.json {
                output::json(&v);
            } else {
                println!("Activated policy version {} ({} files)", v["version"], b.policies.len());
            }
        }
        Cmd::Show => {
            let v = Client::admin(g).await?.get("/v1/policies").await?;
            if g.json {
                output::json(&v);
            } else {
                let files = v["bundle"]["policies"].as_array().map(|a| a.len()).unwrap_or(0);
                println!("Active policy version {} ({files} files, by {})", v["version"], output::s(&v, "created_by"));
            }
        }
        Cmd::Test { cases, policies, server } => {
            let d = read_json(&cases)?;
            let kind = d.get("kind").and_then(Value::as_str).map(str::to_owned);
            let authzen = kind.as_deref() == Some("authzen")
                || (kind.is_none() && (d.get("evaluation").is_some() || d.get("evaluations").is_some()));
            match (authzen, server) {
                (true, true) => test_server(g, &d).await?,
                (true, false) => {
                    return Err(CliError::Failed(format!(
                        "{}: AuthZEN cases are decided by a server (real, audited evaluations): add --server",
                        cases.display()
                    )));
                }
                (false, true) => {
                    return Err(CliError::Failed(format!(
                        "{}: task cases are decided offline; --server runs `\"kind\": \"authzen\"` files",
                        cases.display()
                    )));
                }
                (false, false) => test_offline(g, &cases, d, policies)?,
            }
        }
        Cmd::Explain { request } => {
            let body = read_json(&request)?;
            let v = Client::admin(g).await?.post("/v1/decisions/explain", &body).await?;
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

/// Compiles a policy directory, printing Cedar's placed diagnostics (one per line) on failure.
fn compile(g: &Global, dir: &std::path::Path) -> Result<Engine, CliError> {
    let b = bundle(dir)?;
    Engine::compile(0, &b).map_err(|e| {
        if g.json {
            CliError::Failed(format!("policy bundle rejected: {}", e.0.join("; ")))
        } else {
            CliError::Failed(e.to_string())
        }
    })
}

/// Task cases, offline: the server's fact-building code over synthetic tasks.
fn test_offline(g: &Global, file: &std::path::Path, d: Value, policies: Option<PathBuf>) -> Result<(), CliError> {
    use remit_server::pdp::offline;
    let f = offline::parse(d).map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let dir = match (policies, &f.policies) {
        (Some(p), _) => p,
        (None, Some(rel)) => file.parent().unwrap_or(std::path::Path::new(".")).join(rel),
        (None, None) => {
            return Err(CliError::Failed(format!(
                "{}: no policy directory: give --policies DIR or `policies` in the file",
                file.display()
            )));
        }
    };
    let engine = compile(g, &dir)?;
    let wall = remit_core::time::Clock::now(&remit_core::time::SystemClock);
    let now = offline::now_of(&f, wall).map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let results = offline::run(&engine, &f, now);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    if g.json {
        output::json(&json!({
            "passed": results.len() - failed.len(),
            "failed": failed.len(),
            "warnings": engine.warnings(),
            "cases": results,
        }));
    } else {
        for w in engine.warnings() {
            eprintln!("warning: {w}");
        }
        for r in &results {
            let mark = if r.passed { "ok  " } else { "FAIL" };
            let mut why = Vec::new();
            if !r.reasons.is_empty() {
                why.push(format!("by {}", r.reasons.join(", ")));
            }
            why.extend(r.errors.iter().cloned());
            let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
            if r.passed {
                println!("{mark} {}: {}{why}", r.name, r.got.as_str());
            } else {
                println!("{mark} {}: expected {}, got {}{why}", r.name, r.expected.as_str(), r.got.as_str());
            }
        }
        println!(
            "{} passed, {} failed ({} policies from {})",
            results.len() - failed.len(),
            failed.len(),
            engine.len(),
            dir.display()
        );
    }
    if !failed.is_empty() {
        return Err(CliError::Failed(format!("{} of {} cases failed", failed.len(), results.len())));
    }
    Ok(())
}

/// AuthZEN cases against the server (`--server`).
async fn test_server(g: &Global, d: &Value) -> Result<(), CliError> {
    let client = Client::admin(g).await?;
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
        output::json(&json!({"passed": pass, "failed": fail.len(), "failures": fail}));
    } else {
        for f in &fail {
            println!("FAIL {} expected {} got {}", f["request"], f["expected"], f["got"]);
        }
        println!("{pass} passed, {} failed", fail.len());
    }
    if !fail.is_empty() {
        return Err(CliError::Failed(format!("{} of {} cases failed", fail.len(), pass + fail.len())));
    }
    Ok(())
}
