//! A sign-in's own state, kept by nobody: it travels sealed (AES-256-GCM under a key derived
//! from the KEK, bound to its purpose) in the `state` parameter through the provider and back,
//! so any replica can finish a sign-in another began. It holds the PKCE verifier and the
//! `nonce` (never readable in the URL), an expiry, and the SHA-256 of a random value set as a
//! cookie in the browser that began it: a sign-in finishes only in that browser (no login
//! CSRF).
//!
//! `remit login` (RFC 8252, loopback redirect) asks Remit to hand the session to a loopback
//! URL: the CLI sends an S256 PKCE challenge of its own; after the provider, Remit redirects
//! the browser to the CLI with a short-lived sealed code that only the holder of the CLI's
//! verifier can redeem for the session's tokens.

use remit_token::Kek;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// Purpose labels of the sealed values (a state is never accepted as a hand-off code).
const STATE_PURPOSE: &str = "remit-signin-state-v1";
const HANDOFF_PURPOSE: &str = "remit-login-handoff-v1";
/// How long a hand-off code may wait for the CLI to redeem it.
pub const HANDOFF_TTL_SECS: i64 = 120;
/// Longest sealed value accepted from a URL.
const MAX_SEALED_LEN: usize = 4096;

/// Where `remit login` waits, and what it proved it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliLogin {
    /// `http://127.0.0.1:PORT/…` or `http://[::1]:PORT/…`.
    pub redirect: String,
    /// S256 of the CLI's own PKCE verifier.
    pub challenge: String,
    /// The CLI's own `state`, echoed back to it.
    pub state: String,
}

/// What a sign-in carries through the provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowState {
    pub provider: String,
    pub nonce: String,
    /// The PKCE verifier Remit sends with the code.
    pub verifier: String,
    /// Hex SHA-256 of the browser's sign-in cookie.
    pub binding: String,
    /// Unix seconds.
    pub exp: i64,
    pub cli: Option<CliLogin>,
}

/// A session's tokens on their way to `remit login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub challenge: String,
    /// Unix seconds.
    pub exp: i64,
}

fn purpose_key(kek: &Kek, purpose: &str) -> Result<Kek, Error> {
    kek.derive(purpose).map_err(|e| Error::Internal(format!("deriving a sealing key: {e}")))
}

/// Seals `value` for `purpose`, as URL-safe text.
fn seal<T: Serialize>(kek: &Kek, purpose: &str, value: &T) -> Result<String, Error> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(remit_token::b64e(&purpose_key(kek, purpose)?.seal(purpose, &json)))
}

/// Opens a value sealed for `purpose`; anything else (another purpose, altered, garbage) is
/// the same refusal.
fn open<T: serde::de::DeserializeOwned>(kek: &Kek, purpose: &str, text: &str, what: &str) -> Result<T, Error> {
    let refused = || Error::Invalid(format!("the {what} is not valid"));
    if text.len() > MAX_SEALED_LEN {
        return Err(refused());
    }
    let sealed = remit_token::b64d(text).ok_or_else(refused)?;
    let json = purpose_key(kek, purpose)?.open(purpose, &sealed).map_err(|_| refused())?;
    serde_json::from_slice(&json).map_err(|_| refused())
}

pub fn seal_state(kek: &Kek, s: &FlowState) -> Result<String, Error> {
    seal(kek, STATE_PURPOSE, s)
}

/// Opens a returning `state` and checks it has not expired and belongs to this browser.
pub fn open_state(kek: &Kek, text: &str, cookie: Option<&str>, now_secs: i64) -> Result<FlowState, Error> {
    let s: FlowState = open(kek, STATE_PURPOSE, text, "sign-in state")?;
    if now_secs >= s.exp {
        return Err(Error::Invalid("the sign-in took too long; start again".into()));
    }
    let bound = cookie.is_some_and(|c| {
        let h = hex::encode(remit_token::sha256(c.as_bytes()));
        bool::from(h.as_bytes().ct_eq(s.binding.as_bytes()))
    });
    if !bound {
        return Err(Error::Invalid("this sign-in was not started in this browser".into()));
    }
    Ok(s)
}

pub fn seal_handoff(kek: &Kek, h: &Handoff) -> Result<String, Error> {
    seal(kek, HANDOFF_PURPOSE, h)
}

/// Redeems a hand-off code with the CLI's PKCE verifier (RFC 7636 S256, compared in
/// constant time).
pub fn redeem_handoff(kek: &Kek, code: &str, verifier: &str, now_secs: i64) -> Result<Handoff, Error> {
    let h: Handoff = open(kek, HANDOFF_PURPOSE, code, "login code")?;
    if now_secs >= h.exp {
        return Err(Error::Invalid("the login code has expired; run `remit login` again".into()));
    }
    if !valid_verifier(verifier) || !bool::from(s256(verifier).as_bytes().ct_eq(h.challenge.as_bytes())) {
        return Err(Error::Invalid("the code verifier does not match the login".into()));
    }
    Ok(h)
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn s256(verifier: &str) -> String {
    remit_token::b64e(&remit_token::sha256(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43-128 unreserved characters.
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c))
}

/// Accepts only a loopback IP literal with an explicit port over plain HTTP (RFC 8252 §7.3,
/// §8.3: not `localhost`), with no credentials or fragment, for `remit login`'s redirect.
pub fn check_loopback_redirect(raw: &str) -> Result<(), Error> {
    let bad = || Error::Invalid("`redirect_uri` must be http://127.0.0.1:PORT/… or http://[::1]:PORT/…".into());
    let u = url::Url::parse(raw).map_err(|_| bad())?;
    let loopback = matches!(u.host(), Some(url::Host::Ipv4(a)) if a.is_loopback())
        || matches!(u.host(), Some(url::Host::Ipv6(a)) if a.is_loopback());
    if u.scheme() != "http" || !loopback || u.port().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(bad());
    }
    if u.fragment().is_some() || raw.len() > 512 {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kek() -> Kek {
        Kek::from_bytes(&[7; 32]).unwrap()
    }

    fn state(exp: i64) -> FlowState {
        FlowState {
            provider: "corp".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            binding: hex::encode(remit_token::sha256(b"cookie")),
            exp,
            cli: None,
        }
    }

    #[test]
    fn a_state_opens_only_in_its_browser_before_it_expires() {
        let k = kek();
        let sealed = seal_state(&k, &state(100)).unwrap();
        assert_eq!(open_state(&k, &sealed, Some("cookie"), 99).unwrap().provider, "corp");
        assert!(open_state(&k, &sealed, Some("other"), 99).is_err());
        assert!(open_state(&k, &sealed, None, 99).is_err());
        assert!(open_state(&k, &sealed, Some("cookie"), 100).is_err());
        assert!(open_state(&Kek::from_bytes(&[8; 32]).unwrap(), &sealed, Some("cookie"), 1).is_err());
        let mut b = remit_token::b64d(&sealed).unwrap();
        b[20] ^= 1;
        assert!(open_state(&k, &remit_token::b64e(&b), Some("cookie"), 1).is_err());
    }

    #[test]
    fn a_handoff_needs_the_cli_verifier_and_is_not_a_state() {
        let k = kek();
        let verifier = "a".repeat(43);
        let h = Handoff {
            access_token: "at".into(),
            refresh_token: "rt".into(),
            expires_at: 1,
            challenge: s256(&verifier),
            exp: 50,
        };
        let code = seal_handoff(&k, &h).unwrap();
        assert_eq!(redeem_handoff(&k, &code, &verifier, 10).unwrap().access_token, "at");
        assert!(redeem_handoff(&k, &code, &"b".repeat(43), 10).is_err());
        assert!(redeem_handoff(&k, &code, &verifier, 50).is_err());
        assert!(open_state(&k, &code, Some("cookie"), 1).is_err(), "purposes never mix");
    }

    #[test]
    fn only_loopback_ip_redirects() {
        assert!(check_loopback_redirect("http://127.0.0.1:4567/callback").is_ok());
        assert!(check_loopback_redirect("http://[::1]:4567/cb").is_ok());
        for bad in [
            "http://localhost:4567/cb",
            "https://127.0.0.1:4567/cb",
            "http://127.0.0.1/cb",
            "http://evil.example:4567/cb",
            "http://u:p@127.0.0.1:4567/cb",
            "http://127.0.0.1:4567/cb#x",
            "javascript:alert(1)",
        ] {
            assert!(check_loopback_redirect(bad).is_err(), "{bad}");
        }
    }
}
