//! The trust domain's X.509 CA: created on first start (an installation made before Remit
//! issued X.509-SVIDs gets one then), loaded with the other keys (its row MAC'd under the KEK
//! together with its certificate chain), rotated with overlap, and used to issue
//! X.509-SVIDs and to publish the X.509 bundle.

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_store::{KeyPurpose, StoreError, StoredKey};
use remit_token::SigningKey;
use remit_token::keys::VerifyingKey;
use remit_token::x509::{self, Ca, Leaf};

use super::Caller;
use crate::app::App;
use crate::error::Error;

/// The CA in use and what the X.509 bundle publishes.
pub struct X509Authority {
    /// Signs new leaves.
    pub key: SigningKey,
    /// What a leaf's chain carries after the leaf: the active CA's certificate.
    pub chain: Vec<Vec<u8>>,
    /// The trust anchors of every published CA (active and retiring): the X.509 bundle.
    pub roots: Vec<Vec<u8>>,
    /// The published CAs' public keys with their certificate (the bundle endpoint's `x5c`).
    pub published: Vec<(VerifyingKey, Vec<u8>)>,
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X509Authority({}, {} published)", self.key.kid(), self.published.len())
    }
}

/// A CA key row's certificate: one self-signed certificate, its own trust anchor. (An
/// intermediate under an operator's upstream CA is not built yet; such a row is refused.)
fn ca_cert(k: &StoredKey) -> Result<Vec<u8>, String> {
    let der = k.cert.as_deref().ok_or_else(|| format!("X.509 CA key `{}` has no certificate", k.kid))?;
    let certs = x509::split_concatenated(der).map_err(|e| format!("X.509 CA key `{}`: {e}", k.kid))?;
    match <[Vec<u8>; 1]>::try_from(certs) {
        Ok([cert]) => Ok(cert),
        Err(_) => Err(format!("X.509 CA key `{}` must hold exactly one certificate", k.kid)),
    }
}

/// Builds the authority from the opened X.509 CA keys (`None` when there is no active one).
pub(crate) fn build_authority(
    keys: &[StoredKey],
    mut opened: impl FnMut(&StoredKey) -> Result<SigningKey, String>,
) -> Result<Option<X509Authority>, String> {
    let cas: Vec<&StoredKey> = keys.iter().filter(|k| k.purpose == KeyPurpose::X509).collect();
    let Some(active) = cas.iter().filter(|k| k.retire_after.is_none()).max_by_key(|k| k.created_at) else {
        return Ok(None);
    };
    let chain = vec![ca_cert(active)?];
    let mut roots = Vec::new();
    let mut published = Vec::new();
    for k in &cas {
        let cert = ca_cert(k)?;
        let vk = VerifyingKey::from_public(&k.public).map_err(|e| format!("key `{}`: {e}", k.kid))?;
        roots.push(cert.clone());
        published.push((vk, cert));
    }
    Ok(Some(X509Authority { key: opened(active)?, chain, roots, published }))
}

/// A new self-signed CA for `td`, sealed and MAC'd for storage (init and rotation).
pub fn new_ca_key(
    kek: &remit_token::Kek,
    td: &remit_core::ids::TrustDomain,
    now: remit_core::time::UnixMillis,
    ttl_secs: u64,
    serial: [u8; 16],
) -> Result<StoredKey, String> {
    let k = SigningKey::generate().map_err(|e| e.to_string())?;
    let cert = x509::self_signed_ca(&k, &format!("spiffe://{td}"), now, ttl_secs, serial).map_err(|e| e.to_string())?;
    let mut stored = StoredKey {
        kid: k.kid().to_owned(),
        purpose: KeyPurpose::X509,
        sealed: k.seal(kek).map_err(|e| e.to_string())?,
        public: k.verifying.public.clone(),
        created_at: now,
        retire_after: None,
        mac: None,
        cert: Some(cert),
    };
    stored.mac = Some(crate::seal::key_mac(kek, &stored));
    Ok(stored)
}

impl App {
    /// The X.509 CA in use.
    pub fn x509_authority(&self) -> Result<Arc<X509Authority>, Error> {
        let g = self.x509.read().map_err(|_| Error::Internal("x509 lock poisoned".into()))?;
        g.clone().ok_or_else(|| Error::Unavailable("this installation has no X.509 CA yet".into()))
    }

    /// Creates the X.509 CA if the store has none (first start of a new installation, or of
    /// one made before X.509-SVIDs). Another replica doing the same first is fine.
    pub async fn ensure_x509_ca(&self) -> Result<(), Error> {
        if self.x509.read().map(|g| g.is_some()).unwrap_or(false) {
            return Ok(());
        }
        let now = self.clock.now();
        let key = self.new_ca_key(now)?;
        let audit = AuditEvent::new(now, "remit", AuditAction::KeyRotate)
            .reason("created the trust domain's X.509 CA")
            .detail([("new_kid", key.kid.clone().into()), ("purpose", "x509".into())]);
        match self.store.keys().add(key, audit).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.reload_keys().await
    }

    fn new_ca_key(&self, now: remit_core::time::UnixMillis) -> Result<StoredKey, Error> {
        let ttl = self.cfg.workload.ca_ttl.as_secs();
        new_ca_key(self.kek(), &self.trust_domain, now, ttl, self.random.bytes16()).map_err(Error::Internal)
    }

    /// Rotates the X.509 CA: a new self-signed CA signs from now on; the old one stays in the
    /// bundle until every leaf it signed has expired.
    pub async fn rotate_x509_ca(&self, caller: &Caller) -> Result<(String, u64), Error> {
        self.allow(
            caller,
            remit_policy::admin::AdminAction::KeysRotate,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        self.rotate_ca_as(&caller.actor(), None).await
    }

    /// Rotates the CA by itself once two thirds of its certificate's life have passed (so it
    /// never expires under running workloads); another replica doing it first is fine.
    /// Returns whether this call rotated it.
    pub async fn rotate_x509_ca_if_due(&self) -> Result<bool, Error> {
        let ca = self.x509_authority()?;
        let Some(cert) = ca.chain.first() else { return Ok(false) };
        let (from, until) = x509::validity(cert).map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.clock.now();
        if now.0 < from.0 + (until.0 - from.0) * 2 / 3 {
            return Ok(false);
        }
        match self.rotate_ca_as("remit", Some("two thirds of the CA certificate's life passed")).await {
            Ok(_) => Ok(true),
            Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rotate_ca_as(&self, actor: &str, reason: Option<&str>) -> Result<(String, u64), Error> {
        let now = self.clock.now();
        let key = self.new_ca_key(now)?;
        let kid = key.kid.clone();
        let old = self.x509_authority()?.key.kid().to_owned();
        let retire_after = now.plus_secs((self.cfg.workload.x509_svid_ttl + self.cfg.limits.clock_skew).as_secs());
        let old_row = self.retiring(&old, KeyPurpose::X509, retire_after).await?;
        let mut audit = AuditEvent::new(now, actor, AuditAction::KeyRotate).detail([
            ("new_kid", kid.clone().into()),
            ("old_kid", old.into()),
            ("purpose", "x509".into()),
        ]);
        if let Some(r) = reason {
            audit = audit.reason(r);
        }
        let seq = self.store.keys().rotate(key, old_row, audit).await?;
        self.reload_keys().await?;
        Ok((kid, seq))
    }

    /// Issues an X.509-SVID for `spiffe_id`, valid for the configured TTL but never past
    /// `not_after` (the instance's end) nor its CA's.
    pub fn issue_x509_svid(&self, spiffe_id: &str, not_after: remit_core::time::UnixMillis) -> Result<Leaf, Error> {
        let ca = self.x509_authority()?;
        let now = self.clock.now();
        let ttl = (self.cfg.workload.x509_svid_ttl.as_secs() as i64).min((not_after.0 - now.0) / 1000).max(1);
        let leaf =
            x509::issue_leaf(&Ca { key: &ca.key, chain: &ca.chain }, spiffe_id, now, ttl as u64, self.random.bytes16())
                .map_err(|e| Error::Internal(e.to_string()))?;
        self.metrics.tokens_issued.get_or_create(&crate::metrics::Metrics::label("x509-svid")).inc();
        Ok(leaf)
    }
}
