//! RFC 9449 DPoP where Remit is the authorization server (binding what it issues to the
//! caller's key) and the resource server (refusing a bound token without a fresh proof from
//! that key).
//!
//! A proof is verified by `remit_token::dpop` for this request (`htm`, `htu` = the issuer
//! plus the path), within `[limits] clock_skew` of now, then remembered by its key and `jti`
//! in the store (`ToolStore::use_proof`, shared by every replica) so it is accepted once. Each
//! presentation of a bound token is recorded (token `jti`, key thumbprint, audience); the same
//! token presented with another key is refused and written to the audit log as a security
//! event (`security.token_misuse`).

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_store::TokenPresentation;
use remit_token::dpop::{self, DpopError, Expect, Proof};

use crate::app::App;
use crate::error::Error;

/// A proof lives in the replay cache this long past its window.
const REPLAY_MARGIN_SECS: u64 = 60;

/// The bound token a proof accompanies, and where it was presented.
pub struct Bound<'a> {
    pub jti: &'a str,
    pub jkt: &'a str,
    /// Where the token was presented (`remit` for Remit's API, `token-endpoint`, `proxy`).
    pub audience: &'a str,
    /// Who the token names, for the records.
    pub subject: &'a str,
}

impl App {
    /// Verifies the `DPoP` header value `proof` for `method path` (with `access_token`'s hash
    /// when one is presented) and spends it: a replayed proof is refused.
    pub async fn dpop_proof(
        &self,
        proof: &str,
        method: &str,
        path: &str,
        access_token: Option<&str>,
    ) -> Result<Proof, DpopError> {
        let url = format!("{}{path}", self.issuer.trim_end_matches('/'));
        self.dpop_proof_at(proof, method, &url, access_token).await
    }

    /// [`App::dpop_proof`] for a request to `url` (scheme, host and path: the proxy's own).
    pub async fn dpop_proof_at(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<Proof, DpopError> {
        let window = i64::try_from(self.cfg.limits.clock_skew.as_secs()).unwrap_or(30).max(5);
        let now = self.clock.now();
        let p = dpop::verify(proof, Expect { method, url, now: now.secs(), window, access_token })?;
        let key = hex::encode(remit_token::sha256(format!("{}.{}", p.jkt, p.jti).as_bytes()));
        let until = now.plus_secs(u64::try_from(window).unwrap_or(30) * 2 + REPLAY_MARGIN_SECS);
        match self.store.tools().use_proof(&key, now, until).await {
            Ok(true) => Ok(p),
            Ok(false) => Err(DpopError::Replay),
            // Fail closed: a proof that cannot be remembered is not accepted.
            Err(e) => {
                tracing::warn!(error = %e, "DPoP replay cache unavailable");
                Err(DpopError::Replay)
            }
        }
    }

    /// Checks that `proof` is from the key `b` is bound to; records the presentation, and a
    /// security event when the key is another one.
    pub async fn check_binding(&self, b: &Bound<'_>, proof: &Proof) -> Result<(), Error> {
        let now = self.clock.now();
        if proof.jkt != b.jkt {
            let e = AuditEvent::new(now, b.subject.to_owned(), AuditAction::TokenMisuse)
                .outcome(Outcome::Denied)
                .reason("a sender-constrained token was presented with another key")
                .detail([
                    ("jti", b.jti.into()),
                    ("bound_jkt", b.jkt.into()),
                    ("presented_jkt", proof.jkt.clone().into()),
                    ("audience", b.audience.into()),
                ]);
            self.store.audit().append(vec![e]).await?;
            tracing::warn!(jti = b.jti, audience = b.audience, "bound token presented with another DPoP key");
            return Err(Error::Unauthenticated(DpopError::WrongKey.to_string()));
        }
        let p = TokenPresentation {
            jti: b.jti.to_owned(),
            jkt: proof.jkt.clone(),
            audience: b.audience.to_owned(),
            at: now,
        };
        let e = AuditEvent::new(now, b.subject.to_owned(), AuditAction::TokenPresent).detail([
            ("jti", b.jti.into()),
            ("jkt", proof.jkt.clone().into()),
            ("audience", b.audience.into()),
        ]);
        self.store.tools().record_presentation(p, e).await?;
        Ok(())
    }
}
