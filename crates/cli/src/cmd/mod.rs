//! One module per command.

pub mod agent;
pub mod approval;
pub mod audit;
pub mod decide;
pub mod entities;
pub mod entry;
pub mod exec;
pub mod governance;
pub mod grant;
pub mod human;
pub mod info;
pub mod init;
pub mod keys;
pub mod lease;
pub mod login;
pub mod policy;
pub mod reseal;
pub mod secret;
pub mod serve;
pub mod task;
pub mod token;
pub mod tool;
pub mod workflow;

use crate::{Cli, CliError, Command};

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let g = cli.global;
    match cli.command {
        Command::Init(a) => init::run(&g, a).await,
        Command::Serve(a) => serve::run(&g, a).await,
        Command::Workflow(c) => workflow::run(&g, c).await,
        Command::Agent(c) => agent::run(&g, c).await,
        Command::Task(c) => task::run(&g, c).await,
        Command::Token(c) => token::run(&g, c).await,
        Command::Tool(c) => tool::run(&g, c).await,
        Command::Grant(c) => grant::run(&g, c).await,
        Command::Entry(c) => entry::run(&g, c).await,
        Command::Secret(c) => secret::run(&g, c).await,
        Command::Lease(c) => lease::run(&g, c).await,
        Command::Governance(c) => governance::run(&g, c).await,
        Command::Audit(c) => audit::run(&g, c).await,
        Command::Keys(c) => keys::run(&g, c).await,
        Command::Policy(c) => policy::run(&g, c).await,
        Command::Approval(c) => approval::run(&g, c).await,
        Command::Entities(c) => entities::run(&g, c).await,
        Command::Decide(a) => decide::run(&g, a).await,
        Command::Exec(a) => exec::run(&g, a).await,
        Command::Reseal(a) => reseal::run(&g, a).await,
        Command::Human(c) => human::run(&g, c).await,
        Command::Session(c) => human::session(&g, c).await,
        Command::Orphans => human::orphans(&g).await,
        Command::Login(a) => login::login(&g, a).await,
        Command::Logout => login::logout(&g).await,
        Command::Whoami => login::whoami(&g).await,
        Command::Version => info::version(&g).await,
        Command::Status => info::status(&g).await,
        Command::Completions { shell } => info::completions(shell),
    }
}

/// Loads the server configuration for the data directory in `g`.
pub fn load_config(g: &crate::Global) -> Result<remit_server::config::Config, CliError> {
    remit_server::config::Config::load(&g.data_dir, |k| std::env::var(k).ok())
        .map_err(|e| CliError::Failed(e.to_string()))
}
