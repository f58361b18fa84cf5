//! Starting the real `remit serve` binary for the CLI's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_remit");

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// The admin listener (`unix:PATH` or `http://…`), if it printed one.
    pub admin_url: Option<String>,
    /// The log lines before it was listening (the first-run message among them).
    pub banner: Vec<String>,
    /// The injecting tool proxy's URL, when `[proxy] listen` is configured.
    pub proxy_url: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `remit serve` on a free loopback port for `data`, with `args` and `env` added; returns
/// once its log says where it listens (not on a terminal, `serve` prints no banner: its
/// JSON log lines on stderr carry `url` and `admin_url`).
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
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("REMIT_DATA_DIR", data)
        .env("RUST_LOG", "info")
        .env_remove("REMIT_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        if *k == "RUST_LOG" {
            // Whatever else is filtered, the line saying where it listens must come through.
            cmd.env(k, format!("{v},remit::cmd::serve=info"));
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut banner = Vec::new();
    let (url, admin_url, proxy_url) = loop {
        let Some(line) = lines.next() else { panic!("server exited before listening:\n{}", banner.join("\n")) };
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "remit serving" {
            let admin = v["admin_url"].as_str().filter(|a| *a != "off").map(str::to_owned);
            let proxy = v["proxy_url"].as_str().filter(|a| *a != "off").map(str::to_owned);
            break (v["url"].as_str().expect("the serving line names the url").to_owned(), admin, proxy);
        }
        banner.push(line);
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, url, admin_url, banner, proxy_url }
}

/// Runs `remit --json ARGS` against the server at `url` with data directory `data` (the admin
/// credential from its `admin-token`), `stdin` piped in; panics unless it succeeds; returns
/// its JSON output (`Null` if none).
pub fn remit_json(url: &str, data: &Path, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    use std::io::Write;
    let mut c = Command::new(BIN);
    c.arg("--json").args(args).env("REMIT_URL", url).env("REMIT_DATA_DIR", data);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(t) = stdin {
        input.write_all(t.as_bytes()).unwrap();
    }
    drop(input);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

/// The Python to run the SDK with: `REMIT_TEST_PYTHON`, else the shared venv's.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("REMIT_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let script = repo().join("scripts/python-env.sh");
    let o = Command::new(&script).stderr(Stdio::inherit()).output().unwrap_or_else(|e| {
        panic!("cannot run {}: {e}; set REMIT_TEST_PYTHON to a Python with pytest and the SDK", script.display())
    });
    let path = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(
        o.status.success() && !path.is_empty(),
        "{} failed ({}): set REMIT_TEST_PYTHON to a Python with pytest and the SDK (`pip install ./sdk/python`)",
        script.display(),
        o.status
    );
    PathBuf::from(path)
}

/// The executable the test's Python runs as (what `/proc/<pid>/exe` names), and its SHA-256.
pub fn python_exe() -> (String, String) {
    let code = "import hashlib,os,sys; p=os.path.realpath(sys.executable); \
                print(p, hashlib.sha256(open(p,'rb').read()).hexdigest())";
    let o = Command::new(python()).args(["-c", code]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let (path, hash) = s.split_once(' ').unwrap();
    (path.to_owned(), hash.to_owned())
}

/// This process's Unix user id.
pub fn uid() -> String {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap().trim().to_owned()
}

/// The selectors the test's Python processes attest with: `unix:uid:…` and `unix:sha256:…`.
pub fn python_selectors() -> [String; 2] {
    [format!("unix:uid:{}", uid()), format!("unix:sha256:{}", python_exe().1)]
}

/// Registers the test's Python as agent `bot` of workflow `w` on the server at `url` (through
/// the CLI; `ca`: the server's self-signed TLS certificate).
pub fn register_python_agent(url: &str, data: &Path, ca: Option<&Path>) {
    let [uid_sel, hash_sel] = python_selectors();
    for args in [
        vec!["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com"],
        vec!["agent", "create", "bot", "--workflow", "w", "--owner", "alice@example.com"],
        vec!["entry", "create", "--agent", "bot", "--selector", &uid_sel, "--selector", &hash_sel],
    ] {
        let mut c = Command::new(BIN);
        c.args(&args).env("REMIT_URL", url).env("REMIT_DATA_DIR", data);
        if let Some(ca) = ca {
            c.env("REMIT_TLS_CA", ca);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A reqwest client trusting only `ca`, with an optional client certificate (PEM key + chain).
pub fn tls_client(ca: &[u8], identity: Option<Vec<u8>>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca).unwrap());
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(&id).unwrap());
    }
    b.build().unwrap()
}
