//! Starting the real `remit serve` binary for the CLI's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_remit");

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// The admin listener (`unix:PATH` or `http://…`), if it printed one.
    pub admin_url: Option<String>,
    /// What it printed before it was listening (the first-run message).
    pub banner: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `remit serve` on a free loopback port for `data`, with `args` and `env` added; returns
/// once it prints where it listens.
pub fn serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    serve_under(None, data, args, env)
}

/// [`serve`], started through `sh -c "<shell>; exec remit serve …"` (e.g. `ulimit -n 256`).
pub fn serve_under(shell: Option<&str>, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = match shell {
        None => Command::new(BIN),
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("{prefix}; exec \"$0\" \"$@\""), BIN]);
            c
        }
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .args(args)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let url = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.strip_prefix("Remit listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        banner.push(line);
    };
    std::thread::spawn(move || for _ in lines {});
    let admin_url = banner
        .iter()
        .find_map(|l| l.strip_prefix("Admin listener on "))
        .map(|r| r.split_whitespace().next().unwrap().to_owned());
    Server { child, url, admin_url, banner }
}
