//! `remit entities push FILE`.

use std::path::PathBuf;

use serde_json::Value;

use crate::client::Client;
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Insert or replace entities from a JSON file: `{"entities": [{"uid": {"type", "id"},
    /// "attrs": {…}, "parents": [{"type", "id"}…], "aliases": ["…"]}]}` (or a bare array).
    Push {
        /// The JSON file.
        file: PathBuf,
    },
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let Cmd::Push { file } = cmd;
    let text = std::fs::read_to_string(&file).map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let body = if v.is_array() { serde_json::json!({"entities": v}) } else { v };
    let r = Client::admin(g).await?.post("/v1/entities", &body).await?;
    if g.json {
        output::json(&r);
    } else {
        println!("Stored {} entities", r["stored"]);
    }
    Ok(())
}
