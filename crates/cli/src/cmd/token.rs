//! `remit token verify`: checks a token's signature against the server's published JWKS and
//! its `iss` against the announced issuer (as any relying party would), and asks the server
//! whether it is still active.

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
}

pub async fn run(g: &Global, cmd: Cmd) -> Result<(), CliError> {
    let Cmd::Verify { token, audience } = cmd;
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
