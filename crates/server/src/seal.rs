//! What Remit trusts from its database must prove itself under the key-encryption key.
//!
//! A party who can write the database but not read the KEK (a leaked writable backup, a
//! shared PostgreSQL with a compromised role) must not be able to make Remit trust a key or
//! an admin credential of theirs. So:
//! - every key row (JWT and audit, active and retired) carries a MAC under a key derived from
//!   the KEK over `kid ‖ purpose ‖ public ‖ created_at ‖ retire_after`, **and** its sealed
//!   private half must open under the KEK and match the public half;
//! - the installation record carries a MAC over `trust_domain ‖ issuer ‖ admin_hash ‖
//!   installed_at`.
//!
//! Anything that does not prove itself is refused loudly at load: the server does not start,
//! and a key reload (after a rotation elsewhere, or a token naming an unknown `kid`) keeps
//! the keys it had. Installations made before records were sealed are resealed once, by an
//! operator holding the KEK, with `remit reseal` ([`reseal`]).

use remit_core::audit::{AuditAction, AuditEvent};
use remit_store::{Installation, KeyPurpose, Reseal, Store, StoredKey};
use remit_token::{Kek, SigningKey};

/// MAC domain of a key row.
const KEY_DOMAIN: &str = "remit-key-v1";
/// MAC domain of the installation record.
const INSTALLATION_DOMAIN: &str = "remit-installation-v1";

/// Why a stored record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the installation record has no integrity seal (made by an earlier Remit, or written by someone \
         without the KEK); if this database is yours, run `remit reseal`"
    )]
    InstallationUnsealed,
    #[error(
        "the installation record (trust domain, issuer or admin credential) does not match its seal under \
         this KEK: it was changed by someone without the KEK, or the KEK is wrong"
    )]
    InstallationForged,
    #[error(
        "key `{0}` has no integrity seal (made by an earlier Remit, or inserted without the KEK); run `remit reseal` if it is yours"
    )]
    KeyUnsealed(String),
    #[error(
        "key `{0}` does not prove itself under this KEK ({1}): it was not made by this installation, or the KEK is wrong"
    )]
    KeyForged(String, &'static str),
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

/// The MAC'd fields of a key row; an X.509 CA's certificate chain is a sixth field (rows
/// without one keep the five-field MAC they were sealed with).
fn key_fields(k: &StoredKey) -> Vec<Vec<u8>> {
    let mut f = vec![
        k.kid.as_bytes().to_vec(),
        k.purpose.as_str().as_bytes().to_vec(),
        k.public.clone(),
        k.created_at.0.to_string().into_bytes(),
        k.retire_after.map(|t| t.0.to_string()).unwrap_or_default().into_bytes(),
    ];
    if let Some(cert) = &k.cert {
        f.push(cert.clone());
    }
    f
}

fn field_refs(f: &[Vec<u8>]) -> Vec<&[u8]> {
    f.iter().map(Vec::as_slice).collect()
}

/// The MAC a key row must carry.
pub fn key_mac(kek: &Kek, k: &StoredKey) -> String {
    let f = key_fields(k);
    hex(&kek.mac(KEY_DOMAIN, &field_refs(&f)))
}

/// Checks one key row: its MAC, and that its sealed private half opens under the KEK and is
/// the key its public half and kid name. Returns the opened key.
pub fn open_key(kek: &Kek, k: &StoredKey) -> Result<SigningKey, SealError> {
    let tag = k.mac.as_deref().ok_or_else(|| SealError::KeyUnsealed(k.kid.clone()))?;
    let f = key_fields(k);
    let tag_ok = unhex(tag).is_some_and(|t| kek.verify_mac(KEY_DOMAIN, &field_refs(&f), &t));
    if !tag_ok {
        return Err(SealError::KeyForged(k.kid.clone(), "its MAC does not match"));
    }
    let opened = SigningKey::unseal(kek, &k.kid, &k.sealed)
        .map_err(|_| SealError::KeyForged(k.kid.clone(), "its private half does not open"))?;
    if opened.verifying.public != k.public {
        return Err(SealError::KeyForged(k.kid.clone(), "its public half is not its private half's"));
    }
    Ok(opened)
}

fn installation_fields(i: &Installation, issuer: &str) -> [Vec<u8>; 4] {
    [
        i.trust_domain.as_bytes().to_vec(),
        issuer.as_bytes().to_vec(),
        i.admin_hash.as_bytes().to_vec(),
        i.installed_at.0.to_string().into_bytes(),
    ]
}

/// The MAC the installation record must carry, for `issuer`.
pub fn installation_mac(kek: &Kek, i: &Installation, issuer: &str) -> String {
    let f = installation_fields(i, issuer);
    hex(&kek.mac(INSTALLATION_DOMAIN, &f.each_ref().map(Vec::as_slice)))
}

/// Checks the installation record's seal; returns its issuer.
pub fn check_installation(kek: &Kek, i: &Installation) -> Result<String, SealError> {
    let (Some(issuer), Some(tag)) = (i.issuer.as_deref(), i.mac.as_deref()) else {
        return Err(SealError::InstallationUnsealed);
    };
    let f = installation_fields(i, issuer);
    let ok = unhex(tag).is_some_and(|t| kek.verify_mac(INSTALLATION_DOMAIN, &f.each_ref().map(Vec::as_slice), &t));
    if ok { Ok(issuer.to_owned()) } else { Err(SealError::InstallationForged) }
}

/// What `remit reseal` would vouch for, shown before it does.
#[derive(Debug, Clone)]
pub struct ResealPlan {
    pub trust_domain: String,
    pub issuer: String,
    /// The first 16 hex digits of the stored admin credential hash.
    pub admin_hash_prefix: String,
    pub keys: Vec<(String, KeyPurpose)>,
    pub seal: Reseal,
}

/// Plans a reseal of `store` under `kek` with `issuer`: every key's private half must open
/// under the KEK (a key that does not is never vouched for); the installation record and the
/// admin credential hash are vouched for as they are, which is why an operator confirms.
pub async fn plan_reseal(store: &dyn Store, kek: &Kek, issuer: &str) -> Result<ResealPlan, String> {
    let inst = store.keys().installation().await.map_err(|e| e.to_string())?.ok_or("remit is not initialized")?;
    let mut key_macs = Vec::new();
    let mut keys = Vec::new();
    for k in store.keys().list().await.map_err(|e| e.to_string())? {
        let opened = SigningKey::unseal(kek, &k.kid, &k.sealed)
            .map_err(|_| format!("key `{}` does not open under this KEK; refusing to vouch for it", k.kid))?;
        if opened.verifying.public != k.public {
            return Err(format!("key `{}`: its public half is not its private half's", k.kid));
        }
        key_macs.push((k.kid.clone(), key_mac(kek, &k)));
        keys.push((k.kid.clone(), k.purpose));
    }
    Ok(ResealPlan {
        trust_domain: inst.trust_domain.clone(),
        issuer: issuer.to_owned(),
        admin_hash_prefix: inst.admin_hash.chars().take(16).collect(),
        keys,
        seal: Reseal { issuer: issuer.to_owned(), installation_mac: installation_mac(kek, &inst, issuer), key_macs },
    })
}

/// Writes a planned reseal (audited).
pub async fn reseal(
    store: &dyn Store,
    plan: ResealPlan,
    actor: &str,
    now: remit_core::time::UnixMillis,
) -> Result<(), String> {
    let audit = AuditEvent::new(now, actor, AuditAction::InstallationReseal).detail([
        ("issuer", plan.issuer.clone().into()),
        ("keys", plan.keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>().into()),
    ]);
    store.keys().reseal(plan.seal, audit).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use remit_core::time::UnixMillis;

    fn kek() -> Kek {
        Kek::from_text(&Kek::generate_text()).unwrap()
    }

    fn stored(kek: &Kek) -> StoredKey {
        let sk = SigningKey::generate().unwrap();
        let mut k = StoredKey {
            kid: sk.kid().to_owned(),
            purpose: KeyPurpose::Jwt,
            sealed: sk.seal(kek).unwrap(),
            public: sk.verifying.public.clone(),
            created_at: UnixMillis(5),
            retire_after: None,
            mac: None,
            cert: None,
        };
        k.mac = Some(key_mac(kek, &k));
        k
    }

    #[test]
    fn a_key_proves_itself_only_under_its_kek() {
        let kek = kek();
        let k = stored(&kek);
        assert!(open_key(&kek, &k).is_ok());
        assert!(matches!(open_key(&self::kek(), &k), Err(SealError::KeyForged(..))));
        let mut unsealed = k.clone();
        unsealed.mac = None;
        assert!(matches!(open_key(&kek, &unsealed), Err(SealError::KeyUnsealed(_))));
        // Metadata changed after sealing: purpose or retirement.
        let mut moved = k.clone();
        moved.purpose = KeyPurpose::Audit;
        assert!(matches!(open_key(&kek, &moved), Err(SealError::KeyForged(..))));
        let mut extended = k.clone();
        extended.retire_after = Some(UnixMillis(i64::MAX));
        assert!(matches!(open_key(&kek, &extended), Err(SealError::KeyForged(..))));
        // Someone else's key with a MAC copied from ours.
        let theirs = SigningKey::generate().unwrap();
        let mut swapped = k.clone();
        swapped.public = theirs.verifying.public.clone();
        assert!(open_key(&kek, &swapped).is_err());
    }

    #[test]
    fn the_installation_record_is_sealed() {
        let kek = kek();
        let mut i = Installation {
            trust_domain: "remit.local".into(),
            issuer: Some("https://remit.example".into()),
            admin_hash: "ab".repeat(32),
            installed_at: UnixMillis(7),
            mac: None,
        };
        assert_eq!(check_installation(&kek, &i), Err(SealError::InstallationUnsealed));
        i.mac = Some(installation_mac(&kek, &i, "https://remit.example"));
        assert_eq!(check_installation(&kek, &i).unwrap(), "https://remit.example");
        let mut replaced = i.clone();
        replaced.admin_hash = "cd".repeat(32);
        assert_eq!(check_installation(&kek, &replaced), Err(SealError::InstallationForged));
        let mut moved = i.clone();
        moved.issuer = Some("https://evil.example".into());
        assert_eq!(check_installation(&kek, &moved), Err(SealError::InstallationForged));
        assert_eq!(check_installation(&self::kek(), &i), Err(SealError::InstallationForged));
    }
}
