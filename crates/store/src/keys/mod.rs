//! Keys and the installation record: the one-time install, the signing keys (sealed under
//! the KEK, rotated with overlap) and the bundle sequence the JWKS and SPIFFE bundle carry.
//!
//! Every write here announces [`Change::Keys`]: replicas reload their keyring.

#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::time::UnixMillis;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use crate::Change;
use crate::Result;

/// Columns of a key row, in the order the row readers expect.
pub(crate) const KEY_COLS: &str = "kid, purpose, sealed, public, created_at, retire_after, mac, cert";

/// What a key is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Signs JWT-SVIDs.
    Jwt,
    /// Signs audit checkpoints.
    Audit,
    /// The trust domain's X.509 CA: signs X.509-SVIDs.
    X509,
    /// Signs the credentials of model-access tools, in that class's own trust domain.
    #[serde(rename = "jwt-model")]
    JwtModel,
    /// Signs the credentials of other tools, in that class's own trust domain.
    #[serde(rename = "jwt-tool")]
    JwtTool,
    /// Signs the credentials of data-access tools, in that class's own trust domain.
    #[serde(rename = "jwt-data")]
    JwtData,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Jwt => "jwt",
            KeyPurpose::Audit => "audit",
            KeyPurpose::X509 => "x509",
            KeyPurpose::JwtModel => "jwt-model",
            KeyPurpose::JwtTool => "jwt-tool",
            KeyPurpose::JwtData => "jwt-data",
        }
    }
    /// The key signing credentials of tools of `class` in the class's own trust domain.
    pub fn class_jwt(class: remit_core::tool::ToolClass) -> Self {
        match class {
            remit_core::tool::ToolClass::Model => KeyPurpose::JwtModel,
            remit_core::tool::ToolClass::Tool => KeyPurpose::JwtTool,
            remit_core::tool::ToolClass::Data => KeyPurpose::JwtData,
        }
    }
    /// The tool class whose trust domain this key signs for, if it is such a key.
    pub fn tool_class(self) -> Option<remit_core::tool::ToolClass> {
        match self {
            KeyPurpose::JwtModel => Some(remit_core::tool::ToolClass::Model),
            KeyPurpose::JwtTool => Some(remit_core::tool::ToolClass::Tool),
            KeyPurpose::JwtData => Some(remit_core::tool::ToolClass::Data),
            _ => None,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jwt" => Some(KeyPurpose::Jwt),
            "audit" => Some(KeyPurpose::Audit),
            "x509" => Some(KeyPurpose::X509),
            "jwt-model" => Some(KeyPurpose::JwtModel),
            "jwt-tool" => Some(KeyPurpose::JwtTool),
            "jwt-data" => Some(KeyPurpose::JwtData),
            _ => None,
        }
    }
}

/// A signing key as stored: the private half sealed under the key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub purpose: KeyPurpose,
    /// AES-256-GCM(kek, pkcs8), bound to the kid.
    pub sealed: Vec<u8>,
    /// Uncompressed SEC1 public point.
    pub public: Vec<u8>,
    pub created_at: UnixMillis,
    /// `None` while it is the active signer; once rotated out, when it stops being published.
    pub retire_after: Option<UnixMillis>,
    /// Hex MAC under the KEK over the row (see `remit-server`'s key loading); `None` only in
    /// rows written before Remit sealed its records, which are refused until resealed.
    pub mac: Option<String>,
    /// An X.509 CA key's certificate chain (its own certificate first, then any upstream
    /// intermediates), concatenated DER; `None` for other purposes. Covered by the MAC.
    pub cert: Option<Vec<u8>>,
}

/// The active key of a purpose being rotated out: until when it stays trusted, and the MAC
/// over its row with that time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringKey {
    pub kid: String,
    pub retire_after: UnixMillis,
    pub mac: String,
}

/// Integrity seals for an installation written before Remit sealed its records (`remit
/// reseal`): the installation record's MAC, its issuer, and a MAC per key row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reseal {
    pub issuer: String,
    pub installation_mac: String,
    /// `(kid, mac)` for every key row.
    pub key_macs: Vec<(String, String)>,
}

/// The one-time installation record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub trust_domain: String,
    /// `iss` of every token this installation issues and accepts.
    pub issuer: Option<String>,
    /// SHA-256 (hex) of the admin credential.
    pub admin_hash: String,
    pub installed_at: UnixMillis,
    /// Hex MAC under the KEK over trust domain, issuer, admin hash and time; `None` only in
    /// installations made before Remit sealed its records, refused until resealed.
    pub mac: Option<String>,
}

/// The installation record and the keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The installation record, if `remit init` has run.
    async fn installation(&self) -> Result<Option<Installation>>;
    /// Records the installation and its first keys; `Conflict` if already installed.
    async fn install(&self, inst: Installation, keys: Vec<StoredKey>, audit: AuditEvent) -> Result<()>;
    /// Every key not yet past its `retire_after`, of every purpose.
    async fn list(&self) -> Result<Vec<StoredKey>>;
    /// Makes `new` the active key of its purpose; the previous active key (`old`, which must
    /// still be the active one, else `Conflict`) is kept for verification until its
    /// `retire_after`. Bumps the bundle sequence and returns it.
    async fn rotate(&self, new: StoredKey, old: RetiringKey, audit: AuditEvent) -> Result<u64>;
    /// Adds the first active key of a purpose an installation made by an earlier Remit lacks
    /// (its X.509 CA); `Conflict` if one is active already (another replica added it). Bumps
    /// the bundle sequence and returns it.
    async fn add(&self, new: StoredKey, audit: AuditEvent) -> Result<u64>;
    /// Writes integrity seals on an installation made before Remit sealed its records.
    async fn reseal(&self, seal: Reseal, audit: AuditEvent) -> Result<()>;
    /// Increments on every change to the published key set.
    async fn bundle_sequence(&self) -> Result<u64>;
}
