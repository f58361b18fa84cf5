//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677) as PostgreSQL stores them:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (standard base64).
//!
//! Giving PostgreSQL the verifier instead of the password (`CREATE ROLE … PASSWORD
//! 'SCRAM-SHA-256$…'`) keeps the password itself out of the database server, its statement
//! logs and `pg_stat_statements`; clients still log in with the password. The salt is the
//! caller's (injected randomness).

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;

/// `(StoredKey, ServerKey)` for `password`.
fn keys(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> ([u8; 32], [u8; 32]) {
    let mut salted = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let server_key = hmac::sign(&key, b"Server Key");
    let mut stored = [0u8; 32];
    stored.copy_from_slice(digest::digest(&digest::SHA256, client_key.as_ref()).as_ref());
    let mut server = [0u8; 32];
    server.copy_from_slice(server_key.as_ref());
    (stored, server)
}

/// The verifier of `password` with `salt` (16 random bytes), in PostgreSQL's format. The
/// password must already be in SASLprep normal form (ASCII without control characters is).
pub fn verifier(password: &str, salt: &[u8; 16]) -> String {
    let n = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    let (stored, server) = keys(password.as_bytes(), salt, n);
    let b = base64::engine::general_purpose::STANDARD;
    format!("SCRAM-SHA-256${ITERATIONS}:{}${}:{}", b.encode(salt), b.encode(stored), b.encode(server))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 7677 §3: the server's signature over the example exchange, made with the
    /// ServerKey derived here, matches the RFC's `v=`; and the client's proof XOR-ed with
    /// its signature (made with the StoredKey) hashes back to the StoredKey.
    #[test]
    fn rfc7677_example() {
        let b = base64::engine::general_purpose::STANDARD;
        let salt = b.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (stored, server) = keys(b"pencil", &salt, NonZeroU32::new(4096).unwrap());
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth =
            format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}");
        let v = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &server), auth.as_bytes());
        assert_eq!(b.encode(v.as_ref()), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &stored), auth.as_bytes());
        let proof = b.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        let client_key: Vec<u8> = proof.iter().zip(sig.as_ref()).map(|(p, s)| p ^ s).collect();
        assert_eq!(digest::digest(&digest::SHA256, &client_key).as_ref(), &stored);
    }

    #[test]
    fn format_is_postgres() {
        let v = verifier("secret", &[7; 16]);
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        assert_eq!(head, format!("4096:{}", base64::engine::general_purpose::STANDARD.encode([7u8; 16])));
        assert_eq!(keys.split(':').count(), 2);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
    }
}
