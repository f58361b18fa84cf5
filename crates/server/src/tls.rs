//! Native TLS for Remit's HTTP listener (rustls on aws-lc-rs, TLS 1.2 and 1.3 only).
//!
//! Remit terminates TLS itself because a TLS-terminating proxy would swallow client
//! certificates: an agent's X.509-SVID (from the Workload API) is a credential here.
//! - The certificate chain and key are PEM files, re-read when they change (checked every
//!   [`RELOAD_EVERY`]: modification time, size and inode), without a restart; a pair that does
//!   not load is logged and the pair in use stays.
//! - A client certificate is optional. When one is sent it must chain to the trust domain's
//!   X.509 CA (the X.509 bundle, re-read after a CA rotation) and satisfy the X509-SVID rules
//!   ([`remit_token::x509::check_svid`]); its SPIFFE ID reaches the request as [`PeerSvid`].
//!   A handshake with a certificate that fails either check fails.
//! - Handshakes have a deadline (the header-read timeout) and run on the connection's own
//!   task, never on the accept loop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// How often the certificate files (and the X.509 bundle) are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The SPIFFE ID of the X.509-SVID a client authenticated the TLS connection with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSvid {
    /// Its SPIFFE ID.
    pub id: String,
    /// Its serial number (hex): what names this certificate.
    pub serial: String,
    pub not_after: remit_core::time::UnixMillis,
}

/// What identifies a version of a file.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The listener's TLS configuration, swapped whole on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' stamps and the client roots the current config was built from.
    built: Mutex<(Stamp, Stamp, Vec<Vec<u8>>)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn build(cert: &Path, key: &Path, roots: &[Vec<u8>]) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(CertificateDer::from(r.clone())).map_err(|e| format!("the X.509 bundle: {e}"))?;
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if store.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Loads the pair; `roots` are the CA certificates client SVIDs must chain to.
    pub fn load(cert: &Path, key: &Path, roots: Vec<Vec<u8>>) -> Result<Tls, String> {
        let config = build(cert, key, &roots)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            config: RwLock::new(Arc::new(config)),
            built: Mutex::new((stamp(cert), stamp(key), roots)),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let c = self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(c)
    }

    /// Rebuilds the configuration if the files or the client roots changed. Returns whether
    /// it did; an error leaves the configuration in use as it was.
    pub fn reload_if_changed(&self, roots: &[Vec<u8>]) -> Result<bool, String> {
        let (c, k) = (stamp(&self.cert), stamp(&self.key));
        {
            let built = self.built.lock().map_err(|_| "tls lock poisoned".to_owned())?;
            if built.0 == c && built.1 == k && built.2 == roots {
                return Ok(false);
            }
        }
        let config = build(&self.cert, &self.key, roots)?;
        if let Ok(mut g) = self.config.write() {
            *g = Arc::new(config);
        }
        if let Ok(mut b) = self.built.lock() {
            *b = (c, k, roots.to_vec());
        }
        Ok(true)
    }
}

/// The listener's TLS from the configuration (`None`: plain HTTP); a pair that does not load
/// is an error at start.
pub fn from_config(app: &crate::app::App) -> std::io::Result<Option<Arc<Tls>>> {
    let Some((cert, key)) = app.cfg.tls_files().map_err(std::io::Error::other)? else { return Ok(None) };
    let tls = Tls::load(&cert, &key, client_roots(app)).map_err(std::io::Error::other)?;
    Ok(Some(Arc::new(tls)))
}

/// The CA certificates a client X.509-SVID must chain to: Remit's own CAs (intermediates
/// under an upstream CA included as anchors), never an upstream root.
fn client_roots(app: &crate::app::App) -> Vec<Vec<u8>> {
    app.x509_authority().map(|a| a.ca_certificates()).unwrap_or_default()
}

/// Re-reads the pair (and the X.509 bundle) every [`RELOAD_EVERY`] until aborted.
pub async fn follow(app: Arc<crate::app::App>, tls: Arc<Tls>) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tls.reload_if_changed(&client_roots(&app)) {
            Ok(true) => tracing::info!(cert = %tls.cert.display(), "reloaded the TLS certificate and trust bundle"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "the TLS certificate did not reload; the one in use stays"),
        }
    }
}

/// The TLS handshake of one connection, under `deadline`, and the SPIFFE ID of the client's
/// X.509-SVID if it sent one. `None`: the handshake failed (logged at debug level).
pub async fn accept<IO>(
    tls: &Tls,
    io: IO,
    deadline: Duration,
) -> Option<(tokio_rustls::server::TlsStream<IO>, Option<PeerSvid>)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let s = match tokio::time::timeout(deadline, tls.acceptor().accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return None;
        }
    };
    let leaf = s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
    let facts = |der: &[u8]| -> Result<PeerSvid, remit_token::x509::X509Error> {
        Ok(PeerSvid {
            id: remit_token::x509::check_svid(der)?,
            serial: remit_token::x509::serial_hex(der)?,
            not_after: remit_token::x509::not_after(der)?,
        })
    };
    let svid = match leaf.map(|der| facts(&der)) {
        None => None,
        Some(Ok(svid)) => Some(svid),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "a client certificate that is not an X.509-SVID");
            return None;
        }
    };
    Some((s, svid))
}

/// A self-signed certificate and key for local use (`remit init --tls-self-signed`): valid
/// for `localhost`, `127.0.0.1` and `::1` and the given extra names, for a year. Returns
/// `(certificate PEM, key PEM)`.
pub fn self_signed(extra_names: &[String]) -> Result<(String, String), String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(extra_names.iter().cloned());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "remit (self-signed, for local use)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `(cert, key)` PEMs to `dir/tls.crt` and `dir/tls.key` (0600); refuses to overwrite.
pub fn write_pair(dir: &Path, pair: &(String, String)) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    for (path, body, mode) in [(&k, &pair.1, 0o600), (&c, &pair.0, 0o644)] {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
        f.write_all(body.as_bytes())?;
    }
    Ok((c, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_reloads_a_changed_pair() {
        let dir = tempfile::tempdir().unwrap();
        let pair = self_signed(&[]).unwrap();
        let (c, k) = write_pair(dir.path(), &pair).unwrap();
        assert!(write_pair(dir.path(), &pair).is_err(), "never overwrites");
        let tls = Tls::load(&c, &k, vec![]).unwrap();
        assert!(!tls.reload_if_changed(&[]).unwrap());
        // A broken file keeps the pair in use.
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(tls.reload_if_changed(&[]).is_err());
        let pair2 = self_signed(&["remit.example".into()]).unwrap();
        std::fs::write(&c, &pair2.0).unwrap();
        std::fs::write(&k, &pair2.1).unwrap();
        assert!(tls.reload_if_changed(&[]).unwrap());
    }
}
