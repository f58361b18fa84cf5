//! Separate trust domains for model, tool and data access.
//!
//! A tool is classed `model`, `tool` or `data`. A class given a trust domain in
//! `[trust_domains]` has its own ES256 signing keys (purpose `jwt-<class>`, sealed and
//! rotated like the installation's JWT keys): its tools' per-tool credentials are signed by
//! them and name the trust domain (`remit.trust_domain`), and its keys are published on their
//! own (`/trust-domains/<td>/jwks.json`, `/trust-domains/<td>/spiffe-bundle`, and the
//! Workload API's JWT bundles) and never in the installation's JWKS. A relying party
//! configured with one class's keys therefore accepts none of another path's credentials,
//! nor any instance or task token. Remit itself accepts a class key's signature only on a
//! per-tool credential of a tool of that class (introspection, revocation); its own API
//! never takes one.

use std::collections::BTreeMap;
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::TrustDomain;
use remit_core::tool::ToolClass;
use remit_store::{KeyPurpose, StoreError};
use remit_token::{Claims, Keyring, TokenError, jwt};

use crate::app::{App, new_stored_key};
use crate::config::Config;
use crate::error::Error;

/// Each configured class's keyring.
pub type ClassKeys = BTreeMap<ToolClass, Arc<Keyring>>;

/// The configured class trust domains: each a valid trust domain name, distinct from the
/// installation's, from each other and from every federated one.
pub fn configured(cfg: &Config, main: &TrustDomain) -> Result<BTreeMap<ToolClass, TrustDomain>, String> {
    let mut out = BTreeMap::new();
    for (class, name) in cfg.trust_domains.configured() {
        let td = TrustDomain::parse(name).map_err(|e| format!("`{class}`: {e}"))?;
        if td == *main {
            return Err(format!("`{class}`: `{td}` is the installation's own trust domain; name another"));
        }
        if let Some((other, _)) = out.iter().find(|(_, t)| **t == td) {
            return Err(format!("`{class}` and `{other}` name the same trust domain `{td}`"));
        }
        if cfg.federation.iter().any(|f| f.trust_domain == td.as_str()) {
            return Err(format!("`{class}`: `{td}` is a federated trust domain"));
        }
        out.insert(class, td);
    }
    Ok(out)
}

impl App {
    /// The configured classes' keyrings.
    pub fn class_keys(&self) -> Arc<ClassKeys> {
        self.class_keys.read().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The trust domain credentials for tools of `class` come from.
    pub fn class_trust_domain(&self, class: ToolClass) -> &TrustDomain {
        self.class_domains.get(&class).unwrap_or(&self.trust_domain)
    }

    /// The class whose trust domain `td` is, if it is one (not the installation's).
    pub fn class_of_trust_domain(&self, td: &str) -> Option<ToolClass> {
        self.class_domains.iter().find(|(_, t)| t.as_str() == td).map(|(c, _)| *c)
    }

    /// The keyring that signs credentials for tools of `class`: the class's own when it has a
    /// trust domain, else the installation's.
    pub fn credential_keyring(&self, class: ToolClass) -> Result<Arc<Keyring>, Error> {
        if !self.class_domains.contains_key(&class) {
            return Ok(self.keyring());
        }
        self.class_keys()
            .get(&class)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("the `{class}` trust domain has no signing key yet")))
    }

    /// Creates the signing key of each configured class that has none (first start with the
    /// class configured); another replica doing the same first is fine.
    pub async fn ensure_class_keys(&self) -> Result<(), Error> {
        let have = self.class_keys();
        let mut added = false;
        for (class, td) in &self.class_domains {
            if have.contains_key(class) {
                continue;
            }
            let now = self.clock.now();
            let key = new_stored_key(self.kek(), KeyPurpose::class_jwt(*class), now).map_err(Error::Internal)?;
            let audit = AuditEvent::new(now, "remit", AuditAction::KeyRotate)
                .reason(format!("created the signing key of the `{class}` trust domain `{td}`"))
                .detail([("new_kid", key.kid.clone().into()), ("purpose", key.purpose.as_str().into())]);
            match self.store.keys().add(key, audit).await {
                Ok(_) | Err(StoreError::Conflict(_)) => added = true,
                Err(e) => return Err(e.into()),
            }
        }
        if added { self.reload_keys().await } else { Ok(()) }
    }

    /// Verifies a Remit-issued token signed by the installation's keys or by a class's keys;
    /// returns its claims and the class whose keys signed it (`None`: the installation's).
    /// Only introspection and revocation take class signatures, and only on per-tool
    /// credentials; see [`App::class_signature_fits`].
    pub async fn verify_any_jwt(&self, token: &str) -> Result<(Claims, Option<ToolClass>), TokenError> {
        // The class keyrings first (a kid they do not hold is refused before any signature
        // work), so a class-signed token never makes the installation's keys reload.
        let v = self.validation(None, None);
        for (class, ring) in self.class_keys().iter() {
            match jwt::verify(&**ring, token, v) {
                Err(TokenError::UnknownKey) => continue,
                r => return r.map(|c| (c, Some(*class))),
            }
        }
        self.verify_jwt(token, None, None).await.map(|c| (c, None))
    }

    /// Whether a token whose signature came from `signed_by` (a class's keys, or the
    /// installation's) fits what it claims: a per-tool credential for a tool of `class` must be
    /// signed in that class's current trust domain and name it; anything else must be signed
    /// by the installation's keys.
    pub fn class_signature_fits(
        &self,
        claims: &Claims,
        signed_by: Option<ToolClass>,
        class: Option<ToolClass>,
    ) -> bool {
        let Some(class) = class else { return signed_by.is_none() };
        let expected = self.class_domains.contains_key(&class).then_some(class);
        let named = claims.remit.trust_domain.as_deref().unwrap_or(self.trust_domain.as_str());
        signed_by == expected && named == self.class_trust_domain(class).as_str()
    }

    /// Rotates a class's signing key: the old one stays published until every credential it
    /// signed (an hour at most) has expired.
    pub async fn rotate_class_key(&self, caller: &super::Caller, class: ToolClass) -> Result<(String, u64), Error> {
        self.allow(
            caller,
            remit_policy::admin::AdminAction::KeysRotate,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        let Some(td) = self.class_domains.get(&class) else {
            return Err(Error::Invalid(format!("the `{class}` class has no trust domain of its own")));
        };
        let now = self.clock.now();
        let purpose = KeyPurpose::class_jwt(class);
        let key = new_stored_key(self.kek(), purpose, now).map_err(Error::Internal)?;
        let kid = key.kid.clone();
        let old = self
            .class_keys()
            .get(&class)
            .map(|r| r.signer().kid().to_owned())
            .ok_or_else(|| Error::Unavailable(format!("the `{class}` trust domain has no signing key yet")))?;
        let lasts =
            std::time::Duration::from_secs(remit_core::tool::HARD_MAX_TOOL_TTL_SECS) + self.cfg.limits.clock_skew;
        let old_row = self.retiring(&old, purpose, now.plus_secs(lasts.as_secs())).await?;
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::KeyRotate).detail([
            ("new_kid", kid.clone().into()),
            ("old_kid", old.into()),
            ("purpose", purpose.as_str().into()),
            ("trust_domain", td.as_str().into()),
        ]);
        let seq = self.store.keys().rotate(key, old_row, audit).await?;
        self.reload_keys().await?;
        Ok((kid, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_trust_domains_are_distinct_and_not_the_installations() {
        let main = TrustDomain::parse("remit.local").unwrap();
        let mut cfg = Config::default();
        assert!(configured(&cfg, &main).unwrap().is_empty());
        cfg.trust_domains.data = Some("data.remit.local".into());
        cfg.trust_domains.model = Some("models.remit.local".into());
        let got = configured(&cfg, &main).unwrap();
        assert_eq!(got[&ToolClass::Data].as_str(), "data.remit.local");
        assert!(!got.contains_key(&ToolClass::Tool));
        cfg.trust_domains.tool = Some("remit.local".into());
        assert!(configured(&cfg, &main).unwrap_err().contains("the installation's own"));
        cfg.trust_domains.tool = Some("data.remit.local".into());
        assert!(configured(&cfg, &main).unwrap_err().contains("the same trust domain"));
        cfg.trust_domains.tool = Some("Not A Domain".into());
        assert!(configured(&cfg, &main).is_err());
        cfg.trust_domains.tool = None;
        cfg.federation.push(crate::config::FederationConfig {
            trust_domain: "data.remit.local".into(),
            bundle_endpoint: "https://data.example/bundle".into(),
            ca_file: None,
        });
        assert!(configured(&cfg, &main).unwrap_err().contains("federated"));
    }
}
