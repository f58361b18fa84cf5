//! The running application: configuration, the store, keys, the clock and metrics, and
//! the operations every interface (HTTP now, others later) goes through.
//!
//! `App` owns no HTTP types. Handlers in [`crate::api`] parse a request, call one method
//! here and shape the answer. The operations themselves live in [`crate::service`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use remit_core::audit::{Checkpoint, checkpoint_message};
use remit_core::ids::TrustDomain;
use remit_core::random::Random;
use remit_core::rules::Limits;
use remit_core::time::Clock;
use remit_store::{KeyPurpose, Store, StoredKey};
use remit_token::keys::VerifyingKey;
use remit_token::{Kek, Keyring, SigningKey, b64e};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("remit is not initialized: run `remit init` (or `remit serve`, which initializes on first run)")]
    NotInitialized,
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] remit_store::StoreError),
    #[error("keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Io(String),
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub cfg: Config,
    pub trust_domain: TrustDomain,
    /// `iss` of every token this installation issues and the only one it accepts; stored at
    /// init and sealed with the installation record.
    pub issuer: String,
    pub limits: Limits,
    pub metrics: Metrics,
    /// SHA-256 of the admin credential; compared in constant time.
    admin_hash: [u8; 32],
    /// SHA-256 of the read-only metrics scrape credential, once `serve` set one.
    metrics_hash: std::sync::OnceLock<[u8; 32]>,
    /// SHA-256 of the SCIM credential (the identity provider's), once `serve` set one.
    scim_hash: std::sync::OnceLock<[u8; 32]>,
    kek: Kek,
    /// The JWT signing key and the retired keys still accepted; swapped whole on rotation.
    keyring: RwLock<Arc<Keyring>>,
    /// The trust domains of tool classes (`[trust_domains]`), fixed at start.
    pub class_domains: std::collections::BTreeMap<remit_core::tool::ToolClass, TrustDomain>,
    /// Each configured class's keys (signer and retired), swapped whole on rotation; a
    /// class is absent only until [`App::ensure_class_keys`] has run.
    pub(crate) class_keys: RwLock<Arc<crate::service::domains::ClassKeys>>,
    /// The leak guard's index of stored secrets (keyed window hashes, no values).
    pub(crate) leak_index: crate::service::secrets::LeakIndex,
    /// The dynamic credential engines (they pool admin connections per tool).
    pub(crate) engines: crate::engines::Engines,
    /// Wakes background lease revocation (a kill here marked leases revoking).
    pub(crate) lease_wake: tokio::sync::Notify,
    /// The trust domain's X.509 CA (`None` only until [`App::ensure_x509_ca`] has run).
    pub(crate) x509: RwLock<Option<Arc<crate::service::x509::X509Authority>>>,
    /// Signs audit checkpoints.
    audit_key: Arc<SigningKey>,
    /// Public audit keys by kid, for verifying checkpoints.
    audit_public: RwLock<Vec<VerifyingKey>>,
    /// When keys were last re-read because a token named an unknown kid (rate limit).
    last_key_reload: Mutex<Option<Instant>>,
    /// Highest seq already checkpointed by this process.
    last_checkpoint: Mutex<u64>,
    /// Claims of tokens whose signature already verified, by SHA-256 of the token. Saves
    /// an ECDSA verification when an instance presents the same token again; time and
    /// audience are still checked on every use, and liveness always comes from the store.
    pub(crate) verified: Mutex<std::collections::HashMap<[u8; 32], Arc<remit_token::Claims>>>,
    /// The decision service: it owns the engine handle and its caches.
    pub pdp: crate::pdp::Pdp,
    /// The OpenID providers humans sign in through (fetched lazily, on first use).
    pub providers: crate::signin::Providers,
    /// The platforms whose tokens attest workloads (`jwt-bearer`), fetched lazily like the
    /// sign-in providers.
    pub workload_issuers: crate::signin::Providers,
    /// Federated trust domains' bundles (`[[federation]]`), kept fresh by `bundles::follow`.
    pub bundles: Arc<crate::bundles::Bundles>,
    /// Remit's own authorization of its admin API.
    pub authz: crate::authz::AdminAuthz,
    /// Where ids, secrets and nonces come from (the OS CSPRNG; seeded in tests).
    pub random: Arc<dyn Random>,
    /// Flips to true when the server begins shutting down: long-lived streams end.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Governance's process state (its name as a job holder, rate limits).
    pub governance: crate::governance::State,
}

/// Entries in the verified-token cache before it is cleared.
pub(crate) const VERIFIED_CACHE_MAX: usize = 16_384;

impl App {
    /// Builds the app from an initialized store.
    pub async fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        kek: Kek,
    ) -> Result<App, StartError> {
        let inst = store.keys().installation().await?.ok_or(StartError::NotInitialized)?;
        let issuer = crate::seal::check_installation(&kek, &inst).map_err(|e| StartError::Keys(e.to_string()))?;
        if let Some(configured) = &cfg.issuer
            && *configured != issuer
        {
            return Err(StartError::Config(crate::config::ConfigError::Value {
                key: "issuer",
                message: format!(
                    "`{configured}` is not this installation's issuer `{issuer}` (set at init; every replica must use it)"
                ),
            }));
        }
        let trust_domain = TrustDomain::parse(&inst.trust_domain).map_err(|e| StartError::Keys(e.to_string()))?;
        let admin_hash =
            hex32(&inst.admin_hash).ok_or_else(|| StartError::Keys("stored admin hash is malformed".into()))?;
        let keys = store.keys().list().await?;
        let (keyring, audit_key, audit_public, x509, mut class_keys) = build_keys(&kek, &keys)?;
        let class_domains = crate::service::domains::configured(&cfg, &trust_domain).map_err(|message| {
            StartError::Config(crate::config::ConfigError::Value { key: "trust_domains", message })
        })?;
        // A class no longer configured keeps its key rows, but nothing signs or verifies with them.
        class_keys.retain(|c, _| class_domains.contains_key(c));
        let limits = cfg.core_limits();
        let backend = store.backend();
        let providers = crate::signin::Providers::from_config(&cfg.oidc, |k| std::env::var(k).ok())?;
        let workload_issuers = crate::service::federation::issuers(&cfg.workload_issuers)?;
        let bundles = Arc::new(crate::bundles::Bundles::from_config(&cfg.federation, &trust_domain)?);
        let org = match &cfg.admin_policies {
            Some(p) => crate::authz::read_org_policies(p).map_err(StartError::Io)?,
            None => vec![],
        };
        let authz = crate::authz::AdminAuthz::new(&org).map_err(StartError::Io)?;
        let last_cp = store.audit().latest_checkpoint().await?.map(|c| c.seq).unwrap_or(0);
        let metrics = Metrics::new();
        let pdp = crate::pdp::Pdp::new(
            store.clone(),
            clock.clone(),
            random.clone(),
            cfg.approvals.clone(),
            crate::pdp::PdpLimits {
                max_entity_id_bytes: cfg.limits.max_entity_id_bytes,
                built_cache_bytes: cfg.limits.entity_cache_bytes / 2,
            },
            metrics.decisions.clone(),
        )
        .map_err(StartError::Keys)?;
        Ok(App {
            store,
            clock,
            limits,
            trust_domain,
            issuer,
            metrics,
            admin_hash,
            metrics_hash: std::sync::OnceLock::new(),
            scim_hash: std::sync::OnceLock::new(),
            kek,
            keyring: RwLock::new(Arc::new(keyring)),
            x509: RwLock::new(x509.map(Arc::new)),
            class_keys: RwLock::new(Arc::new(class_keys)),
            class_domains,
            leak_index: Default::default(),
            engines: crate::engines::Engines::new(cfg.leases.connect_timeout, cfg.leases.claim),
            lease_wake: tokio::sync::Notify::new(),
            audit_key: Arc::new(audit_key),
            audit_public: RwLock::new(audit_public),
            last_key_reload: Mutex::new(None),
            last_checkpoint: Mutex::new(last_cp),
            verified: Mutex::new(std::collections::HashMap::new()),
            pdp,
            providers,
            workload_issuers,
            bundles,
            authz,
            governance: crate::governance::State::new(&*random, backend),
            random,
            stopping: tokio::sync::watch::Sender::new(false),
            cfg,
        })
    }

    /// Ends long-lived streams (task watches) so a shutdown can drain.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// Re-reads keys from the store (after a rotation here or by another replica). A key that
    /// does not prove itself under the KEK fails the whole reload, loudly, and the keys in use
    /// stay as they were.
    pub async fn reload_keys(&self) -> Result<(), Error> {
        let keys = self.store.keys().list().await?;
        let (ring, _, audit_public, x509, mut class_keys) = build_keys(&self.kek, &keys).map_err(|e| {
            tracing::error!(error = %e, "refusing the stored key set; keeping the keys in use");
            Error::Internal(e.to_string())
        })?;
        if let Ok(mut k) = self.keyring.write() {
            *k = Arc::new(ring);
        }
        if let Ok(mut a) = self.audit_public.write() {
            *a = audit_public;
        }
        if let Ok(mut x) = self.x509.write() {
            *x = x509.map(Arc::new);
        }
        class_keys.retain(|c, _| self.class_domains.contains_key(c));
        if let Ok(mut c) = self.class_keys.write() {
            *c = Arc::new(class_keys);
        }
        Ok(())
    }

    /// Reloads keys at most once a second; used when a token names a kid we do not know,
    /// which happens after another replica rotated keys.
    pub async fn maybe_reload_keys(&self) -> bool {
        {
            let Ok(mut last) = self.last_key_reload.lock() else { return false };
            if last.is_some_and(|t| t.elapsed().as_secs() < 1) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.reload_keys().await.is_ok()
    }

    /// Constant-time check of a presented admin credential.
    pub fn is_admin_credential(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let h = remit_token::sha256(presented.as_bytes());
        bool::from(h.ct_eq(&self.admin_hash))
    }

    /// The kid audit checkpoints are signed with.
    pub fn audit_signing_kid(&self) -> &str {
        self.audit_key.kid()
    }

    /// Sets the read-only credential `/metrics` also accepts (once; later calls are ignored).
    pub fn set_metrics_credential(&self, token: &str) {
        let _ = self.metrics_hash.set(remit_token::sha256(token.as_bytes()));
    }

    pub fn set_scim_credential(&self, token: &str) {
        let _ = self.scim_hash.set(remit_token::sha256(token.as_bytes()));
    }

    /// Constant-time check of a presented SCIM credential.
    pub fn is_scim_credential(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        match self.scim_hash.get() {
            Some(want) => bool::from(remit_token::sha256(presented.as_bytes()).ct_eq(want)),
            None => false,
        }
    }

    /// Constant-time check of a presented metrics scrape credential.
    pub fn is_metrics_credential(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        match self.metrics_hash.get() {
            Some(want) => bool::from(remit_token::sha256(presented.as_bytes()).ct_eq(want)),
            None => false,
        }
    }

    /// Signs the current audit chain head, if it moved since the last checkpoint.
    pub async fn checkpoint_now(&self) -> Result<Option<Checkpoint>, Error> {
        let (seq, head_hash) = self.store.audit().head().await?;
        let last = self.last_checkpoint.lock().map(|g| *g).unwrap_or(0);
        if seq == 0 || seq <= last {
            return Ok(None);
        }
        let time = self.clock.now();
        let sig = self.audit_key.sign(&checkpoint_message(seq, &head_hash, time));
        let cp = Checkpoint { seq, head_hash, time, key_id: self.audit_key.kid().to_owned(), signature: b64e(&sig) };
        self.store.audit().put_checkpoint(cp.clone()).await?;
        if let Ok(mut g) = self.last_checkpoint.lock() {
            *g = (*g).max(seq);
        }
        Ok(Some(cp))
    }

    /// Checks a checkpoint's signature against the audit keys.
    pub fn checkpoint_signature_ok(&self, cp: &Checkpoint) -> bool {
        let Some(sig) = remit_token::b64d(&cp.signature) else { return false };
        let msg = checkpoint_message(cp.seq, &cp.head_hash, cp.time);
        let Ok(keys) = self.audit_public.read() else { return false };
        keys.iter().any(|k| k.kid == cp.key_id && k.verify(&msg, &sig))
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<(), Error> {
        self.store.audit().head().await?;
        Ok(())
    }

    /// The published key set's sequence (the SPIFFE bundle's `spiffe_sequence`).
    pub async fn bundle_sequence(&self) -> Result<u64, Error> {
        Ok(self.store.keys().bundle_sequence().await?)
    }

    /// A fresh random id's 16 bytes.
    pub fn random_id(&self) -> [u8; 16] {
        self.random.bytes16()
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s).ok()?.try_into().ok()
}

/// What [`build_keys`] opens: the JWT keyring, the audit signer and verifiers, the X.509 CA,
/// the tool classes' keyrings.
type BuiltKeys = (
    Keyring,
    SigningKey,
    Vec<VerifyingKey>,
    Option<crate::service::x509::X509Authority>,
    crate::service::domains::ClassKeys,
);

/// Opens the active JWT, audit and X.509 CA keys and collects every still-published public key.
fn build_keys(kek: &Kek, keys: &[StoredKey]) -> Result<BuiltKeys, StartError> {
    let active = |p: KeyPurpose| {
        keys.iter()
            .filter(|k| k.purpose == p && k.retire_after.is_none())
            .max_by_key(|k| k.created_at)
            .ok_or_else(|| StartError::Keys(format!("no active {} key in the store", p.as_str())))
    };
    // Every key, active or retired, must prove itself (MAC and sealed half) before any is used.
    let mut opened = std::collections::HashMap::new();
    for k in keys {
        let sk = crate::seal::open_key(kek, k).map_err(|e| StartError::Keys(e.to_string()))?;
        opened.insert(k.kid.clone(), sk);
    }
    let mut take = |k: &StoredKey| {
        opened.remove(&k.kid).ok_or_else(|| StartError::Keys(format!("key `{}` is listed twice", k.kid)))
    };
    let jwt = active(KeyPurpose::Jwt)?;
    let signer = Arc::new(take(jwt)?);
    let audit = take(active(KeyPurpose::Audit)?)?;
    let mut retired = Vec::new();
    let mut audit_public = Vec::new();
    let mut class_retired: std::collections::BTreeMap<_, Vec<VerifyingKey>> = Default::default();
    for k in keys {
        let vk = VerifyingKey::from_public(&k.public).map_err(|e| StartError::Keys(format!("key `{}`: {e}", k.kid)))?;
        match k.purpose {
            KeyPurpose::Jwt if k.kid != jwt.kid => retired.push(vk),
            KeyPurpose::Jwt => {}
            KeyPurpose::Audit => audit_public.push(vk),
            KeyPurpose::X509 => {}
            KeyPurpose::JwtModel | KeyPurpose::JwtTool | KeyPurpose::JwtData => {
                if let (Some(class), Some(_)) = (k.purpose.tool_class(), k.retire_after) {
                    class_retired.entry(class).or_default().push(vk);
                }
            }
        }
    }
    let mut class_keys = crate::service::domains::ClassKeys::default();
    for class in remit_core::tool::ToolClass::ALL {
        if let Ok(active) = active(KeyPurpose::class_jwt(class)) {
            let signer = Arc::new(take(active)?);
            class_keys.insert(class, Arc::new(Keyring::new(signer, class_retired.remove(&class).unwrap_or_default())));
        }
    }
    let x509 = crate::service::x509::build_authority(keys, |k| {
        opened.remove(&k.kid).ok_or_else(|| format!("key `{}` is listed twice", k.kid))
    })
    .map_err(StartError::Keys)?;
    Ok((Keyring::new(signer, retired), audit, audit_public, x509, class_keys))
}

/// Generates a new key of `purpose`, sealed for storage.
pub fn new_stored_key(kek: &Kek, purpose: KeyPurpose, now: remit_core::time::UnixMillis) -> Result<StoredKey, String> {
    let k = SigningKey::generate().map_err(|e| e.to_string())?;
    let mut stored = StoredKey {
        kid: k.kid().to_owned(),
        purpose,
        sealed: k.seal(kek).map_err(|e| e.to_string())?,
        public: k.verifying.public.clone(),
        created_at: now,
        retire_after: None,
        mac: None,
        cert: None,
    };
    stored.mac = Some(crate::seal::key_mac(kek, &stored));
    Ok(stored)
}
