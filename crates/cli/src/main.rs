//! `remit`: runs the server and talks to it.
//!
//! One file per command under [`cmd`]. Client commands find the server through `--url` /
//! `REMIT_URL` and the admin credential through `--admin-token` / `REMIT_ADMIN_TOKEN` or the
//! `admin-token` file `remit init` wrote in the data directory.
//!
//! Exit codes: 0 success; 1 error; 2 usage; 3 denied or inactive; 4 not found;
//! 5 server unreachable or unavailable; 6 `exec`: the task was killed; 7 `decide`: a human
//! must approve the call first (approval required or still pending).
//!
//! With `--json`, every command prints JSON on stdout, and an error is one JSON object on
//! stderr: `{"error": {"message", "exit_code"}}`.

mod client;
mod cmd;
mod output;
mod sse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "remit", version, about = "Identity and authorization control plane for AI agents")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Print machine-readable JSON instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The Remit server.
    #[arg(long, global = true, env = "REMIT_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// The data directory (server state; the CLI reads `admin-token` from it).
    #[arg(long, global = true, env = "REMIT_DATA_DIR", default_value = "remit-data")]
    pub data_dir: PathBuf,
    /// The admin credential (default: the `admin-token` file in the data directory).
    #[arg(long, global = true, env = "REMIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Operator name recorded in the audit log next to `admin` (default: $USER).
    #[arg(long, global = true, env = "REMIT_OPERATOR")]
    pub operator: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Initialize a data directory: keys, the admin credential (printed once).
    Init(cmd::init::Args),
    /// Run the server (initializes the data directory on first run).
    Serve(cmd::serve::Args),
    /// Workflows: trust boundaries for one purpose.
    #[command(subcommand)]
    Workflow(cmd::workflow::Cmd),
    /// Agents and their join tokens.
    #[command(subcommand)]
    Agent(cmd::agent::Cmd),
    /// Tasks: one unit of work with its own short-lived identity.
    #[command(subcommand)]
    Task(cmd::task::Cmd),
    /// Inspect tokens.
    #[command(subcommand)]
    Token(cmd::token::Cmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(cmd::audit::Cmd),
    /// Signing keys.
    #[command(subcommand)]
    Keys(cmd::keys::Cmd),
    /// Cedar policies: validate, push, test, explain.
    #[command(subcommand)]
    Policy(cmd::policy::Cmd),
    /// Approve or deny calls that policy marked `@approval`.
    #[command(subcommand)]
    Approval(cmd::approval::Cmd),
    /// The attribute store (users, resources, roles) decisions read.
    #[command(subcommand)]
    Entities(cmd::entities::Cmd),
    /// Ask whether this task may take an action, with its own token (REMIT_TASK_TOKEN);
    /// exit 0 allow, 3 deny, 7 a human must approve first (`--wait` waits for them).
    Decide(cmd::decide::Args),
    /// Run a command as one task of a workflow: join, start the task, hand the child its
    /// token, complete the task when the child exits.
    Exec(cmd::exec::Args),
    /// Seal an installation made before Remit sealed its records under the KEK (offline).
    Reseal(cmd::reseal::Args),
}

/// A failure with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Failed(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// A child process's exit code, passed through by `remit exec`.
    #[error("exit {0}")]
    Exit(u8),
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Denied(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::Unavailable(_) => 5,
            CliError::Exit(c) => *c,
        }
    }
}

/// Clap's refusal of the command line: its own text, or under `--json` the JSON error shape
/// (help and version are printed as they are).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !std::env::args().any(|a| a == "--json") {
        e.exit();
    }
    let message = e.render().to_string();
    let message = message.trim().trim_start_matches("error: ");
    eprintln!("{}", serde_json::json!({"error": {"message": message, "exit_code": 2}}));
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let json = cli.global.json;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remit: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exit(c)) => ExitCode::from(c),
        Err(e) if json => {
            let v = serde_json::json!({"error": {"message": e.to_string(), "exit_code": e.code()}});
            eprintln!("{v}");
            ExitCode::from(e.code())
        }
        Err(e) => {
            eprintln!("remit: {e}");
            ExitCode::from(e.code())
        }
    }
}
