//! `remit keys rotate [--x509]`.

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Rotate the token signing key; tokens signed by the old key stay valid until they expire.
    Rotate {
        /// Rotate the trust domain's X.509 CA instead: X.509-SVIDs are re-issued by the new CA
        /// at once (streams get them), the old CA stays in the bundle until its leaves expire.
        #[arg(long)]
        x509: bool,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let Cmd::Rotate { x509 } = cmd;
    let path = if x509 { "/v1/keys/rotate?purpose=x509" } else { "/v1/keys/rotate" };
    let v = Client::admin(g).await?.post(path, &serde_json::json!({})).await?;
    if g.json {
        output::json(&v);
    } else {
        let what = if x509 { "X.509 CA key" } else { "signing key" };
        println!("New {what} {} (bundle sequence {})", output::s(&v, "kid"), v["bundle_sequence"]);
    }
    Ok(())
}
