//! `remit login`, `remit logout`, `remit whoami`: a human signs in through the server's OpenID
//! provider with a loopback redirect (RFC 8252): the CLI listens on `127.0.0.1:<random port>`,
//! sends the browser to the server's sign-in with its own PKCE challenge, receives a one-time
//! code on the loopback, and trades it (with its verifier) for Remit session tokens, kept in
//! the session file (0600).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, parse_secs};
use crate::session::{self, Saved};
use crate::{CliError, Global, output};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The provider to sign in through (default: the server's only one).
    #[arg(long)]
    pub provider: Option<String>,
    /// Print the sign-in URL without trying to open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Sign in as a local human (no identity provider) with this email; the password is read
    /// from standard input (or REMIT_PASSWORD).
    #[arg(long, value_name = "EMAIL", conflicts_with = "provider")]
    pub local: Option<String>,
    /// With --local: the authenticator's current code, once a second factor is enrolled.
    #[arg(long, requires = "local")]
    pub code: Option<String>,
    /// How long to wait for the sign-in in the browser (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = parse_secs)]
    pub timeout: u64,
}

fn session_path(g: &Global) -> Result<std::path::PathBuf, CliError> {
    session::path(g.session_file.as_deref())
        .ok_or_else(|| CliError::Failed("no session file: set --session-file or REMIT_SESSION_FILE (or HOME)".into()))
}

pub async fn login(g: &Global, a: LoginArgs) -> Result<(), CliError> {
    let c = Client::new(&g.url, None, None)?;
    if let Some(email) = &a.local {
        let password = session::read_secret("password")?;
        let t = c.post("/v1/auth/local", &json!({"email": email, "password": password, "code": a.code})).await?;
        return keep(g, &c, &t).await;
    }
    let providers = c.get("/v1/auth/providers").await?;
    let names: Vec<String> =
        providers.as_array().into_iter().flatten().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect();
    let provider = match (a.provider, names.as_slice()) {
        (Some(p), _) if names.contains(&p) => p,
        (Some(p), _) => {
            return Err(CliError::NotFound(format!("provider `{p}` (the server has: {})", names.join(", "))));
        }
        (None, [only]) => only.clone(),
        (None, []) => return Err(CliError::Failed("the server has no OpenID provider configured ([[oidc]])".into())),
        (None, _) => return Err(CliError::Failed(format!("choose one with --provider: {}", names.join(", ")))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on the loopback interface: {e}")))?;
    let port = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?.port();
    let verifier = remit_token::b64e(&remit_token::random::<32>());
    let challenge = remit_token::b64e(&remit_token::sha256(verifier.as_bytes()));
    let state = remit_token::b64e(&remit_token::random::<16>());
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/auth/oidc/{provider}/login", g.url.trim_end_matches('/')),
        [
            ("redirect_uri", redirect.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
        ],
    )
    .map_err(|e| CliError::Failed(format!("--url: {e}")))?;
    eprintln!("Open this URL in a browser to sign in to Remit through `{provider}`:\n\n  {url}\n");
    if !a.no_browser {
        // Best effort: the URL above is the way in when no browser opens.
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let q = tokio::time::timeout(Duration::from_secs(a.timeout), callback(&listener))
        .await
        .map_err(|_| CliError::Failed("the sign-in did not finish in time".into()))??;
    if let Some(e) = q.get("error") {
        return Err(CliError::Denied(format!("the sign-in was refused ({e})")));
    }
    if q.get("state") != Some(&state) {
        return Err(CliError::Denied("the sign-in came back with another state; start again".into()));
    }
    let code = q.get("code").ok_or_else(|| CliError::Failed("the sign-in came back without a code".into()))?;
    let t = c
        .post("/v1/auth/token", &json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier}))
        .await?;
    keep(g, &c, &t).await
}

/// Saves a session's tokens (0600) and says who signed in.
async fn keep(g: &Global, c: &Client, t: &Value) -> Result<(), CliError> {
    let access = output::s(t, "access_token").to_owned();
    let me = c.with_bearer(&access).get("/v1/auth/session").await?;
    let saved = Saved {
        url: g.url.clone(),
        access_token: access,
        refresh_token: output::s(t, "refresh_token").to_owned(),
        expires_at: session::now_ms() + t["expires_in"].as_i64().unwrap_or(0) * 1000,
        session: output::s(t, "session").to_owned(),
        email: output::s(&me["human"], "email").to_owned(),
    };
    let path = session_path(g)?;
    session::save(&path, &saved)?;
    print_me(g, &me, Some(&path))
}

/// Waits for the browser's one request to `/callback` and answers it; anything else gets 404.
async fn callback(listener: &tokio::net::TcpListener) -> Result<std::collections::HashMap<String, String>, CliError> {
    loop {
        let (mut conn, _) = listener.accept().await.map_err(|e| CliError::Failed(e.to_string()))?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        let head = loop {
            let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf[n..])).await;
            match read {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break None,
                Ok(Ok(k)) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                break Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        };
        let Some(head) = head else { continue };
        let target = head.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
        let Ok(u) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else { continue };
        if u.path() != "/callback" {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            continue;
        }
        let page = "<!doctype html><meta charset=utf-8><title>Remit</title><p>Back to the terminal: \
                    remit login has what it needs. You can close this window.";
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        return Ok(u.query_pairs().into_owned().collect());
    }
}

fn print_me(g: &Global, me: &Value, saved_to: Option<&std::path::Path>) -> Result<(), CliError> {
    if g.json {
        println!("{me}");
        return Ok(());
    }
    let h = &me["human"];
    let s = &me["session"];
    let roles: Vec<&str> = h["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    println!("signed in as {} ({})", output::s(h, "email"), output::s(h, "id"));
    println!("roles:   {}", if roles.is_empty() { "none".into() } else { roles.join(", ") });
    println!(
        "session: {} via {}, refreshable until {}",
        output::s(s, "id"),
        output::s(s, "method"),
        output::s(s, "ends_at")
    );
    if let Some(p) = saved_to {
        println!("saved:   {}", p.display());
    }
    Ok(())
}

pub async fn whoami(g: &Global) -> Result<(), CliError> {
    let c = Client::signed_in(g).await?;
    let me = c.get("/v1/auth/session").await?;
    print_me(g, &me, None)
}

pub async fn logout(g: &Global) -> Result<(), CliError> {
    let path = session_path(g)?;
    let Some(saved) = session::load(&path) else {
        return Err(CliError::NotFound(format!("no session in {}", path.display())));
    };
    let c = Client::new(&saved.url, Some(saved.access_token.clone()), None)?;
    // An already ended session is fine: the file goes either way.
    let ended = c.post("/v1/auth/logout", &json!({})).await;
    session::remove(&path);
    match ended {
        Ok(_) | Err(CliError::Denied(_)) => {
            if g.json {
                println!("{}", json!({"signed_out": saved.session}));
            } else {
                println!("signed out of session {}", saved.session);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
