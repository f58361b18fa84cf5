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
mod session;
mod sse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    #[arg(long)]
    pub json: bool,
    /// The Remit server.
    #[arg(long, env = "REMIT_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// The data directory (server state; the CLI reads `admin-token` from it).
    #[arg(long, env = "REMIT_DATA_DIR", default_value = "remit-data")]
    pub data_dir: PathBuf,
    /// The admin credential (default: the `admin-token` file in the data directory).
    #[arg(long, env = "REMIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Operator name recorded in the audit log next to `break-glass` (default: $USER).
    #[arg(long, env = "REMIT_OPERATOR")]
    pub operator: Option<String>,
    /// Where `remit login` keeps the session (default: ~/.config/remit/session.json). A
    /// session for `--url` is used instead of the data directory's admin credential.
    #[arg(long, env = "REMIT_SESSION_FILE")]
    pub session_file: Option<PathBuf>,
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
    /// Inspect tokens; trade a task token for a per-tool credential.
    #[command(subcommand)]
    Token(cmd::token::Cmd),
    /// Registered tools: what per-tool credentials are for.
    #[command(subcommand)]
    Tool(cmd::tool::Cmd),
    /// Grants: a signed-in human delegates to an agent (confirmed in a second step).
    #[command(subcommand)]
    Grant(cmd::grant::Cmd),
    /// Workload registration entries: which agent a process on this host is (SPIFFE
    /// Workload API attestation, no secret to hand out).
    #[command(subcommand)]
    Entry(cmd::entry::Cmd),
    /// Tools' upstream secrets (write-only) and the leak guard.
    #[command(subcommand)]
    Secret(cmd::secret::Cmd),
    /// Database logins made per task by tools' engines, removed with their task.
    #[command(subcommand)]
    Lease(cmd::lease::Cmd),
    /// Governance: containment rules and recertification per workflow.
    #[command(subcommand)]
    Governance(cmd::governance::Cmd),
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
    /// Humans known to Remit and their sessions.
    #[command(subcommand)]
    Human(cmd::human::Cmd),
    /// Sessions of humans.
    #[command(subcommand)]
    Session(cmd::human::SessionCmd),
    /// Workflows and agents whose owner was deactivated, until someone takes them over.
    Orphans,
    /// Sign in as a human through the server's OpenID provider (a loopback redirect: the
    /// browser signs in, the CLI keeps the Remit session, 0600).
    Login(cmd::login::LoginArgs),
    /// End the saved session (on the server too) and forget it.
    Logout,
    /// Who the saved session belongs to, with their roles.
    Whoami,
    /// Print this binary's version.
    Version,
    /// The server's state: version, store, keys, audit head and checkpoint age, policy version.
    Status,
    /// Print a shell completion script (e.g. `remit completions bash > /etc/bash_completion.d/remit`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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

/// The global options (`--flag` and whether it takes a value), accepted anywhere on the
/// command line but declared, and listed in help, once: on `remit` itself.
const GLOBALS: &[(&str, bool)] = &[
    ("--json", false),
    ("--url", true),
    ("--data-dir", true),
    ("--admin-token", true),
    ("--operator", true),
    ("--session-file", true),
];

/// Moves global options that follow the subcommand to the front, so that `remit workflow list
/// --json` means `remit --json workflow list`. Nothing after `--` moves (that is `exec`'s
/// command line), and neither does the value of another option.
pub fn globals_first(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut it = args.into_iter();
    let mut front: Vec<std::ffi::OsString> = it.next().into_iter().collect();
    let mut rest = Vec::new();
    let mut passthrough = false;
    while let Some(a) = it.next() {
        let text = a.to_str().unwrap_or_default();
        if passthrough || text == "--" {
            passthrough = true;
            rest.push(a);
            continue;
        }
        let name = text.split_once('=').map(|(n, _)| n).unwrap_or(text);
        match GLOBALS.iter().find(|(g, _)| *g == name) {
            Some((_, true)) if !text.contains('=') => {
                front.push(a);
                front.extend(it.next());
            }
            Some(_) => front.push(a),
            None => rest.push(a),
        }
    }
    front.extend(rest);
    front
}

/// The command line, with a pointer to the global options under every subcommand's help.
pub fn command() -> clap::Command {
    fn note(c: clap::Command) -> clap::Command {
        c.after_help("Global options (--json, --url, --data-dir, --admin-token, --operator): see `remit --help`.")
            .mut_subcommands(note)
    }
    Cli::command().mut_subcommands(note)
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
    let args = globals_first(std::env::args_os().collect());
    let cli = match command().try_get_matches_from(args).and_then(|m| Cli::from_arg_matches(&m)) {
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

#[cfg(test)]
mod tests {
    use super::globals_first;

    fn run(args: &[&str]) -> Vec<String> {
        globals_first(args.iter().map(Into::into).collect()).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn global_options_move_to_the_front_but_not_past_a_double_dash() {
        assert_eq!(run(&["remit", "workflow", "list", "--json"]), ["remit", "--json", "workflow", "list"]);
        assert_eq!(
            run(&["remit", "task", "show", "t1", "--url", "http://x", "--operator=bob"]),
            ["remit", "--url", "http://x", "--operator=bob", "task", "show", "t1"]
        );
        assert_eq!(
            run(&["remit", "exec", "--workflow", "w", "--json", "--", "tool", "--json", "--url", "u"]),
            ["remit", "--json", "exec", "--workflow", "w", "--", "tool", "--json", "--url", "u"]
        );
    }
}

#[cfg(test)]
mod help_tests {
    /// Every argument of every command says what it is (clap adds defaults, allowed values and
    /// environment variables to it).
    #[test]
    fn every_argument_has_a_description() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if c.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{path} (the command)"));
            }
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::command(), "", &mut missing);
        assert!(missing.is_empty(), "arguments without a description:\n{}", missing.join("\n"));
    }
}
