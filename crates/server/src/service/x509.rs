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

/// How long a new CA is published before it signs: one bundle refresh hint plus the bundle
/// endpoint's cache lifetime, so relying parties (federated partners, mTLS verifiers) trust it
/// before they meet an SVID it signed.
pub const CA_PREPARE: std::time::Duration =
    std::time::Duration::from_secs(crate::api::discovery::BUNDLE_REFRESH_HINT_SECS + 60);

/// One published CA.
pub struct CaKey {
    pub key: SigningKey,
    pub cert: Vec<u8>,
    /// When it starts signing (its row's `created_at`; later than its rotation while the new
    /// CA is only published).
    pub signs_from: remit_core::time::UnixMillis,
}

/// The CAs the X.509 bundle publishes, and which of them signs.
pub struct X509Authority {
    /// Newest first.
    cas: Vec<CaKey>,
    /// The trust anchors of every published CA (signing, retiring and prepared): the bundle.
    pub roots: Vec<Vec<u8>>,
    /// The published CAs' public keys with their certificate (the bundle endpoint's `x5c`).
    pub published: Vec<(VerifyingKey, Vec<u8>)>,
}

impl X509Authority {
    /// The CA that signs at `now`: the newest whose time has come.
    pub fn signer(&self, now: remit_core::time::UnixMillis) -> Option<&CaKey> {
        self.cas.iter().find(|c| c.signs_from <= now).or(self.cas.last())
    }
    /// The newest CA (a prepared one, during a rotation).
    pub fn newest(&self) -> Option<&CaKey> {
        self.cas.first()
    }
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X509Authority({} published)", self.published.len())
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

/// Builds the authority from the X.509 CA keys, each opened (`None` when there is none).
pub(crate) fn build_authority(
    keys: &[StoredKey],
    mut opened: impl FnMut(&StoredKey) -> Result<SigningKey, String>,
) -> Result<Option<X509Authority>, String> {
    let mut rows: Vec<&StoredKey> = keys.iter().filter(|k| k.purpose == KeyPurpose::X509).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    rows.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    let mut cas = Vec::new();
    let mut roots = Vec::new();
    let mut published = Vec::new();
    for k in rows {
        let cert = ca_cert(k)?;
        let vk = VerifyingKey::from_public(&k.public).map_err(|e| format!("key `{}`: {e}", k.kid))?;
        roots.push(cert.clone());
        published.push((vk, cert.clone()));
        cas.push(CaKey { key: opened(k)?, cert, signs_from: k.created_at });
    }
    Ok(Some(X509Authority { cas, roots, published }))
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

    /// Rotates the X.509 CA: a new self-signed CA is published at once and signs after
    /// [`CA_PREPARE`]; the old one signs until then and stays in the bundle until every leaf
    /// it signed has expired.
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
        let now = self.clock.now();
        let Some(newest) = ca.newest() else { return Ok(false) };
        if newest.signs_from > now {
            return Ok(false); // a rotation is under way
        }
        let (from, until) = x509::validity(&newest.cert).map_err(|e| Error::Internal(e.to_string()))?;
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
        let ca = self.x509_authority()?;
        let newest = ca.newest().ok_or_else(|| Error::Unavailable("no X.509 CA".into()))?;
        if newest.signs_from > now {
            return Err(Error::Conflict(
                "a CA rotation is under way (the new CA is published, not yet signing)".into(),
            ));
        }
        let old = newest.key.kid().to_owned();
        // Published now, signing only after CA_PREPARE; the old CA signs meanwhile and stays
        // published until the last leaf it signed has expired.
        let mut key = self.new_ca_key(now)?;
        let signs_from = now.plus_secs(CA_PREPARE.as_secs());
        key.created_at = signs_from;
        key.mac = Some(crate::seal::key_mac(self.kek(), &key));
        let kid = key.kid.clone();
        let lasts = CA_PREPARE + self.cfg.workload.x509_svid_ttl + self.cfg.limits.clock_skew;
        let old_row = self.retiring(&old, KeyPurpose::X509, now.plus_secs(lasts.as_secs())).await?;
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
        let signer = ca.signer(now).ok_or_else(|| Error::Unavailable("no X.509 CA".into()))?;
        let ttl = (self.cfg.workload.x509_svid_ttl.as_secs() as i64).min((not_after.0 - now.0) / 1000).max(1);
        let chain = [signer.cert.clone()];
        let leaf = x509::issue_leaf(
            &Ca { key: &signer.key, chain: &chain },
            spiffe_id,
            now,
            ttl as u64,
            self.random.bytes16(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.metrics.tokens_issued.get_or_create(&crate::metrics::Metrics::label("x509-svid")).inc();
        Ok(leaf)
    }
}
