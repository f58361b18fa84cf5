//! `remit login` against the real server binary and the real OpenID provider (npm
//! `oidc-provider`): the CLI listens on a loopback port, the browser signs in at the provider
//! and is sent back to the CLI with a one-time code, the CLI redeems it with its PKCE verifier
//! and keeps the session (0600); later commands act as that human, with exactly their role;
//! `remit logout` ends the session on the server and forgets it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[allow(dead_code)]
#[path = "../../server/tests/common/oidc.rs"]
mod oidc;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "remit-server-secret-not-for-production";

async fn provider() -> oidc::OidcProvider {
    let mut cfg = oidc::default_config();
    cfg["clients"].as_array_mut().unwrap().push(json!({
        "client_id": "remit-server",
        "client_secret": SECRET,
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1/v1/auth/oidc/callback"],
        "id_token_signed_response_alg": "RS256"
    }));
    oidc::OidcProvider::start_with(cfg).await
}

/// Runs `remit login --no-browser`, signs `sub` in with a browser, and returns its output.
async fn login(url: &str, session: &std::path::Path, op: &oidc::OidcProvider, sub: &str) -> (i32, String) {
    let mut child = tokio::process::Command::new(common::BIN)
        .args(["--url", url, "login", "--no-browser", "--timeout", "60s"])
        .env("REMIT_SESSION_FILE", session)
        .env_remove("REMIT_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let sign_in = loop {
        let line = err.next_line().await.unwrap().expect("remit login printed no URL");
        if let Some(u) = line.trim().strip_prefix("http") {
            break format!("http{u}");
        }
    };
    let b = op.browser();
    let back = b.authorize(&sign_in, sub).await; // the provider sends the browser back to Remit …
    let r = b.get(back.as_str()).await; // … which sends it on to the CLI's loopback listener
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let cli = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(cli.starts_with("http://127.0.0.1:"), "{cli}");
    let page = b.get(&cli).await;
    assert_eq!(page.status(), 200);
    let out = child.wait_with_output().await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn remit(url: &str, session: &std::path::Path, data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::BIN)
        .args(["--url", url])
        .args(args)
        .env("REMIT_SESSION_FILE", session)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remit_login_signs_a_human_in_and_later_commands_act_as_them() {
    let op = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(
        data.join("remit.toml"),
        format!(
            r#"[[oidc]]
name = "corp"
issuer = "{}"
client_id = "remit-server"
client_secret_file = "{}"
scopes = ["openid", "email", "profile", "groups"]
[oidc.roles]
"remit-admins" = ["admin"]
"#,
            op.issuer,
            dir.path().join("secret").display()
        ),
    )
    .unwrap();
    let server = common::serve(&data, &[], &[]);
    let url = server.url.clone();
    // The human's commands must not fall back to the data directory's break-glass credential.
    let elsewhere = dir.path().join("no-admin-here");
    let session = dir.path().join("home/.config/remit/session.json");

    let (code, out) = login(&url, &session, &op, "alice").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed in as alice@example.com"), "{out}");
    assert!(out.contains("roles:   admin"), "{out}");
    let mode = std::fs::metadata(&session).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the session file is the owner's only");
    let saved = std::fs::read_to_string(&session).unwrap();
    assert!(saved.contains("remit_s.") && saved.contains("remit_r."));

    // Later commands act as alice (an admin by her group).
    let (code, out, err) = remit(&url, &session, &elsewhere, &["whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice@example.com"), "{out}");
    let (code, _, err) = remit(
        &url,
        &session,
        &elsewhere,
        &["workflow", "create", "deploy", "--purpose", "ship", "--owner", "alice@example.com"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        remit(&url, &session, &elsewhere, &["--json", "audit", "list", "--action", "workflow.create"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"actor\": \"human:h-") && out.contains("/session:s-"),
        "the record names her and her session: {out}"
    );

    let (code, out, err) = remit(&url, &session, &elsewhere, &["human", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice@example.com") && out.contains("active"), "{out}");
    let (code, out, err) = remit(&url, &session, &elsewhere, &["orphans"]);
    assert_eq!((code, out.trim()), (0, "nothing is orphaned"), "{err}");

    // Bob has no role: the same command is refused (exit 3), and the refusal is recorded.
    let bob_session = dir.path().join("bob.json");
    let (code, _) = login(&url, &bob_session, &op, "bob").await;
    assert_eq!(code, 0);
    let (code, _, err) = remit(
        &url,
        &bob_session,
        &elsewhere,
        &["workflow", "create", "w2", "--purpose", "p", "--owner", "bob@example.com"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("may not `workflow.create`"), "{err}");

    // Logging out ends the session on the server and forgets it here.
    let (code, out, err) = remit(&url, &session, &elsewhere, &["logout"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed out"), "{out}");
    assert!(!session.exists());
    let (code, _, err) = remit(&url, &session, &elsewhere, &["whoami"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = remit(&url, &session, &elsewhere, &["workflow", "list"]);
    assert_ne!(code, 0, "no session and no admin credential: {err}");
    drop(server);
    op.stop().await;
}

/// Runs the CLI with `stdin` as its standard input.
fn remit_stdin(
    url: &str,
    session: &std::path::Path,
    data: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(common::BIN)
        .args(["--url", url])
        .args(args)
        .env("REMIT_SESSION_FILE", session)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_ADMIN_TOKEN")
        .env_remove("REMIT_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_local_human_is_created_and_signs_in_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::serve(&data, &[], &[]);
    let url = server.url.clone();
    let session = dir.path().join("session.json");
    let elsewhere = dir.path().join("no-admin-here");
    // The admin (break-glass, from the data directory) creates her; the password comes on stdin.
    let (code, out, err) = remit_stdin(
        &url,
        &session,
        &data,
        &["human", "create", "dana@example.com", "--role", "auditor"],
        "correct horse battery\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dana@example.com"), "{out}");
    let (code, _, err) =
        remit_stdin(&url, &session, &elsewhere, &["login", "--local", "dana@example.com"], "wrong password!!\n");
    assert_eq!(code, 3, "{err}");
    let (code, out, err) =
        remit_stdin(&url, &session, &elsewhere, &["login", "--local", "dana@example.com"], "correct horse battery\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed in as dana@example.com") && out.contains("roles:   auditor"), "{out}");
    let (code, _, err) = remit(&url, &session, &elsewhere, &["audit", "list"]);
    assert_eq!(code, 0, "an auditor reads the log: {err}");
    let (code, _, err) = remit(
        &url,
        &session,
        &elsewhere,
        &["workflow", "create", "w", "--purpose", "p", "--owner", "dana@example.com"],
    );
    assert_eq!(code, 3, "an auditor creates nothing: {err}");
    drop(server);
}
