//! The trust domain's X.509 CA: created on first start (an installation made before Remit
//! issued X.509-SVIDs gets one then), loaded with the other keys (its row MAC'd under the KEK
//! together with its certificate chain), rotated with overlap, and used to issue
//! X.509-SVIDs and to publish the X.509 bundle.
//!
//! The CA is self-signed, or an intermediate signed by an operator's upstream CA
//! (`[workload.upstream_ca]`): then its row holds the chain up to the upstream root, leaves
//! carry the chain without the root, and the bundle holds the root. When the configured
//! upstream and the CA in use disagree (an upstream added, removed or replaced), the CA is
//! rotated by itself.

use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_store::{KeyPurpose, StoreError, StoredKey};
use remit_token::SigningKey;
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
    /// Its own certificate.
    pub cert: Vec<u8>,
    /// What a leaf it signs carries after itself: its certificate, then any upstream
    /// intermediates (never the root of an upstream chain).
    pub chain: Vec<Vec<u8>>,
    /// The trust anchor it chains to: itself when self-signed, else the upstream root.
    pub anchor: Vec<u8>,
    /// When it starts signing (its row's `created_at`; later than its rotation while the new
    /// CA is only published).
    pub signs_from: remit_core::time::UnixMillis,
}

/// The CAs the X.509 bundle publishes, and which of them signs.
pub struct X509Authority {
    /// Newest first.
    cas: Vec<CaKey>,
    /// The trust anchors of every published CA (signing, retiring and prepared), each once:
    /// the bundle.
    pub roots: Vec<Vec<u8>>,
}

impl X509Authority {
    /// The CA that signs at `now`: the newest whose time has come.
    pub fn signer(&self, now: remit_core::time::UnixMillis) -> Option<&CaKey> {
        self.cas.iter().find(|c| c.signs_from <= now).or(self.cas.last())
    }
    /// Every published CA's own certificate (signing, retiring and prepared): the trust
    /// anchors for client certificates on Remit's API. Not the upstream root: that would
    /// trust every other CA under the operator's PKI.
    pub fn ca_certificates(&self) -> Vec<Vec<u8>> {
        self.cas.iter().map(|c| c.cert.clone()).collect()
    }

    /// The self-signed CA whose certificate `root` is, if any.
    pub fn self_signed(&self, root: &[u8]) -> Option<&CaKey> {
        self.cas.iter().find(|c| c.cert == root && c.anchor == root)
    }
    /// The newest CA (a prepared one, during a rotation).
    pub fn newest(&self) -> Option<&CaKey> {
        self.cas.first()
    }
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X509Authority({} CAs, {} roots)", self.cas.len(), self.roots.len())
    }
}

/// A CA key row's certificates: the CA's own first, its trust anchor last (one certificate
/// when self-signed). Returns the chain leaves carry and the anchor.
fn ca_certs(k: &StoredKey) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    let der = k.cert.as_deref().ok_or_else(|| format!("X.509 CA key `{}` has no certificate", k.kid))?;
    let mut certs = x509::split_concatenated(der).map_err(|e| format!("X.509 CA key `{}`: {e}", k.kid))?;
    let anchor = match certs.len() {
        0 => return Err(format!("X.509 CA key `{}` holds no certificate", k.kid)),
        1 => certs[0].clone(),
        _ => certs.pop().unwrap_or_default(),
    };
    Ok((certs, anchor))
}

/// Loads and checks the configured upstream CA (`None` when there is none); relative paths
/// are under the data directory.
pub fn load_upstream(cfg: &crate::config::Config) -> Result<Option<x509::Upstream>, String> {
    let Some(up) = &cfg.workload.upstream_ca else { return Ok(None) };
    let under = |p: &std::path::PathBuf| if p.is_absolute() { p.clone() } else { cfg.data_dir.join(p) };
    let up = crate::config::UpstreamCaConfig { cert_file: under(&up.cert_file), key_file: under(&up.key_file) };
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("upstream CA file {}: {e}", p.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&up.key_file)
            .map_err(|e| format!("upstream CA key file {}: {e}", up.key_file.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("upstream CA key file {} is readable by others; chmod 600 it", up.key_file.display()));
        }
    }
    let key = String::from_utf8(read(&up.key_file)?).map_err(|_| "upstream CA key file is not PEM text".to_owned())?;
    x509::Upstream::from_pem(&read(&up.cert_file)?, &key).map(Some).map_err(|e| e.to_string())
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
    let mut roots: Vec<Vec<u8>> = Vec::new();
    for k in rows {
        let (chain, anchor) = ca_certs(k)?;
        let key = opened(k)?;
        let cert = chain[0].clone();
        if x509::public_key_of(&cert).map_err(|e| format!("X.509 CA key `{}`: {e}", k.kid))? != key.verifying.public {
            return Err(format!("X.509 CA key `{}`: its certificate is not its key's", k.kid));
        }
        if !roots.contains(&anchor) {
            roots.push(anchor.clone());
        }
        cas.push(CaKey { key, cert, chain, anchor, signs_from: k.created_at });
    }
    Ok(Some(X509Authority { cas, roots }))
}

/// A new CA for `td` (self-signed, or signed by `upstream`), sealed and MAC'd for storage
/// (init and rotation).
pub fn new_ca_key(
    kek: &remit_token::Kek,
    td: &remit_core::ids::TrustDomain,
    upstream: Option<&x509::Upstream>,
    now: remit_core::time::UnixMillis,
    ttl_secs: u64,
    serial: [u8; 16],
) -> Result<StoredKey, String> {
    let k = SigningKey::generate().map_err(|e| e.to_string())?;
    let td_id = format!("spiffe://{td}");
    let cert = match upstream {
        None => x509::self_signed_ca(&k, &td_id, now, ttl_secs, serial),
        Some(up) => x509::intermediate_ca(&k, &td_id, up, now, ttl_secs, serial).map(|c| c.concat()),
    }
    .map_err(|e| e.to_string())?;
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
        // Read again at each use: an operator renews the upstream's files in place.
        let upstream = load_upstream(&self.cfg).map_err(Error::Unavailable)?;
        new_ca_key(self.kek(), &self.trust_domain, upstream.as_ref(), now, ttl, self.random.bytes16())
            .map_err(Error::Internal)
    }

    /// Why the CA in use must be replaced although it is not old: it does not chain to the
    /// configured upstream's root (or chains to an upstream no longer configured).
    fn ca_disagrees_with_config(&self, newest: &CaKey) -> Result<Option<&'static str>, Error> {
        let upstream = load_upstream(&self.cfg).map_err(Error::Unavailable)?;
        // The CA's issuer: the next certificate of its chain, or its anchor when the upstream
        // CA is the root itself.
        let issuer = newest.chain.get(1).unwrap_or(&newest.anchor);
        Ok(match upstream {
            Some(up) if up.root() != newest.anchor.as_slice() || up.certificate() != issuer.as_slice() => {
                Some("the configured upstream CA changed")
            }
            None if newest.anchor != newest.cert => Some("the upstream CA was removed from the configuration"),
            _ => None,
        })
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
        let reason = match self.ca_disagrees_with_config(newest)? {
            Some(why) => why,
            None if now.0 < from.0 + (until.0 - from.0) * 2 / 3 => return Ok(false),
            None => "two thirds of the CA certificate's life passed",
        };
        match self.rotate_ca_as("remit", Some(reason)).await {
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
        // A CA capped by an upstream about to expire would barely sign (or not at all): keep
        // the one in use and say what to do.
        let shortest = CA_PREPARE + self.cfg.workload.x509_svid_ttl + self.cfg.limits.clock_skew;
        let cert = key.cert.as_deref().unwrap_or_default();
        let until = x509::split_concatenated(cert)
            .ok()
            .and_then(|c| c.first().and_then(|c| x509::not_after(c).ok()))
            .ok_or_else(|| Error::Internal("the new CA has no readable certificate".into()))?;
        if until.0 < now.plus_secs(shortest.as_secs()).0 {
            return Err(Error::Unavailable(
                "the upstream CA's certificate expires too soon to sign a new CA; renew it (the CA in use stays)"
                    .into(),
            ));
        }
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
        let leaf = x509::issue_leaf(
            &Ca { key: &signer.key, chain: &signer.chain },
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
