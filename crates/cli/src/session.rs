//! The signed-in human's Remit session, kept for the CLI: one file (default
//! `$XDG_CONFIG_HOME/remit/session.json`, else `~/.config/remit/session.json`; or
//! `--session-file` / `REMIT_SESSION_FILE`), created 0600, holding the server it belongs to
//! and the session's access and refresh tokens. A command uses it when it names the same
//! server; an access token about to expire is refreshed first (the refresh token rotates, and
//! the file is rewritten).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// What `remit login` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// The server (`--url`) the session belongs to.
    pub url: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub session: String,
    pub email: String,
}

/// Where the session file lives.
pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("remit").join("session.json"))
}

pub fn load(p: &Path) -> Option<Saved> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// Writes the session file, readable by its owner only (created so, never widened).
pub fn save(p: &Path, s: &Saved) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| CliError::Failed(format!("cannot write the session file {}: {e}", p.display()));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail)?;
    f.write_all(serde_json::to_string_pretty(s).unwrap_or_default().as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, p).map_err(fail)
}

pub fn remove(p: &Path) {
    let _ = std::fs::remove_file(p);
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A secret from `REMIT_PASSWORD`, else the first line of standard input (never an argument,
/// which other users could read in the process list).
pub fn read_secret(what: &str) -> Result<String, CliError> {
    if let Ok(p) = std::env::var("REMIT_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Failed(format!("cannot read the {what} from standard input: {e}")))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        return Err(CliError::Failed(format!("no {what}: give it on standard input or in REMIT_PASSWORD")));
    }
    Ok(line)
}
