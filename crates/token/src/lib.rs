//! JWT-SVIDs for Remit.
//!
//! - [`keys`]: ES256 signing keys, their JWK form and RFC 7638 key ids, and encryption of
//!   private keys at rest under a key-encryption key (AES-256-GCM).
//! - [`jwt`]: minting and strict verification of compact JWS tokens (only `ES256`, only the
//!   `alg`/`kid`/`typ` header, known `kid`, `exp`/`iat`/`aud` checked).
//! - [`keyring`]: the set of keys a server signs and verifies with, JWKS and SPIFFE bundles.
//! - [`scram`]: SCRAM-SHA-256 verifiers for the PostgreSQL logins Remit makes.
//! - [`x509`]: the trust domain's X.509 CA and the X.509-SVIDs it signs.
//!
//! No IO and no clock: callers pass `now` and key material in.

pub mod dpop;
pub mod envelope;
pub mod jwt;
pub mod keyring;
pub mod keys;
pub mod leak;
pub mod oidc;
pub mod scram;
pub mod totp;
pub mod webhook;
pub mod x509;

pub use jwt::{Actor, Claims, Confirmation, RemitClaims, SvidKind, TokenError};
pub use keyring::Keyring;
pub use keys::{Kek, KeyError, SigningKey};

use base64::Engine;

/// Base64url without padding, as JOSE uses it.
pub fn b64e(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding (no padding, canonical trailing bits).
pub fn b64d(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// Fills a fresh array with cryptographically secure random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc's RNG only fails if the OS entropy source is gone; there is nothing safe to
    // continue with then.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator failed");
    b
}

/// The operating system's CSPRNG (through aws-lc) as Remit's injected [`Random`].
///
/// [`Random`]: remit_core::random::Random
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl remit_core::random::Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        // aws-lc's RNG only fails if the OS entropy source is gone; there is nothing safe to
        // continue with then.
        #[allow(clippy::expect_used)]
        aws_lc_rs::rand::fill(buf).expect("system random number generator failed");
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
