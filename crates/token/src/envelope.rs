//! Envelope encryption of upstream secrets (API keys, client secrets, passwords a tool needs).
//!
//! Each value is sealed with AES-256-GCM under a data key of its own, drawn at random for that
//! value; the data key is wrapped by a key-encryption key behind [`KeyWrapper`], so a cloud
//! KMS or an external Vault/OpenBao transit key can take the place of the local one. What is
//! stored is the wrapped data key, the wrapper's id and the ciphertext — never the value, never
//! the data key in clear. The associated data binds a ciphertext to its record (tool, name,
//! version): a sealed value moved to another record does not open.
//!
//! A value is identified without being revealed by its keyed [`fingerprint`] (HMAC-SHA256
//! under a key derived from the KEK, truncated): stable for one installation, useless to
//! anyone without the KEK for confirming a guess.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::keys::Kek;
use crate::random;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the data key cannot be unwrapped (wrong key-encryption key, or a record moved)")]
    Unwrap,
    #[error("the value cannot be opened (corrupt, or a record moved)")]
    Open,
    #[error("the value was sealed by key `{0}`, which this server does not have")]
    UnknownWrapper(String),
}

/// What wraps data keys: the local key-encryption key, or (later) a KMS or transit key.
pub trait KeyWrapper: Send + Sync {
    /// Names the wrapping key; stored beside each wrapped data key.
    fn id(&self) -> &str;
    fn wrap(&self, aad: &[u8], data_key: &[u8; 32]) -> Result<Vec<u8>, EnvelopeError>;
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, EnvelopeError>;
}

/// The local wrapper: a key derived from the KEK for this purpose only (so no other sealed
/// record of Remit's ever opens as a data key, nor the other way round).
pub struct KekWrapper {
    key: Kek,
}

impl std::fmt::Debug for KekWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KekWrapper(..)")
    }
}

/// The id of [`KekWrapper`]'s key.
pub const KEK_WRAPPER_ID: &str = "kek:secrets:v1";

impl KekWrapper {
    pub fn new(kek: &Kek) -> Result<Self, crate::keys::KeyError> {
        Ok(KekWrapper { key: kek.derive("remit secrets data-key wrap v1")? })
    }
}

fn aad_text(aad: &[u8]) -> String {
    hex::encode(aad)
}

impl KeyWrapper for KekWrapper {
    fn id(&self) -> &str {
        KEK_WRAPPER_ID
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8; 32]) -> Result<Vec<u8>, EnvelopeError> {
        Ok(self.key.seal(&aad_text(aad), data_key))
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, EnvelopeError> {
        let pt = Zeroizing::new(self.key.open(&aad_text(aad), wrapped).map_err(|_| EnvelopeError::Unwrap)?);
        let mut out = Zeroizing::new([0u8; 32]);
        if pt.len() != 32 {
            return Err(EnvelopeError::Unwrap);
        }
        out.copy_from_slice(&pt);
        Ok(out)
    }
}

/// A sealed value as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub wrapped_key: Vec<u8>,
    pub wrapped_by: String,
    /// nonce || ciphertext || tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(by {}, {} bytes)", self.wrapped_by, self.ciphertext.len())
    }
}

fn data_cipher(key: &[u8; 32]) -> Result<LessSafeKey, EnvelopeError> {
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| EnvelopeError::Open)?))
}

/// Seals `plaintext` under a fresh data key wrapped by `wrapper`; `aad` names the record.
pub fn seal(wrapper: &dyn KeyWrapper, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
    let data_key = Zeroizing::new(random::<32>());
    let nonce = random::<NONCE_LEN>();
    let mut buf = plaintext.to_vec();
    data_cipher(&data_key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| EnvelopeError::Open)?;
    let mut ciphertext = nonce.to_vec();
    ciphertext.extend_from_slice(&buf);
    Ok(Sealed { wrapped_key: wrapper.wrap(aad, &data_key)?, wrapped_by: wrapper.id().to_owned(), ciphertext })
}

/// Opens a sealed value (kept in zeroized memory: dropped, it is wiped).
pub fn open(wrapper: &dyn KeyWrapper, aad: &[u8], sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if sealed.wrapped_by != wrapper.id() {
        return Err(EnvelopeError::UnknownWrapper(sealed.wrapped_by.clone()));
    }
    let data_key = wrapper.unwrap(aad, &sealed.wrapped_key)?;
    if sealed.ciphertext.len() < NONCE_LEN + 16 {
        return Err(EnvelopeError::Open);
    }
    let (n, ct) = sealed.ciphertext.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| EnvelopeError::Open)?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let len =
        data_cipher(&data_key)?.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| EnvelopeError::Open)?.len();
    Ok(Zeroizing::new(buf[..len].to_vec()))
}

/// The fingerprint key: HMAC-SHA256 under a key derived from the KEK for this purpose.
pub fn fingerprint_key(kek: &Kek) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &kek.mac("remit secret fingerprint v1", &[]))
}

/// A value's keyed fingerprint: `fp_` and the first 12 bytes of its HMAC, hex.
pub fn fingerprint(key: &hmac::Key, value: &[u8]) -> String {
    format!("fp_{}", hex::encode(&hmac::sign(key, value).as_ref()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_record_and_its_key() {
        let kek = Kek::from_bytes(&[7; 32]).unwrap();
        let w = KekWrapper::new(&kek).unwrap();
        let s = seal(&w, b"tickets/api-key/1", b"sk_live_0123456789").unwrap();
        assert!(!s.ciphertext.windows(10).any(|x| x == b"sk_live_01"));
        assert_eq!(&**open(&w, b"tickets/api-key/1", &s).unwrap(), b"sk_live_0123456789");
        // Moved to another record, or opened under another KEK: refused.
        assert!(open(&w, b"tickets/api-key/2", &s).is_err());
        let other = KekWrapper::new(&Kek::from_bytes(&[8; 32]).unwrap()).unwrap();
        assert_eq!(open(&other, b"tickets/api-key/1", &s), Err(EnvelopeError::Unwrap));
        let mut torn = s.clone();
        let last = torn.ciphertext.len() - 1;
        torn.ciphertext[last] ^= 1;
        assert_eq!(open(&w, b"tickets/api-key/1", &torn), Err(EnvelopeError::Open));
        // Two seals of one value differ (fresh data key and nonce); the fingerprint does not.
        let again = seal(&w, b"tickets/api-key/1", b"sk_live_0123456789").unwrap();
        assert_ne!(again.ciphertext, s.ciphertext);
        let fk = fingerprint_key(&kek);
        assert_eq!(fingerprint(&fk, b"sk_live_0123456789"), fingerprint(&fk, b"sk_live_0123456789"));
        assert_ne!(
            fingerprint(&fk, b"sk_live_0123456789"),
            fingerprint(&fingerprint_key(&Kek::from_bytes(&[8; 32]).unwrap()), b"sk_live_0123456789")
        );
    }
}
