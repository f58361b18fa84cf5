//! Remit as an OpenID Connect relying party of the organisation's providers (`[[oidc]]`).
//!
//! A provider's discovery document and JWKS are fetched **lazily**, on the first sign-in, and
//! kept for an hour; an ID token naming a key the cached JWKS lacks makes one re-read (at most
//! every 30 s), which is how a provider's key rotation is picked up. Nothing here runs at
//! start, so a provider that is down never delays Remit's start or its kill switches.
//!
//! Outbound calls have connect and total timeouts, follow no redirects and read at most
//! 1 MiB. The discovery document must state exactly the configured issuer (OpenID Connect
//! Discovery §4.3). The client secret is read once at start from its file or environment
//! variable and never logged.
//!
//! [`flow`] holds the sign-in's own state (sealed, so any replica can finish a sign-in another
//! began) and the loopback hand-off to `remit login`.

pub mod flow;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use remit_core::human::Role;
use remit_token::oidc::{Expect, IdClaims, IdTokenError};
use serde::Deserialize;

use crate::config::{ConfigError, OidcProviderConfig};
use crate::error::Error;

/// Largest discovery document, JWKS or token response read from a provider.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long a discovery document and JWKS are used before being re-read.
const META_TTL: Duration = Duration::from_secs(3600);
/// Least time between two JWKS re-reads caused by unknown key ids.
const JWKS_REFRESH_GAP: Duration = Duration::from_secs(30);

/// The configured providers, by name.
pub struct Providers {
    list: Vec<Arc<Provider>>,
}

impl Providers {
    /// Builds the providers from configuration, reading each client secret now; `env` reads
    /// environment variables (injected for tests).
    pub fn from_config(cfgs: &[OidcProviderConfig], env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Value { key: "oidc", message };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        let mut list = Vec::new();
        for c in cfgs {
            if remit_core::ids::WorkflowName::parse(&c.name).is_err() {
                return Err(bad(format!("provider name `{}` must be 1-63 of a-z, 0-9 and `-`", c.name)));
            }
            if list.iter().any(|p: &Arc<Provider>| p.cfg.name == c.name) {
                return Err(bad(format!("provider `{}` is configured twice", c.name)));
            }
            let issuer = reqwest::Url::parse(&c.issuer).map_err(|e| bad(format!("`{}`: issuer: {e}", c.name)))?;
            let loopback = issuer.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
            if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
                return Err(bad(format!("`{}`: the issuer must be https (http only on loopback)", c.name)));
            }
            let algorithms = c
                .algorithms
                .iter()
                .map(|a| match a.parse::<Algorithm>() {
                    Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
                        Err(bad(format!("`{}`: `{a}` is not an asymmetric JWS algorithm", c.name)))
                    }
                    Ok(alg) => Ok(alg),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if algorithms.is_empty() {
                return Err(bad(format!("`{}`: at least one ID-token algorithm is needed", c.name)));
            }
            if !c.scopes.iter().any(|s| s == "openid") {
                return Err(bad(format!("`{}`: scopes must include `openid`", c.name)));
            }
            let mut roles = BTreeMap::new();
            for (group, names) in &c.roles {
                let rs = names
                    .iter()
                    .map(|r| r.parse::<Role>().map_err(|e| bad(format!("`{}`: group `{group}`: {e}", c.name))))
                    .collect::<Result<Vec<_>, _>>()?;
                roles.insert(group.clone(), rs);
            }
            let secret = match (&c.client_secret_file, &c.client_secret_env) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!("`{}`: set client_secret_file or client_secret_env, not both", c.name)));
                }
                (Some(f), None) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| bad(format!("`{}`: cannot read {}: {e}", c.name, f.display())))?
                        .trim()
                        .to_owned(),
                ),
                (None, Some(v)) => {
                    Some(env(v).ok_or_else(|| bad(format!("`{}`: the environment variable {v} is not set", c.name)))?)
                }
                (None, None) => None,
            };
            list.push(Arc::new(Provider {
                cfg: c.clone(),
                algorithms,
                roles,
                secret,
                http: http.clone(),
                meta: Mutex::new(None),
                last_jwks_refresh: Mutex::new(None),
            }));
        }
        Ok(Providers { list })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.list.iter().find(|p| p.cfg.name == name)
    }

    pub fn all(&self) -> &[Arc<Provider>] {
        &self.list
    }
}

/// What a provider's discovery document and JWKS said.
#[derive(Debug, Clone)]
pub struct Meta {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub jwks: JwkSet,
    fetched: Instant,
}

/// One configured provider.
pub struct Provider {
    pub cfg: OidcProviderConfig,
    pub algorithms: Vec<Algorithm>,
    /// Group → roles.
    pub roles: BTreeMap<String, Vec<Role>>,
    secret: Option<String>,
    http: reqwest::Client,
    meta: Mutex<Option<Arc<Meta>>>,
    last_jwks_refresh: Mutex<Option<Instant>>,
}

/// A discovery document. A workload issuer's (Kubernetes') names only its issuer and JWKS;
/// a sign-in provider without the endpoints fails when they are needed.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: String,
    #[serde(default)]
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

/// What the provider said to a refresh of a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still good (with the rotated refresh token, if the provider rotates them).
    Renewed(Option<String>),
    /// `invalid_grant`: the provider no longer vouches for this human.
    Refused,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
}

fn unavailable(p: &str, what: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the identity provider `{p}` is unavailable: {what}"))
}

impl Provider {
    /// GETs (or POSTs) `req` and reads at most [`MAX_RESPONSE_BYTES`] of its body.
    async fn read(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), Error> {
        let name = &self.cfg.name;
        let mut resp = req.send().await.map_err(|e| unavailable(name, e.without_url()))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(name, e.without_url()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(unavailable(name, "its response is larger than 1 MiB"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> Result<T, Error> {
        let (status, body) = self.read(self.http.get(url).header("accept", "application/json")).await?;
        if status != 200 {
            return Err(unavailable(&self.cfg.name, format!("its {what} answered {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(&self.cfg.name, format!("its {what} is not valid: {e}")))
    }

    async fn fetch_meta(&self) -> Result<Arc<Meta>, Error> {
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
        let d: Discovery = self.get_json(&url, "discovery document").await?;
        if d.issuer != self.cfg.issuer {
            return Err(unavailable(&self.cfg.name, "its discovery document names another issuer"));
        }
        let jwks: JwkSet = self.get_json(&d.jwks_uri, "JWKS").await?;
        let meta = Arc::new(Meta {
            authorization_endpoint: d.authorization_endpoint,
            token_endpoint: d.token_endpoint,
            jwks_uri: d.jwks_uri,
            jwks,
            fetched: Instant::now(),
        });
        if let Ok(mut m) = self.meta.lock() {
            *m = Some(meta.clone());
        }
        Ok(meta)
    }

    /// The discovery document and JWKS, fetched on first use and kept for an hour.
    pub async fn meta(&self) -> Result<Arc<Meta>, Error> {
        let cached = self.meta.lock().ok().and_then(|m| m.clone());
        match cached {
            Some(m) if m.fetched.elapsed() < META_TTL => Ok(m),
            _ => self.fetch_meta().await,
        }
    }

    /// Whether sign-ins ask for a refresh token (`offline_access`), which Remit then renews at
    /// every refresh of the Remit session.
    pub fn offline(&self) -> bool {
        self.cfg.scopes.iter().any(|s| s == "offline_access")
    }

    fn token_request(&self, endpoint: &str, mut form: Vec<(&'static str, String)>) -> reqwest::RequestBuilder {
        let req = self.http.post(endpoint).header("accept", "application/json");
        match &self.secret {
            Some(s) => req.basic_auth(form_encode(&self.cfg.client_id), Some(form_encode(s))).form(&form),
            None => {
                form.push(("client_id", self.cfg.client_id.clone()));
                req.form(&form)
            }
        }
    }

    /// Renews a sign-in with the provider's refresh token: `Refused` on `invalid_grant` (the
    /// provider no longer vouches for them), an error when the provider cannot be asked.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Renewal, Error> {
        let meta = self.meta().await?;
        let req = self.token_request(
            &meta.token_endpoint,
            vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh_token.into())],
        );
        let (status, body) = self.read(req).await?;
        if status == 200 {
            let t: TokenResponse = serde_json::from_slice(&body)
                .map_err(|e| unavailable(&self.cfg.name, format!("its token response is not valid: {e}")))?;
            return Ok(Renewal::Renewed(t.refresh_token));
        }
        let code = serde_json::from_slice::<TokenError>(&body).map(|e| e.error).unwrap_or_default();
        if status == 400 && code == "invalid_grant" {
            return Ok(Renewal::Refused);
        }
        Err(unavailable(&self.cfg.name, format!("its token endpoint answered {status} {code}")))
    }

    /// Trades an authorization code (with its PKCE verifier) for the provider's ID token and,
    /// when asked for, its refresh token.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<(String, Option<String>), Error> {
        let meta = self.meta().await?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ];
        let (status, body) = self.read(self.token_request(&meta.token_endpoint, form)).await?;
        if status != 200 {
            // The provider's error code only (its description may echo input).
            let code = serde_json::from_slice::<TokenError>(&body).map(|e| e.error).unwrap_or_default();
            return Err(Error::Denied(format!("the identity provider refused the sign-in code ({status} {code})")));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| unavailable(&self.cfg.name, format!("its token response is not valid: {e}")))?;
        let id = t.id_token.ok_or_else(|| Error::Denied("the identity provider returned no ID token".into()))?;
        Ok((id, t.refresh_token))
    }

    /// Verifies an ID token for this sign-in, re-reading the JWKS once if it names a key the
    /// cached one lacks (a rotation at the provider).
    pub async fn verify(&self, id_token: &str, nonce: &str, now: i64, leeway: u64) -> Result<IdClaims, Error> {
        let expect = Expect {
            issuer: &self.cfg.issuer,
            client_id: &self.cfg.client_id,
            nonce,
            algorithms: &self.algorithms,
            now,
            leeway,
        };
        let meta = self.meta().await?;
        match remit_token::oidc::verify_id_token(id_token, &meta.jwks, &expect) {
            Err(IdTokenError::UnknownKey(_)) if self.may_refresh_jwks() => {
                let meta = self.fetch_meta().await?;
                remit_token::oidc::verify_id_token(id_token, &meta.jwks, &expect)
            }
            r => r,
        }
        .map_err(|e| Error::Unauthenticated(format!("sign-in refused: {e}")))
    }

    /// Verifies a platform token presented as a `jwt-bearer` assertion (for a workload
    /// issuer: `client_id` holds the audience it was configured with), re-reading the JWKS
    /// once for a key the cached one lacks.
    pub async fn verify_assertion(&self, token: &str, now: i64, leeway: u64) -> Result<IdClaims, Error> {
        let expect = Expect {
            issuer: &self.cfg.issuer,
            client_id: &self.cfg.client_id,
            nonce: "",
            algorithms: &self.algorithms,
            now,
            leeway,
        };
        let meta = self.meta().await?;
        match remit_token::oidc::verify_assertion(token, &meta.jwks, &expect) {
            Err(IdTokenError::UnknownKey(_)) if self.may_refresh_jwks() => {
                let meta = self.fetch_meta().await?;
                remit_token::oidc::verify_assertion(token, &meta.jwks, &expect)
            }
            r => r,
        }
        .map_err(|e| Error::Unauthenticated(e.to_string()))
    }

    fn may_refresh_jwks(&self) -> bool {
        let Ok(mut last) = self.last_jwks_refresh.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_GAP) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The groups a verified ID token states, from the configured claim.
    pub fn groups(&self, claims: &IdClaims) -> Vec<String> {
        if self.cfg.groups_claim == "groups" {
            return claims.groups.clone();
        }
        match claims.all.get(&self.cfg.groups_claim) {
            Some(serde_json::Value::Array(v)) => v.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    }

    /// The roles the mapping gives these groups (sorted, without repeats).
    pub fn roles_for(&self, groups: &[String]) -> Vec<Role> {
        let mut out: Vec<Role> = groups.iter().filter_map(|g| self.roles.get(g)).flatten().copied().collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether an email may sign in through this provider (`allowed_domains`).
    pub fn domain_allowed(&self, email: &str) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
        self.cfg.allowed_domains.is_empty() || self.cfg.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(&domain))
    }
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before HTTP Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
