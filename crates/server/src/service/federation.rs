//! OIDC federation of workloads that do not share a host with Remit: a platform's token
//! (a Kubernetes service-account token, a CI system's OIDC token) traded for an agent
//! instance's identity through the RFC 7523 JWT bearer grant at `/oauth2/token`.
//!
//! The assertion's `iss` picks a configured issuer (`[[workload_issuers]]`); it is verified
//! against that issuer's JWKS (asymmetric algorithms only; `aud` must hold the configured
//! audience; `exp`, `iat`, `sub`); its `sub` and the configured claims become selectors
//! `oidc:<issuer>:<claim>:<value>`, and the most specific registration entry names the agent.
//! The instance lives until the instance TTL or the assertion's expiry, whichever is first,
//! and renewals never take it past the assertion's expiry. An assertion is used once: its
//! `jti` (or, without one, its `sub` and `iat`) is remembered until it expires, shared by
//! replicas; a replay is `invalid_grant`. A future `nbf` is refused.
//! Every attestation and refusal is audited with its selectors; a refused caller gets
//! `invalid_grant` and learns nothing about which entries exist.

use std::collections::BTreeSet;

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::ids::{InstanceId, SpiffeId};
use remit_core::model::{Instance, InstanceState};
use remit_core::time::UnixMillis;
use remit_core::workload::Selector;
use remit_store::StoreError;

use crate::app::App;
use crate::config::{ConfigError, OidcProviderConfig, WorkloadIssuerConfig};
use crate::error::{Error, OAuthError};
use crate::signin::Providers;

/// `grant_type` of RFC 7523 §2.1.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest assertion accepted.
pub const MAX_ASSERTION_BYTES: usize = 16 * 1024;
/// Actor of the records this grant writes.
const ACTOR: &str = "jwt-bearer";

/// The workload issuers, as providers (discovery, JWKS cache, algorithm checks) whose
/// `client_id` is the audience their tokens carry for Remit.
pub fn issuers(cfgs: &[WorkloadIssuerConfig]) -> Result<Providers, ConfigError> {
    let as_providers: Vec<OidcProviderConfig> = cfgs
        .iter()
        .map(|c| OidcProviderConfig {
            name: c.name.clone(),
            issuer: c.issuer.clone(),
            client_id: c.audience.clone(),
            client_secret_file: None,
            client_secret_env: None,
            algorithms: c.algorithms.clone(),
            scopes: vec!["openid".into()],
            allowed_domains: vec![],
            groups_claim: "groups".into(),
            roles: Default::default(),
        })
        .collect();
    Providers::from_config(&as_providers, |_| None).map_err(|e| match e {
        ConfigError::Value { message, .. } => ConfigError::Value { key: "workload_issuers", message },
        e => e,
    })
}

/// An identity issued for a federated workload.
pub struct Federated {
    pub token: String,
    pub spiffe_id: String,
    pub expires_in: u64,
}

/// The unverified `iss` of a compact JWS (to pick the issuer whose keys verify it).
fn peek_issuer(token: &str) -> Option<String> {
    remit_token::jwt::unverified_claims(token)?.get("iss")?.as_str().map(str::to_owned)
}

fn invalid_grant() -> OAuthError {
    OAuthError::new("invalid_grant", "the assertion does not attest a registered workload")
}

impl App {
    /// The JWT bearer grant: a platform's token for an instance identity.
    pub async fn jwt_bearer(&self, assertion: &str) -> Result<Federated, OAuthError> {
        if assertion.is_empty() || assertion.len() > MAX_ASSERTION_BYTES {
            return Err(OAuthError::new("invalid_request", "`assertion` is required (at most 16 KiB)"));
        }
        let now = self.clock.now();
        let iss = peek_issuer(assertion);
        let Some(provider) =
            iss.as_deref().and_then(|i| self.workload_issuers.all().iter().find(|p| p.cfg.issuer == i))
        else {
            self.federation_refused(None, &BTreeSet::new(), "no configured workload issuer").await;
            return Err(invalid_grant());
        };
        let name = provider.cfg.name.clone();
        let leeway = self.cfg.limits.clock_skew.as_secs();
        let claims = match provider.verify_assertion(assertion, now.secs(), leeway).await {
            Ok(c) => c,
            Err(Error::Unavailable(m)) => return Err(OAuthError::from(Error::Unavailable(m))),
            Err(e) => {
                self.federation_refused(Some(&name), &BTreeSet::new(), &e.to_string()).await;
                return Err(invalid_grant());
            }
        };
        let not_yet = claims
            .all
            .get("nbf")
            .and_then(|n| n.as_i64())
            .is_some_and(|nbf| nbf.saturating_sub(i64::try_from(leeway).unwrap_or(i64::MAX / 2)) > now.secs());
        if not_yet {
            self.federation_refused(Some(&name), &BTreeSet::new(), "the assertion is not valid yet (nbf)").await;
            return Err(invalid_grant());
        }
        // Once per assertion: by its claims (`jti`), never its bytes.
        let once = match claims.all.get("jti").and_then(|j| j.as_str()) {
            Some(jti) => format!("jwt-bearer:{name}:jti:{jti}"),
            None => format!("jwt-bearer:{name}:sub:{}:iat:{}", claims.sub, claims.iat),
        };
        let key = hex::encode(remit_token::sha256(once.as_bytes()));
        let forget_at = UnixMillis(claims.exp.saturating_add(i64::try_from(leeway).unwrap_or(0)).saturating_mul(1000));
        let first =
            self.store.tools().use_proof(&key, now, forget_at).await.map_err(|e| OAuthError::from(Error::from(e)))?;
        if !first {
            self.federation_refused(Some(&name), &BTreeSet::new(), "the assertion was already used").await;
            return Err(invalid_grant());
        }
        let wanted =
            self.cfg.workload_issuers.iter().find(|c| c.name == name).map(|c| c.claims.clone()).unwrap_or_default();
        let mut selectors = BTreeSet::new();
        for claim in std::iter::once("sub").chain(wanted.iter().map(String::as_str)) {
            let value = match claims.all.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
                _ => continue,
            };
            if let Some(s) = Selector::oidc(&name, claim, &value) {
                selectors.insert(s);
            }
        }
        let entries = self.store.workload().entries().await.map_err(|e| OAuthError::from(Error::from(e)))?;
        let Some(entry) = remit_core::workload::select(&entries, &selectors) else {
            self.federation_refused(Some(&name), &selectors, "no registration entry matches").await;
            return Err(invalid_grant());
        };
        let until =
            UnixMillis(now.plus_secs(self.cfg.limits.instance_ttl.as_secs()).0.min(claims.exp.saturating_mul(1000)));
        if until <= now {
            self.federation_refused(Some(&name), &selectors, "the assertion has expired").await;
            return Err(invalid_grant());
        }
        let inst = Instance {
            id: InstanceId::from_random(self.random_id()),
            agent: entry.agent.clone(),
            state: InstanceState::Active,
            created_at: now,
            expires_at: until,
            revoked_at: None,
            revoke_reason: None,
            workflow: entry.workflow.clone(),
            renew_until: Some(until),
        };
        let spiffe = SpiffeId::instance(&self.trust_domain, &inst.agent, &inst.id);
        let sels: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        let mut audit = AuditEvent::new(now, ACTOR, AuditAction::WorkloadAttest).agent(&inst.agent).detail([
            ("issuer", name.clone().into()),
            ("entry", entry.id.as_str().into()),
            ("instance", inst.id.as_str().into()),
            ("spiffe_id", spiffe.as_str().into()),
            ("selectors", sels.into()),
        ]);
        if let Some(w) = &inst.workflow {
            audit = audit.workflow(w);
        }
        match self.store.workload().attest_instance(inst.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                self.federation_refused(Some(&name), &selectors, "its agent is not enabled").await;
                return Err(invalid_grant());
            }
            Err(e) => return Err(OAuthError::from(Error::from(e))),
        }
        self.metrics.attestations.get_or_create(&crate::metrics::Metrics::label("federated")).inc();
        let token = self.mint_instance_token(&inst, &spiffe);
        let expires_in = u64::try_from((until.0 - now.0) / 1000).unwrap_or(0);
        Ok(Federated { token, spiffe_id: spiffe.to_string(), expires_in })
    }

    async fn federation_refused(&self, issuer: Option<&str>, selectors: &BTreeSet<Selector>, why: &str) {
        let sels: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        let ev = AuditEvent::new(self.clock.now(), ACTOR, AuditAction::WorkloadAttest)
            .outcome(Outcome::Denied)
            .reason(why)
            .detail([("issuer", issuer.unwrap_or("unknown").into()), ("selectors", sels.into())]);
        self.metrics.attestations.get_or_create(&crate::metrics::Metrics::label("refused")).inc();
        if let Err(e) = self.store.audit().append(vec![ev]).await {
            tracing::warn!(error = %e, "auditing a refused jwt-bearer grant failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_read_before_verification_only_to_pick_keys() {
        let t = format!("{}.{}.sig", remit_token::b64e(b"{}"), remit_token::b64e(br#"{"iss":"https://k8s"}"#));
        assert_eq!(peek_issuer(&t).as_deref(), Some("https://k8s"));
        assert_eq!(peek_issuer("garbage"), None);
    }
}
