//! SPIFFE federation: the bundles of other trust domains.
//!
//! Each `[[federation]]` trust domain's SPIFFE bundle is fetched from its bundle endpoint
//! (`https_web`: web-PKI TLS, or the configured CA), at start and then after its
//! `spiffe_refresh_hint` (kept between [`MIN_REFRESH`] and [`MAX_REFRESH`]); a failed fetch
//! keeps the last good bundle and retries after [`RETRY`]. Bundles are parsed strictly:
//! `x509-svid` keys must carry one certificate in `x5c`, `jwt-svid` keys a `kid`; anything
//! else in the document is ignored. Every change bumps [`Bundles::version`], which the
//! Workload API's streams watch: federated bundles reach `FetchX509Bundles`,
//! `FetchJWTBundles` and `FetchX509SVID` (`federated_bundles`), and `ValidateJWTSVID`
//! verifies a federated domain's JWT-SVIDs against them. A domain not configured here is
//! not trusted at all.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use remit_core::ids::TrustDomain;
use tokio::sync::watch;

use crate::config::{ConfigError, FederationConfig};

/// Bounds on how often a federated bundle is re-fetched.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// Wait after a failed fetch.
pub const RETRY: Duration = Duration::from_secs(30);
/// Largest bundle document read.
const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// One federated trust domain's current bundle.
#[derive(Debug, Clone)]
pub struct Federated {
    /// CA certificates (DER) for its X.509-SVIDs.
    pub x509: Vec<Vec<u8>>,
    /// Keys for its JWT-SVIDs.
    pub jwks: JwkSet,
    /// The same keys as a JWK Set document (what `FetchJWTBundles` hands out).
    pub jwks_json: Vec<u8>,
    pub sequence: Option<u64>,
    pub refresh_hint: Option<u64>,
}

/// The federated domains and their last good bundles.
pub struct Bundles {
    configured: Vec<(TrustDomain, FederationConfig)>,
    current: RwLock<BTreeMap<String, Arc<Federated>>>,
    version: watch::Sender<u64>,
}

/// Parses a SPIFFE bundle document (SPIFFE Trust Domain and Bundle §4).
pub fn parse_bundle(body: &[u8]) -> Result<Federated, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc.get("keys").and_then(|k| k.as_array()).ok_or("no `keys`")?;
    let mut x509 = Vec::new();
    let mut jwks = Vec::new();
    for k in keys {
        match k.get("use").and_then(|u| u.as_str()) {
            Some("x509-svid") => {
                let x5c = k.get("x5c").and_then(|x| x.as_array()).ok_or("an x509-svid key without `x5c`")?;
                let [cert] = x5c.as_slice() else {
                    return Err("an x509-svid key's `x5c` holds one certificate".into());
                };
                let der = base64::engine::general_purpose::STANDARD
                    .decode(cert.as_str().ok_or("`x5c` is not a string")?)
                    .map_err(|e| format!("`x5c`: {e}"))?;
                remit_token::x509::not_after(&der).map_err(|e| format!("`x5c`: {e}"))?;
                x509.push(der);
            }
            Some("jwt-svid") => {
                let jwk: Jwk = serde_json::from_value(k.clone()).map_err(|e| format!("a jwt-svid key: {e}"))?;
                if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
                    return Err("a jwt-svid key without `kid`".into());
                }
                jwks.push(jwk);
            }
            _ => {}
        }
    }
    let jwks = JwkSet { keys: jwks };
    let jwks_json = serde_json::to_vec(&jwks).map_err(|e| e.to_string())?;
    Ok(Federated {
        x509,
        jwks,
        jwks_json,
        sequence: doc.get("spiffe_sequence").and_then(|s| s.as_u64()),
        refresh_hint: doc.get("spiffe_refresh_hint").and_then(|s| s.as_u64()),
    })
}

impl Bundles {
    /// Checks the configuration: valid, distinct trust domains other than ours, and endpoints
    /// that are `https` (or `http` on loopback).
    pub fn from_config(cfgs: &[FederationConfig], ours: &TrustDomain) -> Result<Bundles, ConfigError> {
        let bad = |message: String| ConfigError::Value { key: "federation", message };
        let mut configured: Vec<(TrustDomain, FederationConfig)> = Vec::new();
        for c in cfgs {
            let td = TrustDomain::parse(&c.trust_domain).map_err(|e| bad(e.to_string()))?;
            if td == *ours || configured.iter().any(|(t, _)| *t == td) {
                return Err(bad(format!("trust domain `{td}` is ours or configured twice")));
            }
            let url = reqwest::Url::parse(&c.bundle_endpoint).map_err(|e| bad(format!("`{td}`: {e}")))?;
            let loopback = url.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(bad(format!("`{td}`: the bundle endpoint must be https (http only on loopback)")));
            }
            configured.push((td, c.clone()));
        }
        Ok(Bundles { configured, current: RwLock::new(BTreeMap::new()), version: watch::Sender::new(0) })
    }

    /// A federated domain's current bundle, if it is configured and was fetched.
    pub fn get(&self, td: &str) -> Option<Arc<Federated>> {
        self.current.read().ok()?.get(td).cloned()
    }

    /// Every federated domain's current bundle, by trust-domain name.
    pub fn all(&self) -> BTreeMap<String, Arc<Federated>> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Bumps on every change of any federated bundle.
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn put(&self, td: &TrustDomain, b: Federated) {
        let changed = self.get(td.as_str()).is_none_or(|old| old.x509 != b.x509 || old.jwks_json != b.jwks_json);
        if let Ok(mut c) = self.current.write() {
            c.insert(td.to_string(), Arc::new(b));
        }
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Federated, String> {
    let mut resp =
        http.get(url).header("accept", "application/json").send().await.map_err(|e| e.without_url().to_string())?;
    if !resp.status().is_success() {
        return Err(format!("it answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > MAX_BUNDLE_BYTES {
            return Err("the bundle is larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    parse_bundle(&body)
}

fn client(c: &FederationConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(f) = &c.ca_file {
        let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", f.display()))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| e.to_string())
}

/// Keeps every federated bundle fresh until aborted (one task per domain).
pub async fn follow(bundles: Arc<Bundles>) {
    // Dropping the set (this task aborted) aborts every domain's task.
    let mut tasks = tokio::task::JoinSet::new();
    for (td, cfg) in bundles.configured.clone() {
        let bundles = bundles.clone();
        tasks.spawn(async move {
            let http = match client(&cfg) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(trust_domain = %td, error = %e, "cannot fetch the federated bundle");
                    return;
                }
            };
            loop {
                let wait = match fetch(&http, &cfg.bundle_endpoint).await {
                    Ok(b) => {
                        let hint = b.refresh_hint.map(Duration::from_secs).unwrap_or(MAX_REFRESH);
                        tracing::debug!(trust_domain = %td, sequence = ?b.sequence, "fetched a federated bundle");
                        bundles.put(&td, b);
                        hint.clamp(MIN_REFRESH, MAX_REFRESH)
                    }
                    Err(e) => {
                        tracing::warn!(trust_domain = %td, error = %e, "fetching a federated bundle failed; keeping the last one");
                        RETRY
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_parse_strictly() {
        let ca = remit_token::SigningKey::generate().unwrap();
        let now = remit_core::time::UnixMillis(1_800_000_000_000);
        let cert = remit_token::x509::self_signed_ca(&ca, "spiffe://partner.test", now, 3600, [1; 16]).unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(&cert);
        let jwk = serde_json::to_value(ca.verifying.jwk("jwt-svid")).unwrap();
        let doc = serde_json::json!({"keys": [jwk, {"use": "x509-svid", "kty": "EC", "x5c": [x5c]}, {"use": "other"}],
                                     "spiffe_sequence": 3, "spiffe_refresh_hint": 60});
        let b = parse_bundle(doc.to_string().as_bytes()).unwrap();
        assert_eq!((b.x509.len(), b.jwks.keys.len(), b.sequence, b.refresh_hint), (1, 1, Some(3), Some(60)));
        let no_kid =
            serde_json::json!({"keys": [{"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]});
        assert!(parse_bundle(no_kid.to_string().as_bytes()).is_err());
        let bad_cert = serde_json::json!({"keys": [{"use": "x509-svid", "x5c": ["AAAA"]}]});
        assert!(parse_bundle(bad_cert.to_string().as_bytes()).is_err());
        assert!(parse_bundle(b"[]").is_err());
    }
}
