//! `remit keys rotate [--x509 | --class CLASS]`.

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Rotate the token signing key; tokens signed by the old key stay valid until they expire.
    Rotate {
        /// Rotate the trust domain's X.509 CA instead: X.509-SVIDs are re-issued by the new CA
        /// at once (streams get them), the old CA stays in the bundle until its leaves expire.
        #[arg(long, conflicts_with = "class")]
        x509: bool,
        /// Rotate the signing key of a tool class's own trust domain instead (model, tool or
        /// data); its credentials signed by the old key stay valid until they expire.
        #[arg(long, value_parser = ["model", "tool", "data"])]
        class: Option<String>,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let Cmd::Rotate { x509, class } = cmd;
    let (path, what) = match (&class, x509) {
        (Some(c), _) => (format!("/v1/keys/rotate?purpose=jwt-{c}"), format!("`{c}` trust domain signing key")),
        (None, true) => ("/v1/keys/rotate?purpose=x509".to_owned(), "X.509 CA key".to_owned()),
        (None, false) => ("/v1/keys/rotate".to_owned(), "signing key".to_owned()),
    };
    let v = Client::admin(g).await?.post(&path, &serde_json::json!({})).await?;
    if g.json {
        output::json(&v);
    } else {
        println!("New {what} {} (bundle sequence {})", output::s(&v, "kid"), v["bundle_sequence"]);
    }
    Ok(())
}
