//! `remit exec`: run an existing agent as one task of a workflow, in one line.
//!
//! 1. Harden this process: not dumpable (so a same-user child cannot read our memory or
//!    `/proc/<pid>/environ`), and refuse to run a command that could read the admin
//!    credential or the KEK ([`exposure`]) unless `--local-demo`; `--user` runs it as another
//!    Unix user.
//! 2. Prove the agent: a live instance token (`REMIT_INSTANCE_TOKEN`) or a one-time join
//!    token (`--join-token` / `REMIT_JOIN_TOKEN`) traded for a fresh instance identity.
//! 3. Start a task; write its token to a 0600 file in a private temp dir (owned by the
//!    child's user).
//! 4. Run the command with `REMIT_TASK_TOKEN`, `REMIT_TASK_TOKEN_FILE`, `REMIT_TASK_ID`,
//!    `REMIT_SPIFFE_ID` and `REMIT_URL` set, and every other `REMIT_*` variable removed; with
//!    `--db TOOL` (and only when the workflow allows it for that tool), a database login made
//!    for this task in the tool's `env` variable — removed by the server when the task ends.
//! 5. Watch the task ([`watch`]): when it is revoked, killed or expires, stop the command
//!    (SIGTERM, then SIGKILL after `--grace`) and exit with [`EXIT_TASK_ENDED`].
//! 6. When the command exits (or on SIGTERM/SIGINT/SIGHUP, forwarded to it), complete the
//!    task, revoke the instance if this run created it, delete the token file, and exit with
//!    its code.

mod child;
mod exposure;
mod watch;

use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Client, parse_secs};
use crate::{CliError, Global};

/// Exit code when the task ended (revoked, killed, expired) and the command was stopped.
pub const EXIT_TASK_ENDED: u8 = 6;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workflow the task belongs to (with `--parent`: the parent's).
    #[arg(long, required_unless_present = "parent")]
    pub workflow: Option<String>,
    /// Run the command as a **child** of the task this runs in (a supervisor handing work to
    /// a worker agent): the child is started with the parent's task token
    /// (`REMIT_TASK_TOKEN`), for `--agent`, with the parent's authority narrowed by the
    /// `--allow-*`, `--resource-prefix`, `--max-calls` and `--no-delegate` options.
    #[arg(long, requires = "agent")]
    pub parent: bool,
    /// With `--parent`: the worker agent the child task is for.
    #[arg(long)]
    pub agent: Option<String>,
    /// With `--parent`: the parent's task token.
    #[arg(long = "parent-token", env = "REMIT_TASK_TOKEN", hide_env_values = true)]
    pub parent_token: Option<String>,
    #[command(flatten)]
    pub narrow: crate::cmd::task::Narrow,
    /// Start the task under this human's confirmed grant (`g-…`): on their behalf, with the
    /// grant's authority, ending when the grant does.
    #[arg(long, conflicts_with = "parent")]
    pub grant: Option<String>,
    /// What the task is for (recorded; its hash goes into the token).
    #[arg(long)]
    pub intent: String,
    /// Task lifetime (e.g. 5m); at most the workflow's maximum. The command is stopped when
    /// the task ends, including when it expires.
    #[arg(long, value_parser = parse_secs, allow_hyphen_values = true)]
    pub ttl: Option<u64>,
    /// Sensitivity of the data the task touches.
    #[arg(long)]
    pub sensitivity: Option<String>,
    /// Audience of the task token (repeatable).
    #[arg(long = "audience", default_value = "remit")]
    pub audience: Vec<String>,
    /// One-time join token for the agent.
    #[arg(long, env = "REMIT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// A live instance token of the agent (used instead of a join token).
    #[arg(long, env = "REMIT_INSTANCE_TOKEN", hide_env_values = true)]
    pub instance_token: Option<String>,
    /// Run the command as this Unix user (name or uid), so it cannot read what this user can
    /// (the admin credential, the KEK). Needs the privilege to switch users.
    #[arg(long)]
    pub user: Option<String>,
    /// Allow the command to run although it could read the admin credential or the KEK (a
    /// demo on one's own machine; never in production).
    #[arg(long)]
    pub local_demo: bool,
    /// A tool whose per-task database login goes into the command's environment: its
    /// connection URL, as the tool's `env` variable (default `DATABASE_URL`). The workflow
    /// must allow it (`remit workflow set-trust --env-credentials TOOL`); the login is audited
    /// and removed when the task ends. Repeatable.
    #[arg(long = "db", value_name = "TOOL")]
    pub db: Vec<String>,
    /// The proxy listener's URL (`[proxy] listen`), where `--db` logins come from.
    #[arg(long, env = "REMIT_PROXY_URL", hide_env_values = true)]
    pub proxy_url: Option<String>,
    /// How long the command has to exit after SIGTERM when its task ends, before SIGKILL.
    #[arg(long, value_parser = parse_secs, allow_hyphen_values = true, default_value = "10")]
    pub grace: u64,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Whom the command runs as, resolved once.
struct Target {
    run_as: exposure::RunAs,
    /// Set when switching to another user: its name and home, for the child's environment.
    switch: Option<(String, std::path::PathBuf)>,
}

fn target(user: Option<&str>) -> Result<Target, CliError> {
    use nix::unistd::{Uid, User, getgid, getuid};
    let Some(u) = user else {
        return Ok(Target { run_as: exposure::RunAs { uid: getuid().as_raw(), gid: getgid().as_raw() }, switch: None });
    };
    let found = match u.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(u),
    }
    .map_err(|e| CliError::Failed(format!("cannot look up user `{u}`: {e}")))?
    .ok_or_else(|| CliError::Failed(format!("no such user `{u}`")))?;
    Ok(Target {
        run_as: exposure::RunAs { uid: found.uid.as_raw(), gid: found.gid.as_raw() },
        switch: Some((found.name, found.dir)),
    })
}

pub async fn run(g: &Global, a: Args) -> Result<(), CliError> {
    // Before anything secret is in memory: a same-user process may not read it.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        return Err(CliError::Failed(format!("cannot mark remit exec non-dumpable: {e}")));
    }
    let target = target(a.user.as_deref())?;
    let same_user = target.run_as.uid == nix::unistd::getuid().as_raw();
    let exposed = exposure::exposures(
        &g.data_dir.join(remit_server::init::ADMIN_TOKEN_FILE),
        &exposure::kek_path(&g.data_dir),
        target.run_as,
        same_user,
    );
    if !exposed.is_empty() && !a.local_demo {
        return Err(CliError::Failed(format!(
            "refusing to run `{}`: as uid {} it could read {}. Run it as another user (--user), or pass \
             --local-demo if this is a demo on your own machine",
            a.command[0],
            target.run_as.uid,
            exposed.join(" and ")
        )));
    }
    // Handlers go in first: a signal that arrives while joining or starting the task is
    // held and forwarded to the child once it runs (and the task is completed), instead of
    // killing this process with a live task behind it.
    let signals = child::Signals::install()?;
    let anon = Client::new(&g.url, None, None)?;
    if a.parent {
        let parent = a.parent_token.clone().ok_or_else(|| {
            CliError::Failed(
                "remit exec --parent runs inside a task: REMIT_TASK_TOKEN (or --parent-token) is required".into(),
            )
        })?;
        return run_task(g, &a, &target, &anon.with_bearer(&parent), signals).await;
    }
    let (instance_token, joined) = match (a.instance_token.clone(), a.join_token.clone()) {
        (Some(t), _) => (t, false),
        (None, Some(jt)) => {
            let v = anon.post("/v1/join", &json!({ "join_token": jt })).await?;
            let t = v
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::Failed("join answer has no token".into()))?;
            (t.to_owned(), true)
        }
        (None, None) => {
            return Err(CliError::Failed(
                "remit exec needs --join-token (or REMIT_JOIN_TOKEN) or REMIT_INSTANCE_TOKEN".into(),
            ));
        }
    };
    let inst = anon.with_bearer(&instance_token);
    let result = run_task(g, &a, &target, &inst, signals).await;
    if joined {
        // This run created the instance identity; it dies with the run.
        if let Err(e) = anon.post_form("/oauth2/revoke", &[("token", &instance_token)]).await {
            let m = format!("could not revoke the instance identity: {e}");
            say(g, json!({"event": "warning", "message": m}), &format!("warning: {m}"));
        }
    }
    result
}

/// What `exec` itself says, on stderr (stdout is the command's): a JSON line per event under
/// `--json`, else `remit: <text>`.
fn say(g: &Global, event: serde_json::Value, text: &str) {
    if g.json {
        eprintln!("{event}");
    } else {
        eprintln!("remit: {text}");
    }
}

async fn run_task(
    g: &Global,
    a: &Args,
    target: &Target,
    inst: &Client,
    signals: child::Signals,
) -> Result<(), CliError> {
    let mut body = json!({
        "workflow": a.workflow, "intent": a.intent, "ttl_seconds": a.ttl,
        "sensitivity": a.sensitivity, "audience": a.audience, "grant": a.grant,
    });
    if a.parent {
        body["agent"] = json!(a.agent);
        a.narrow.add_to(&mut body);
    }
    let started = inst.post("/v1/tasks", &body).await?;
    let token = started["token"].as_str().unwrap_or_default().to_owned();
    // A child is watched and completed with its own token (its parent's token is the
    // supervisor's, not the child's instance).
    let own;
    let inst = if a.parent {
        own = inst.with_bearer(&token);
        &own
    } else {
        inst
    };
    let task_id = started["task"]["id"].as_str().unwrap_or_default().to_owned();
    let spiffe = started["spiffe_id"].as_str().unwrap_or_default().to_owned();
    let expires = started["expires_at"].as_str().unwrap_or("-");
    say(
        g,
        json!({"event": "task_started", "task": task_id, "spiffe_id": spiffe, "expires_at": expires}),
        &format!("task {task_id} started ({spiffe}), expires {expires}"),
    );

    let outcome = async {
        let dir = tempfile::Builder::new()
            .prefix("remit-task-")
            .tempdir()
            .map_err(|e| CliError::Failed(format!("cannot create token dir: {e}")))?;
        let token_path = dir.path().join("token");
        write_private(&token_path, &token)?;
        if target.switch.is_some() {
            for p in [dir.path(), token_path.as_path()] {
                std::os::unix::fs::chown(p, Some(target.run_as.uid), Some(target.run_as.gid))
                    .map_err(|e| CliError::Failed(format!("cannot hand the token file to the user: {e}")))?;
            }
        }
        let mut cmd = tokio::process::Command::new(&a.command[0]);
        cmd.args(&a.command[1..]).stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        // Database logins for the command's environment, made for this task only.
        if !a.db.is_empty() {
            let proxy = a.proxy_url.as_deref().ok_or_else(|| {
                CliError::Failed("--db needs the proxy's URL (--proxy-url or REMIT_PROXY_URL)".into())
            })?;
            let px = Client::new(proxy, None, None)?.with_bearer(&token);
            for tool in &a.db {
                let v = px.post(&format!("/credentials/{tool}"), &json!({"for_env": true})).await?;
                let (Some(var), Some(url)) = (v["env"].as_str(), v["url"].as_str()) else {
                    return Err(CliError::Failed(format!("the login for `{tool}` came without a URL")));
                };
                cmd.env(var, zeroize::Zeroizing::new(url.to_owned()).as_str());
                let lease = v["lease"].as_str().unwrap_or("-");
                say(
                    g,
                    json!({"event": "database_login", "tool": tool, "lease": lease, "env": var}),
                    &format!("{var}: a login on `{tool}` for this task (lease {lease})"),
                );
            }
        }
        // The only `REMIT_*` variables the command sees are the five set below.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("REMIT_")) {
                cmd.env_remove(&k);
            }
        }
        cmd.env("REMIT_TASK_TOKEN", &token)
            .env("REMIT_TASK_TOKEN_FILE", &token_path)
            .env("REMIT_TASK_ID", &task_id)
            .env("REMIT_SPIFFE_ID", &spiffe)
            .env("REMIT_URL", &g.url);
        if let Some((name, home)) = &target.switch {
            cmd.uid(target.run_as.uid).gid(target.run_as.gid).env("USER", name).env("LOGNAME", name).env("HOME", home);
        }
        // Without a terminal, the command leads a process group of its own, so a stop reaches
        // everything it started.
        let own_group = !std::io::stdin().is_terminal();
        if own_group {
            cmd.process_group(0);
        }
        let proc = cmd.spawn().map_err(|e| CliError::Failed(format!("cannot run `{}`: {e}", a.command[0])))?;
        let ended = child::supervise(
            child::Child::new(proc, own_group),
            signals,
            watch::task_ended(inst, &task_id),
            Duration::from_secs(a.grace),
        )
        .await;
        drop(dir);
        ended
    }
    .await;

    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The task started but the command did not run (a refused `--db`, a spawn error):
            // end the task now, so whatever was made for it (database logins) dies with it.
            if let Err(c) = inst.post(&format!("/v1/tasks/{task_id}/complete"), &json!({})).await {
                let m = format!("could not complete task {task_id}: {c}");
                say(g, json!({"event": "warning", "message": m}), &format!("warning: {m}"));
            }
            return Err(e);
        }
    };
    match outcome {
        child::Ended::TaskEnded(why) => {
            say(
                g,
                json!({"event": "task_ended", "task": task_id, "reason": why, "exit_code": EXIT_TASK_ENDED}),
                &format!("task {task_id} ended ({why}); the command was stopped"),
            );
            Err(CliError::Exit(EXIT_TASK_ENDED))
        }
        child::Ended::Exited(code) => {
            // Complete the task whatever happened to the child, so its credentials die with it.
            match inst.post(&format!("/v1/tasks/{task_id}/complete"), &json!({})).await {
                Ok(_) => say(
                    g,
                    json!({"event": "task_completed", "task": task_id, "exit_code": code}),
                    &format!("task {task_id} completed"),
                ),
                Err(e) => {
                    let m = format!("could not complete task {task_id}: {e}");
                    say(g, json!({"event": "warning", "message": m}), &format!("warning: {m}"));
                }
            }
            match code {
                0 => Ok(()),
                c => Err(CliError::Exit(c)),
            }
        }
    }
}

fn write_private(path: &std::path::Path, token: &str) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| CliError::Failed(format!("cannot write token file: {e}")))?;
    f.write_all(token.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write token file: {e}")))
}
