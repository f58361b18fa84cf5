//! `remit exec`: run an existing agent as one task of a workflow, in one line.
//!
//! 1. Prove the agent: a live instance token (`REMIT_INSTANCE_TOKEN`) or a one-time join
//!    token (`--join-token` / `REMIT_JOIN_TOKEN`) traded for a fresh instance identity.
//! 2. Start a task; write its token to a 0600 file in a private temp dir.
//! 3. Run the command with `REMIT_TASK_TOKEN`, `REMIT_TASK_TOKEN_FILE`, `REMIT_TASK_ID`,
//!    `REMIT_SPIFFE_ID` and `REMIT_URL` set, and Remit's own secrets removed from its env.
//! 4. When it exits (or on SIGTERM/SIGINT/SIGHUP, forwarded to it), complete the task, revoke
//!    the instance if this run created it, delete the token file, and exit with its code.

use std::io::{IsTerminal, Write};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workflow the task belongs to.
    #[arg(long)]
    pub workflow: String,
    /// What the task is for (recorded; its hash goes into the token).
    #[arg(long)]
    pub intent: String,
    /// Task lifetime (e.g. 5m); at most the workflow's maximum.
    #[arg(long, value_parser = parse_secs)]
    pub ttl: Option<u64>,
    /// Sensitivity of the data the task touches.
    #[arg(long)]
    pub sensitivity: Option<String>,
    /// Audience of the task token (repeatable).
    #[arg(long = "audience", default_value = "remit")]
    pub audience: Vec<String>,
    /// One-time join token for the agent.
    #[arg(long, env = "REMIT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// A live instance token of the agent (used instead of a join token).
    #[arg(long, env = "REMIT_INSTANCE_TOKEN", hide_env_values = true)]
    pub instance_token: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Environment variables the child must never see.
const SECRET_ENV: &[&str] = &["REMIT_ADMIN_TOKEN", "REMIT_JOIN_TOKEN", "REMIT_INSTANCE_TOKEN", "REMIT_KEK"];

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    // Handlers go in first: a signal that arrives while joining or starting the task is
    // held and forwarded to the child once it runs (and the task is completed), instead of
    // killing this process with a live task behind it.
    let signals = Signals::install()?;
    let anon = Client::new(&g.url, None, None)?;
    let (instance_token, joined) = match (a.instance_token.clone(), a.join_token.clone()) {
        (Some(t), _) => (t, false),
        (None, Some(jt)) => {
            let v = anon.post("/v1/join", &json!({ "join_token": jt })).await?;
            let t = v
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::Failed("join answer has no token".into()))?;
            (t.to_owned(), true)
        }
        (None, None) => {
            return Err(CliError::Failed(
                "remit exec needs --join-token (or REMIT_JOIN_TOKEN) or REMIT_INSTANCE_TOKEN".into(),
            ));
        }
    };
    let inst = anon.with_bearer(&instance_token);
    let result = run_task(g, &a, &inst, signals).await;
    if joined {
        // This run created the instance identity; it dies with the run.
        if let Err(e) = anon.post_form("/oauth2/revoke", &[("token", &instance_token)]).await {
            eprintln!("remit: warning: could not revoke the instance identity: {e}");
        }
    }
    result
}

async fn run_task(g: &Global, a: &Args, inst: &Client, signals: Signals) -> Result<(), CliError> {
    let body = json!({
        "workflow": a.workflow, "intent": a.intent, "ttl_seconds": a.ttl,
        "sensitivity": a.sensitivity, "audience": a.audience,
    });
    let started = inst.post("/v1/tasks", &body).await?;
    let token = started["token"].as_str().unwrap_or_default().to_owned();
    let task_id = started["task"]["id"].as_str().unwrap_or_default().to_owned();
    let spiffe = started["spiffe_id"].as_str().unwrap_or_default().to_owned();
    if !g.json {
        eprintln!(
            "remit: task {task_id} started ({spiffe}), expires {}",
            started["expires_at"].as_str().unwrap_or("-")
        );
    }

    let outcome = async {
        let dir = tempfile::Builder::new()
            .prefix("remit-task-")
            .tempdir()
            .map_err(|e| CliError::Failed(format!("cannot create token dir: {e}")))?;
        let token_path = dir.path().join("token");
        write_private(&token_path, &token)?;
        let mut cmd = tokio::process::Command::new(&a.command[0]);
        cmd.args(&a.command[1..])
            .env("REMIT_TASK_TOKEN", &token)
            .env("REMIT_TASK_TOKEN_FILE", &token_path)
            .env("REMIT_TASK_ID", &task_id)
            .env("REMIT_SPIFFE_ID", &spiffe)
            .env("REMIT_URL", inst.base())
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for k in SECRET_ENV {
            cmd.env_remove(k);
        }
        let child = cmd.spawn().map_err(|e| CliError::Failed(format!("cannot run `{}`: {e}", a.command[0])))?;
        let code = supervise(child, signals).await;
        drop(dir);
        code
    }
    .await;

    // Complete the task whatever happened to the child, so its credentials die with it.
    match inst.post(&format!("/v1/tasks/{task_id}/complete"), &json!({})).await {
        Ok(_) => {
            if !g.json {
                eprintln!("remit: task {task_id} completed");
            }
        }
        Err(e) => eprintln!("remit: warning: could not complete task {task_id}: {e}"),
    }
    match outcome? {
        0 => Ok(()),
        c => Err(CliError::Exit(c)),
    }
}

fn write_private(path: &std::path::Path, token: &str) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| CliError::Failed(format!("cannot write token file: {e}")))?;
    f.write_all(token.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write token file: {e}")))
}

/// The termination signals `remit exec` forwards to its child.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |k| signal(k).map_err(|e| CliError::Failed(format!("cannot install signal handler: {e}")));
        Ok(Signals {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
        })
    }
}

/// Waits for the child, forwarding termination signals; a second signal kills it.
/// Returns the exit code to pass through (128+N when a signal ended it).
async fn supervise(mut child: tokio::process::Child, mut s: Signals) -> Result<u8, CliError> {
    // With a terminal, Ctrl-C already reaches the child (same process group); forwarding
    // SIGINT as well would deliver it twice.
    let forward_int = !std::io::stdin().is_terminal();
    let mut signalled = 0;
    loop {
        let forward = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::Failed(format!("waiting for child: {e}")))?;
                return Ok(exit_code(status));
            }
            _ = s.int.recv() => forward_int.then_some(nix::sys::signal::Signal::SIGINT),
            _ = s.term.recv() => Some(nix::sys::signal::Signal::SIGTERM),
            _ = s.hup.recv() => Some(nix::sys::signal::Signal::SIGHUP),
        };
        signalled += 1;
        if signalled > 1 {
            let _ = child.start_kill();
        } else if let (Some(sig), Some(pid)) = (forward, child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)), sig);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = status.code() {
        u8::try_from(c & 0xff).unwrap_or(1)
    } else if let Some(s) = status.signal() {
        u8::try_from(128 + (s & 0x7f)).unwrap_or(1)
    } else {
        1
    }
}
