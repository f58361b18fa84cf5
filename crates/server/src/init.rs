//! First-run initialization: the key-encryption key, the admin credential, the signing
//! keys and the installation record.
//!
//! The admin credential is shown once and written to `<data-dir>/admin-token` (mode 0600)
//! for the CLI; the store keeps only its SHA-256. The key-encryption key comes from
//! `REMIT_KEK` when set, else from the kek file, which is created (0600) on first run.

use std::io::Write;
use std::path::{Path, PathBuf};

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::TrustDomain;
use remit_core::time::Clock;
use remit_store::{Installation, KeyPurpose, Store};
use remit_token::{Kek, b64e};

use crate::app::{StartError, new_stored_key};
use crate::config::{Config, StoreKind};

/// The admin credential file's name inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Prefix of admin credentials (helps secret scanners recognise a leak).
pub const ADMIN_TOKEN_PREFIX: &str = "remit_admin_";
/// The file holding the read-only metrics scrape credential, in the data directory.
pub const METRICS_TOKEN_FILE: &str = "metrics-token";
/// Every metrics scrape credential Remit makes starts with this.
pub const METRICS_TOKEN_PREFIX: &str = "remit_metrics_";
/// Shortest scrape credential accepted from `REMIT_METRICS_TOKEN`.
pub const MIN_METRICS_TOKEN_LEN: usize = 32;

/// The read-only credential Prometheus scrapes `/metrics` with (it opens nothing else):
/// `env` (`REMIT_METRICS_TOKEN`, so replicas can share one), else the `metrics-token` file in
/// the data directory, created (0600) on first use.
pub fn metrics_credential(data_dir: &Path, env: Option<&str>) -> Result<String, StartError> {
    credential(data_dir, METRICS_TOKEN_FILE, METRICS_TOKEN_PREFIX, "REMIT_METRICS_TOKEN", env)
}

/// The file holding the SCIM credential in the data directory.
pub const SCIM_TOKEN_FILE: &str = "scim-token";
const SCIM_TOKEN_PREFIX: &str = "remit_scim_";

/// The credential the organisation's identity provider provisions humans with at `/scim/v2`
/// (it opens nothing else): `env` (`REMIT_SCIM_TOKEN`, shared by replicas), else the
/// `scim-token` file in the data directory, created (0600) on first use.
pub fn scim_credential(data_dir: &Path, env: Option<&str>) -> Result<String, StartError> {
    credential(data_dir, SCIM_TOKEN_FILE, SCIM_TOKEN_PREFIX, "REMIT_SCIM_TOKEN", env)
}

/// A single-purpose bearer credential: from `env` (at least 32 characters), else `file` in
/// the data directory, made (0600, `prefix` + 32 random bytes) when missing.
fn credential(data_dir: &Path, file: &str, prefix: &str, var: &str, env: Option<&str>) -> Result<String, StartError> {
    if let Some(t) = env.map(str::trim).filter(|t| !t.is_empty()) {
        if t.len() < MIN_METRICS_TOKEN_LEN {
            return Err(StartError::Keys(format!("{var} must be at least {MIN_METRICS_TOKEN_LEN} characters")));
        }
        return Ok(t.to_owned());
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= MIN_METRICS_TOKEN_LEN => Ok(t.trim().to_owned()),
        Ok(_) => Err(StartError::Keys(format!("{} holds no valid credential", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A replica on PostgreSQL may have a data directory nobody created yet.
            std::fs::create_dir_all(data_dir)
                .map_err(|e| StartError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
            let token = format!("{prefix}{}", b64e(&remit_token::random::<32>()));
            match write_secret_file(&path, &format!("{token}\n")) {
                Ok(()) => Ok(token),
                // Another process sharing the directory made it first: use theirs.
                Err(_) if path.exists() => credential(data_dir, file, prefix, var, None),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(StartError::Io(format!("cannot read {}: {e}", path.display()))),
    }
}

/// An exclusive lock on an embedded (SQLite) store, held while a server (or an offline
/// command that writes the store) uses it; released when dropped or when the process ends.
#[derive(Debug)]
pub struct StoreLock {
    _file: Option<std::fs::File>,
}

/// The lock file next to a SQLite database: `<database>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the store's lock, or refuses: two servers on one SQLite database would fight over
/// the audit chain (every write of the second one failing). A PostgreSQL store is shared by
/// design (many replicas) and takes no lock.
pub fn lock_store(cfg: &Config) -> Result<StoreLock, StartError> {
    let db = match cfg.store_kind()? {
        StoreKind::Sqlite(db) => db,
        StoreKind::Postgres(_) => return Ok(StoreLock { _file: None }),
    };
    let path = lock_path(&db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StartError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartError::Io(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(StoreLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Io(format!(
            "another remit process is using the store {} (its lock {} is held); stop it first, or give this one \
             its own --data-dir",
            db.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError::Io(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// What a first run created.
#[derive(Debug)]
pub struct Initialized {
    pub admin_token: String,
    pub admin_token_path: PathBuf,
    pub kek_path: Option<PathBuf>,
    pub trust_domain: String,
}

/// Writes `contents` to `path` readable only by the owner, refusing to overwrite.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), StartError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| StartError::Io(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StartError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Loads the key-encryption key from `env_kek`, or the kek file; with `create`, makes the
/// file when neither exists. Returns the key and the file it was created in, if any.
pub fn load_kek(cfg: &Config, env_kek: Option<&str>, create: bool) -> Result<(Kek, Option<PathBuf>), StartError> {
    if let Some(text) = env_kek {
        return Ok((Kek::from_text(text).map_err(|e| StartError::Keys(format!("REMIT_KEK: {e}")))?, None));
    }
    let path = cfg.kek_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let kek = Kek::from_text(&text).map_err(|e| StartError::Keys(format!("{}: {e}", path.display())))?;
            Ok((kek, None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let text = Kek::generate_text();
            write_secret_file(&path, &format!("{text}\n"))?;
            let kek = Kek::from_text(&text).map_err(|e| StartError::Keys(e.to_string()))?;
            Ok((kek, Some(path)))
        }
        Err(e) => {
            Err(StartError::Keys(format!("no key-encryption key: set REMIT_KEK or provide {} ({e})", path.display())))
        }
    }
}

/// Initializes an empty store. Returns `None` when it was already initialized.
pub async fn initialize(
    cfg: &Config,
    store: &dyn Store,
    clock: &dyn Clock,
    env_kek: Option<&str>,
) -> Result<(Kek, Option<Initialized>), StartError> {
    if store.keys().installation().await?.is_some() {
        let (kek, _) = load_kek(cfg, env_kek, false)?;
        return Ok((kek, None));
    }
    let td = TrustDomain::parse(&cfg.trust_domain).map_err(|e| StartError::Keys(e.to_string()))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::Io(format!("cannot create {}: {e}", cfg.data_dir.display())))?;
    let (kek, kek_path) = load_kek(cfg, env_kek, true)?;
    let now = clock.now();
    let admin_token = format!("{ADMIN_TOKEN_PREFIX}{}", b64e(&remit_token::random::<32>()));
    let admin_hash: String = hex::encode(remit_token::sha256(admin_token.as_bytes()));
    let keys = vec![
        new_stored_key(&kek, KeyPurpose::Jwt, now).map_err(StartError::Keys)?,
        new_stored_key(&kek, KeyPurpose::Audit, now).map_err(StartError::Keys)?,
        crate::service::x509::new_ca_key(
            &kek,
            &td,
            crate::service::x509::load_upstream(cfg).map_err(StartError::Keys)?.as_ref(),
            now,
            cfg.workload.ca_ttl.as_secs(),
            remit_token::random::<16>(),
        )
        .map_err(StartError::Keys)?,
    ];
    let kids: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
    let token_path = cfg.data_dir.join(ADMIN_TOKEN_FILE);
    // Write the credential file before committing, so a crash never leaves an installation
    // whose admin credential nobody has.
    let _ = std::fs::remove_file(&token_path);
    write_secret_file(&token_path, &format!("{admin_token}\n"))?;
    let audit = AuditEvent::new(now, "admin", AuditAction::Init).detail([
        ("trust_domain", td.as_str().into()),
        ("issuer", cfg.issuer().into()),
        ("jwt_kid", kids[0].clone().into()),
        ("audit_kid", kids[1].clone().into()),
    ]);
    let issuer = cfg.issuer();
    let mut record =
        Installation { trust_domain: td.as_str().to_owned(), issuer: None, admin_hash, installed_at: now, mac: None };
    record.mac = Some(crate::seal::installation_mac(&kek, &record, &issuer));
    record.issuer = Some(issuer);
    let installed = store.keys().install(record, keys, audit).await;
    match installed {
        Ok(()) => {}
        // Another replica initialized the shared database first: ours is not the credential.
        Err(remit_store::StoreError::Conflict(_)) if store.keys().installation().await?.is_some() => {
            let _ = std::fs::remove_file(&token_path);
            return Ok((kek, None));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&token_path);
            return Err(e.into());
        }
    }
    Ok((kek, Some(Initialized { admin_token, admin_token_path: token_path, kek_path, trust_domain: td.to_string() })))
}
