//! The keys one server signs and verifies with, and their published forms.
//!
//! Exactly one key signs. Keys retired by a rotation stay in the ring (and in the JWKS)
//! until every token they signed has expired, so rotation never breaks a live token.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::keys::{Jwk, SigningKey, VerifyingKey, public_from_jwk};

/// Where a verifier finds the public key a token's `kid` names.
pub trait KeyLookup {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey>;
}

/// Public keys only, as fetched from a JWKS: what a relying party verifies with.
#[derive(Debug, Default)]
pub struct PublicKeys(HashMap<String, VerifyingKey>);

impl PublicKeys {
    /// Reads the EC P-256 keys of a JWK Set; other keys are skipped. The `kid` must be the
    /// key's RFC 7638 thumbprint, as Remit publishes it.
    pub fn from_jwks(jwks: &Value) -> Self {
        let mut map = HashMap::new();
        for k in jwks.get("keys").and_then(Value::as_array).into_iter().flatten() {
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else { continue };
            let Ok(vk) = public_from_jwk(&jwk).and_then(|p| VerifyingKey::from_public(&p)) else { continue };
            if vk.kid == jwk.kid {
                map.insert(vk.kid.clone(), vk);
            }
        }
        PublicKeys(map)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl KeyLookup for PublicKeys {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.0.get(kid)
    }
}

impl KeyLookup for Keyring {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        Keyring::verifying_key(self, kid)
    }
}

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
