//! `remit keys rotate`.

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Rotate the token signing key; tokens signed by the old key stay valid until they expire.
    Rotate,
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let Cmd::Rotate = cmd;
    let v = Client::admin(g).await?.post("/v1/keys/rotate", &serde_json::json!({})).await?;
    if g.json {
        output::json(&v);
    } else {
        println!("New signing key {} (bundle sequence {})", output::s(&v, "kid"), v["bundle_sequence"]);
    }
    Ok(())
}
