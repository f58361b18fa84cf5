//! Upstream secrets: the credentials a registered tool's upstream needs (an API key, an OAuth
//! client secret, a database password), kept by Remit so an agent never holds them.
//!
//! A secret is named per tool and versioned. Its value is stored sealed (envelope
//! encryption, see `remit_token::envelope`) and is **write-only**: set, rotate (a new version,
//! the previous one still accepted until its overlap ends), delete and list metadata — no
//! interface reads a value back. A version is identified by its keyed fingerprint. Pure: no
//! crypto here, only the rules.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{SecretName, ToolName};
use crate::time::UnixMillis;

/// Longest secret value, bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Longest overlap a rotation may leave the previous version: a week.
pub const MAX_OVERLAP_SECS: u64 = 7 * 86_400;
/// Most secrets (names) one tool holds.
pub const MAX_SECRETS_PER_TOOL: u32 = 32;

/// One version of a secret, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub tool: ToolName,
    pub name: SecretName,
    /// 1, 2, …: assigned by the store, one more than the newest.
    pub version: u32,
    /// The keyed fingerprint of the value (`fp_…`): identifies it without revealing it.
    pub fingerprint: String,
    /// The value's length in bytes.
    pub length: u32,
    /// The data key, wrapped by the key-encryption key named in `wrapped_by`.
    pub wrapped_key: Vec<u8>,
    pub wrapped_by: String,
    /// The value sealed under the data key.
    pub ciphertext: Vec<u8>,
    pub created_at: UnixMillis,
    pub created_by: String,
    /// Set once a newer version replaced it: still accepted until then.
    pub retire_after: Option<UnixMillis>,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVersion({}/{}@{}, {})", self.tool, self.name, self.version, self.fingerprint)
    }
}

impl SecretVersion {
    /// `tool/name@version`: how findings and audit records name it.
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.tool, self.name, self.version)
    }
    /// Whether it may still be used at `now` (the newest, or one still in its overlap).
    pub fn usable(&self, now: UnixMillis) -> bool {
        self.retire_after.is_none_or(|t| now < t)
    }
}

/// What binds a sealed value to its record: moved to another tool, name or version, it does
/// not open.
pub fn aad(tool: &ToolName, name: &SecretName, version: u32) -> Vec<u8> {
    format!("remit-secret-v1\0{tool}\0{name}\0{version}").into_bytes()
}

/// Checks a value before it is sealed: 1 to [`MAX_SECRET_BYTES`] bytes.
pub fn check_value(v: &[u8]) -> Result<(), DomainError> {
    if v.is_empty() {
        return Err(DomainError::invalid("value", "a secret cannot be empty"));
    }
    if v.len() > MAX_SECRET_BYTES {
        return Err(DomainError::invalid("value", format!("at most {MAX_SECRET_BYTES} bytes")));
    }
    Ok(())
}

/// Checks a rotation's overlap: at most [`MAX_OVERLAP_SECS`].
pub fn check_overlap(secs: u64) -> Result<(), DomainError> {
    if secs > MAX_OVERLAP_SECS {
        return Err(DomainError::invalid("overlap", format!("at most {MAX_OVERLAP_SECS} seconds (a week)")));
    }
    Ok(())
}

/// The version to use at `now`: the newest usable one.
pub fn current(versions: &[SecretVersion], now: UnixMillis) -> Option<&SecretVersion> {
    versions.iter().filter(|v| v.usable(now)).max_by_key(|v| v.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u32, retire_after: Option<i64>) -> SecretVersion {
        SecretVersion {
            tool: ToolName::parse("tickets").unwrap(),
            name: SecretName::parse("api-key").unwrap(),
            version,
            fingerprint: format!("fp_{version}"),
            length: 20,
            wrapped_key: vec![],
            wrapped_by: "kek".into(),
            ciphertext: vec![],
            created_at: UnixMillis(0),
            created_by: "admin".into(),
            retire_after: retire_after.map(UnixMillis),
        }
    }

    #[test]
    fn the_newest_usable_version_is_current() {
        let vs = [v(1, Some(100)), v(2, None)];
        assert_eq!(current(&vs, UnixMillis(50)).unwrap().version, 2);
        assert!(vs[0].usable(UnixMillis(99)) && !vs[0].usable(UnixMillis(100)));
        assert!(current(&[v(1, Some(100))], UnixMillis(100)).is_none());
        assert_ne!(aad(&vs[0].tool, &vs[0].name, 1), aad(&vs[0].tool, &vs[0].name, 2));
        assert!(check_value(b"").is_err() && check_value(&[b'x'; MAX_SECRET_BYTES + 1]).is_err());
        assert!(check_value(b"k").is_ok() && check_overlap(MAX_OVERLAP_SECS + 1).is_err());
        assert_eq!(format!("{:?}", vs[1]), "SecretVersion(tickets/api-key@2, fp_2)");
    }
}
