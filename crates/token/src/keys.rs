//! ES256 signing keys and their encryption at rest.
//!
//! A [`SigningKey`] is generated fresh, exported as PKCS#8 only to be sealed with the
//! [`Kek`], and never leaves memory otherwise. Key ids are RFC 7638 JWK thumbprints, so the
//! same public key always has the same `kid`.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, ParsedPublicKey,
};
use serde::{Deserialize, Serialize};

use crate::{b64d, b64e, random, sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("stored key is malformed")]
    Malformed,
    #[error("stored key cannot be decrypted with this key-encryption key")]
    Decrypt,
    #[error("key-encryption key must be 32 bytes, base64 encoded")]
    BadKek,
}

/// The key-encryption key: 32 bytes that seal private keys at rest, and (through a key
/// derived from it) MAC the records Remit must be able to trust without trusting the
/// database: key rows and the installation record.
pub struct Kek {
    aead: LessSafeKey,
    /// HMAC-SHA256 key = HMAC-SHA256(kek, "remit kek mac v1"): never the KEK itself.
    mac: hmac::Key,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        if b.len() != 32 {
            return Err(KeyError::BadKek);
        }
        let k = UnboundKey::new(&AES_256_GCM, b).map_err(|_| KeyError::BadKek)?;
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b), MAC_KEY_LABEL);
        Ok(Kek { aead: LessSafeKey::new(k), mac: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()) })
    }
    /// Parses the base64 (standard or url-safe) text form kept in a file or env var.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        use base64::Engine;
        let s = s.trim();
        let b = base64::engine::general_purpose::STANDARD
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
            .map_err(|_| KeyError::BadKek)?;
        Self::from_bytes(&b)
    }
    /// A new random key in text form.
    pub fn generate_text() -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(random::<32>())
    }

    /// Seals `plaintext`, binding it to `aad` (the key id). Output: nonce || ciphertext || tag.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        // Sealing only fails for inputs over AES-GCM's ~64 GiB limit.
        #[allow(clippy::expect_used)]
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .expect("aes-gcm seal of a small key");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(KeyError::Malformed);
        }
        let (n, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| KeyError::Malformed)?;
        let mut buf = ct.to_vec();
        let pt = self.aead.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).map_err(|_| KeyError::Decrypt)?;
        Ok(pt.to_vec())
    }
}

impl Kek {
    /// A MAC over `fields` for the record kind `domain` (e.g. `remit-key-v1`). Each field is
    /// length-prefixed, so no two field lists encode alike.
    pub fn mac(&self, domain: &str, fields: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.mac);
        for f in std::iter::once(domain.as_bytes()).chain(fields.iter().copied()) {
            ctx.update(&(f.len() as u64).to_be_bytes());
            ctx.update(f);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A key of its own for one purpose (sealing sign-in states, TOTP secrets, …), derived
    /// from the KEK, so no two purposes ever open each other's values.
    pub fn derive(&self, purpose: &str) -> Result<Kek, KeyError> {
        Kek::from_bytes(&self.mac(purpose, &[]))
    }

    /// Checks a MAC made by [`Kek::mac`], in constant time.
    pub fn verify_mac(&self, domain: &str, fields: &[&[u8]], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        tag.len() == 32 && bool::from(self.mac(domain, fields).ct_eq(tag))
    }
}

/// What the MAC key is derived from the KEK with.
const MAC_KEY_LABEL: &[u8] = b"remit kek mac v1";

/// A public JWK for an EC P-256 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

/// A verifying key: the parsed public key and its id.
#[derive(Debug)]
pub struct VerifyingKey {
    pub kid: String,
    /// Uncompressed SEC1 point (65 bytes).
    pub public: Vec<u8>,
    parsed: ParsedPublicKey,
}

impl VerifyingKey {
    pub fn from_public(public: &[u8]) -> Result<Self, KeyError> {
        if public.len() != 65 || public[0] != 4 {
            return Err(KeyError::Malformed);
        }
        let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).map_err(|_| KeyError::Malformed)?;
        Ok(VerifyingKey { kid: thumbprint(public), public: public.to_vec(), parsed })
    }
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.parsed.verify_sig(msg, sig).is_ok()
    }
    pub fn jwk(&self, use_: &str) -> Jwk {
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: b64e(&self.public[1..33]),
            y: b64e(&self.public[33..65]),
            kid: self.kid.clone(),
            use_: Some(use_.into()),
            alg: (use_ == "sig").then(|| "ES256".into()),
        }
    }
}

/// RFC 7638 thumbprint of an uncompressed P-256 point, base64url.
pub fn thumbprint(public: &[u8]) -> String {
    let x = b64e(&public[1..33]);
    let y = b64e(&public[33..65]);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    b64e(&sha256(canonical.as_bytes()))
}

/// An ES256 private key with its verifying half.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pub verifying: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.verifying.kid)
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| KeyError::Generate)?;
        Self::from_pair(pair)
    }
    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, KeyError> {
        let verifying = VerifyingKey::from_public(pair.public_key().as_ref())?;
        Ok(SigningKey { pair, verifying })
    }
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|_| KeyError::Malformed)?;
        Self::from_pair(pair)
    }
    pub fn kid(&self) -> &str {
        &self.verifying.kid
    }
    /// Signs `msg`, returning the 64-byte `r || s` signature JOSE expects.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        // ECDSA signing fails only on internal RNG failure.
        #[allow(clippy::expect_used)]
        let sig = self.pair.sign(&SystemRandom::new(), msg).expect("ecdsa signing");
        sig.as_ref().to_vec()
    }
    /// The private key as PKCS#8 DER, for a signer that needs another signature encoding
    /// (X.509 wants ASN.1 ECDSA signatures). Never stored or sent unsealed.
    pub(crate) fn pkcs8(&self) -> Result<Vec<u8>, KeyError> {
        Ok(self.pair.to_pkcs8v1().map_err(|_| KeyError::Malformed)?.as_ref().to_vec())
    }
    /// The private key sealed under `kek` (bound to its kid), for storage.
    pub fn seal(&self, kek: &Kek) -> Result<Vec<u8>, KeyError> {
        let der = self.pair.to_pkcs8v1().map_err(|_| KeyError::Malformed)?;
        Ok(kek.seal(self.kid(), der.as_ref()))
    }
    /// Opens a key sealed by [`SigningKey::seal`] and checks it is the key `kid` names.
    pub fn unseal(kek: &Kek, kid: &str, sealed: &[u8]) -> Result<Self, KeyError> {
        let der = kek.open(kid, sealed)?;
        let k = Self::from_pkcs8(&der)?;
        if k.kid() != kid {
            return Err(KeyError::Malformed);
        }
        Ok(k)
    }
}

/// Decodes a JWK's `x`/`y` into an uncompressed point.
pub fn public_from_jwk(jwk: &Jwk) -> Result<Vec<u8>, KeyError> {
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(KeyError::Malformed);
    }
    let x = b64d(&jwk.x).ok_or(KeyError::Malformed)?;
    let y = b64d(&jwk.y).ok_or(KeyError::Malformed)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(KeyError::Malformed);
    }
    let mut p = vec![4u8];
    p.extend_from_slice(&x);
    p.extend_from_slice(&y);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let kek = Kek::from_text(&Kek::generate_text()).unwrap();
        let k = SigningKey::generate().unwrap();
        let sealed = k.seal(&kek).unwrap();
        let back = SigningKey::unseal(&kek, k.kid(), &sealed).unwrap();
        assert_eq!(back.kid(), k.kid());
        assert_eq!(SigningKey::unseal(&kek, "other", &sealed).unwrap_err(), KeyError::Decrypt);
        let other = Kek::from_text(&Kek::generate_text()).unwrap();
        assert_eq!(SigningKey::unseal(&other, k.kid(), &sealed).unwrap_err(), KeyError::Decrypt);
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(SigningKey::unseal(&kek, k.kid(), &tampered).is_err());
    }

    #[test]
    fn macs_bind_every_field_and_the_kek() {
        let kek = Kek::from_text(&Kek::generate_text()).unwrap();
        let tag = kek.mac("remit-key-v1", &[b"kid", b"jwt"]);
        assert!(kek.verify_mac("remit-key-v1", &[b"kid", b"jwt"], &tag));
        assert!(!kek.verify_mac("remit-key-v1", &[b"kid", b"audit"], &tag));
        assert!(!kek.verify_mac("remit-key-v1", &[b"kidj", b"wt"], &tag), "length prefixes keep fields apart");
        assert!(!kek.verify_mac("remit-install-v1", &[b"kid", b"jwt"], &tag));
        assert!(!kek.verify_mac("remit-key-v1", &[b"kid", b"jwt"], &tag[..31]));
        let other = Kek::from_text(&Kek::generate_text()).unwrap();
        assert!(!other.verify_mac("remit-key-v1", &[b"kid", b"jwt"], &tag));
    }

    #[test]
    fn kek_text_must_be_32_bytes() {
        assert_eq!(Kek::from_text("c2hvcnQ=").unwrap_err(), KeyError::BadKek);
    }
}
