//! The keys one server signs and verifies with, and their published forms.
//!
//! Exactly one key signs. Keys retired by a rotation stay in the ring (and in the JWKS)
//! until every token they signed has expired, so rotation never breaks a live token.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::keys::{SigningKey, VerifyingKey};

#[derive(Debug)]
pub struct Keyring {
    signer: Arc<SigningKey>,
    retired: HashMap<String, Arc<VerifyingKey>>,
}

impl Keyring {
    /// `retired` are the public keys still accepted for verification besides the signer.
    pub fn new(signer: Arc<SigningKey>, retired: Vec<VerifyingKey>) -> Self {
        let retired = retired.into_iter().map(|k| (k.kid.clone(), Arc::new(k))).collect();
        Keyring { signer, retired }
    }
    pub fn signer(&self) -> &SigningKey {
        &self.signer
    }
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        if self.signer.kid() == kid { Some(&self.signer.verifying) } else { self.retired.get(kid).map(|k| &**k) }
    }
    fn all(&self) -> impl Iterator<Item = &VerifyingKey> {
        std::iter::once(&self.signer.verifying).chain(self.retired.values().map(|k| &**k))
    }
    /// The RFC 7517 JWK Set (for OIDC-style verifiers).
    pub fn jwks(&self) -> Value {
        let keys: Vec<_> = self.all().map(|k| k.jwk("sig")).collect();
        json!({ "keys": keys })
    }
    /// The SPIFFE trust bundle: JWKs with `use: jwt-svid`, a sequence number and a refresh hint.
    pub fn spiffe_bundle(&self, sequence: u64, refresh_hint_secs: u64) -> Value {
        let keys: Vec<_> = self.all().map(|k| k.jwk("jwt-svid")).collect();
        json!({ "keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": refresh_hint_secs })
    }
}
