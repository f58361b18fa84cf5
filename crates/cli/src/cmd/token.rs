//! `remit token verify`: checks a token's signature against the server's published JWKS and
//! its `iss` against the announced issuer (as any relying party would), and asks the server
//! whether it is still active. `remit token exchange`: trades the task's token for a
//! credential for one tool (RFC 8693, at the server's token endpoint).

use std::io::Read;

use remit_token::jwt::{self, Validation};
use remit_token::keyring::PublicKeys;
use serde_json::json;

use crate::client::{Client, admin_token};
use crate::{CliError, Global, output};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Verify a token (`-` reads it from standard input). Exit 3 if invalid or inactive.
    Verify {
        /// The token (a JWT), or `-` to read it from standard input.
        token: String,
        /// Also require this audience.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Trade the task's token for a credential for one tool; prints the credential (with
    /// `--json`, the whole token response). Exit 7 if a human must approve a scope first
    /// (the approval ids are printed; retry with `--approval`).
    Exchange {
        /// The tool: its name or audience URI.
        #[arg(long)]
        tool: String,
        /// A scope wanted (repeatable; default: every scope the tool accepts).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// An approved request for one of the scopes (repeatable).
        #[arg(long = "approval")]
        approvals: Vec<String>,
        /// The task token to trade.
        #[arg(long, env = "REMIT_TASK_TOKEN", hide_env_values = true)]
        token: String,
    },
}

async fn exchange(
    g: &Global,
    tool: String,
    scopes: Vec<String>,
    approvals: Vec<String>,
    token: String,
) -> Result<(), CliError> {
    let anon = Client::new(&g.url, None, None)?;
    let scope = scopes.join(" ");
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", &token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", &tool),
    ];
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    for a in &approvals {
        form.push(("approval", a));
    }
    let (status, v) = anon.post_form_raw("/oauth2/token", &form).await?;
    if status.is_success() {
        if g.json {
            output::json(&v);
        } else {
            eprintln!(
                "{} credential for {tool}: scope `{}`, expires in {}s",
                output::s(&v, "token_type"),
                output::s(&v, "scope"),
                v["expires_in"]
            );
            println!("{}", output::s(&v, "access_token"));
        }
        return Ok(());
    }
    let ids: Vec<&str> =
        v["approval_ids"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str).collect();
    let msg = format!("{}: {}", output::s(&v, "error"), output::s(&v, "error_description"));
    if !ids.is_empty() {
        if g.json {
            output::json(&v);
        } else {
            eprintln!("{msg}");
            for id in ids {
                println!("{id}");
            }
        }
        return Err(CliError::Exit(7));
    }
    Err(match status.as_u16() {
        400 | 401 | 403 => CliError::Denied(msg),
        503 => CliError::Unavailable(msg),
        _ => CliError::Failed(format!("{msg} (HTTP {})", status.as_u16())),
    })
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let (token, audience) = match cmd {
        Cmd::Verify { token, audience } => (token, audience),
        Cmd::Exchange { tool, scopes, approvals, token } => return exchange(g, tool, scopes, approvals, token).await,
    };
    let token = if token == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| CliError::Failed(e.to_string()))?;
        s.trim().to_owned()
    } else {
        token
    };
    let anon = Client::new(&g.url, None, None)?;
    let jwks = anon.get("/.well-known/jwks.json").await?;
    let keys = PublicKeys::from_jwks(&jwks);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // As a relying party would: the issuer the server announces is the only `iss` accepted.
    let discovery = anon.get("/.well-known/openid-configuration").await?;
    let issuer = discovery
        .get("issuer")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| CliError::Failed("the server's discovery document names no issuer".into()))?
        .to_owned();
    let v = Validation {
        now: i64::try_from(now).unwrap_or(i64::MAX),
        leeway: 30,
        audience: audience.as_deref(),
        issuer: &issuer,
        kind: None,
    };
    let verified = jwt::verify(&keys, &token, v);
    let active = match (&verified, admin_token(g)) {
        (Ok(_), Some(admin)) => {
            let c = Client::new(&g.url, Some(admin), None)?;
            let r = c.post_form("/oauth2/introspect", &[("token", &token)]).await?;
            Some(r.get("active").and_then(serde_json::Value::as_bool).unwrap_or(false))
        }
        _ => None,
    };
    let out = match &verified {
        // The claims as signed (NumericDate `exp`/`iat`, RFC 7519), and the expiry as RFC 3339.
        Ok(c) => json!({"signature_valid": true, "active": active, "claims": c,
                        "expires_at": remit_core::time::UnixMillis(c.exp.saturating_mul(1000)).to_rfc3339()}),
        Err(e) => json!({"signature_valid": false, "active": false, "error": e.to_string()}),
    };
    if g.json {
        output::json(&out);
    } else {
        match &verified {
            Ok(c) => {
                println!("signature: valid (kid in published JWKS)");
                println!("subject:   {}", c.sub);
                println!("audience:  {}", c.aud.join(", "));
                println!("expires:   {}", remit_core::time::UnixMillis(c.exp.saturating_mul(1000)).to_rfc3339());
                match active {
                    Some(true) => println!("status:    active"),
                    Some(false) => println!("status:    INACTIVE (revoked, completed, expired or killed)"),
                    None => println!("status:    unknown (no admin credential to introspect with)"),
                }
            }
            Err(e) => println!("INVALID: {e}"),
        }
    }
    match (verified, active) {
        (Err(e), _) => Err(CliError::Denied(format!("token is invalid: {e}"))),
        (Ok(_), Some(false)) => Err(CliError::Denied("token is inactive".into())),
        _ => Ok(()),
    }
}
