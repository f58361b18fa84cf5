//! The operations behind every API call, one file per area. Each takes the authenticated
//! [`Caller`], checks what it may do first, and then makes one call into the core and the
//! store. No HTTP types appear here.

pub mod admin;
pub mod approval_watch;
pub mod audit;
pub mod decisions;
pub mod domains;
pub mod dpop;
pub mod exchange;
pub mod federation;
pub mod grants;
pub mod humans;
pub mod leases;
pub mod local;
pub mod renewal;
pub mod scim;
pub mod secrets;
pub mod signin;
pub mod status;
pub mod tasks;
pub mod tokens;
pub mod tools;
pub mod watch;
pub mod workload;
pub mod x509;

pub use crate::caller::{Caller, clean_operator};
pub use crate::error::Error;

use std::sync::Arc;

use remit_core::ids::{SpiffeId, Subject};
use remit_core::rules::Liveness;
use remit_token::jwt::{self, Validation};
use remit_token::{Claims, SvidKind, TokenError};

use crate::app::App;
use crate::init::ADMIN_TOKEN_PREFIX;

impl App {
    /// Verifies a JWT-SVID's signature and times; re-reads keys once if the kid is unknown
    /// (another replica may have rotated).
    pub(crate) fn validation<'a>(&'a self, audience: Option<&'a str>, kind: Option<SvidKind>) -> Validation<'a> {
        Validation {
            now: self.clock.now().secs(),
            leeway: i64::try_from(self.cfg.limits.clock_skew.as_secs()).unwrap_or(30),
            audience,
            issuer: &self.issuer,
            kind,
        }
    }

    pub async fn verify_jwt(
        &self,
        token: &str,
        audience: Option<&str>,
        kind: Option<SvidKind>,
    ) -> Result<Claims, TokenError> {
        let v = self.validation(audience, kind);
        let key = remit_token::sha256(token.as_bytes());
        let cached = self.verified.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(c) = cached {
            jwt::check_claims(&c, v)?;
            return Ok((*c).clone());
        }
        let claims = match jwt::verify(&*self.keyring(), token, v) {
            Err(TokenError::UnknownKey) if self.maybe_reload_keys().await => jwt::verify(&*self.keyring(), token, v),
            r => r,
        }?;
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= crate::app::VERIFIED_CACHE_MAX {
                m.clear();
            }
            m.insert(key, Arc::new(claims.clone()));
        }
        Ok(claims)
    }

    /// A live instance as the caller (its token or X.509-SVID already verified).
    async fn instance_caller(
        &self,
        agent: remit_core::ids::AgentName,
        instance: remit_core::ids::InstanceId,
        spiffe_id: String,
    ) -> Result<Caller, Error> {
        let inst = self.store.identity().instance(&instance).await?;
        let ag = self.store.identity().agent(&agent).await?;
        match (inst, ag) {
            (Some(i), Some(a))
                if i.agent == agent
                    && remit_core::rules::instance_liveness(&i, &a, self.clock.now()) == Liveness::Active =>
            {
                Ok(Caller::Instance { id: instance, agent, spiffe_id, snapshot: Box::new((i, a)) })
            }
            _ => Err(Error::Unauthenticated("the instance is no longer active".into())),
        }
    }

    /// Authenticates the X.509-SVID a mutual-TLS client presented (its chain to this trust
    /// domain's CA already verified in the handshake): an agent instance of this trust domain,
    /// if still live. Revoking the instance refuses its certificate at once, however long the
    /// certificate itself is valid.
    pub async fn authenticate_svid(&self, spiffe_id: &str) -> Result<Caller, Error> {
        let refused = || Error::Unauthenticated("an X.509-SVID authenticates a live agent instance only".into());
        let id = SpiffeId::parse(spiffe_id).map_err(|_| refused())?;
        if id.trust_domain() != self.trust_domain.as_str() {
            return Err(refused());
        }
        match id.subject() {
            Some(Subject::Instance { agent, instance }) => self.instance_caller(agent, instance, id.to_string()).await,
            _ => Err(refused()),
        }
    }

    /// Parses and checks a token's subject against our trust domain.
    pub fn subject_of(&self, claims: &Claims) -> Option<Subject> {
        let id = SpiffeId::parse(&claims.sub).ok()?;
        if id.trust_domain() != self.trust_domain.as_str() {
            return None;
        }
        let s = id.subject()?;
        let kind_ok = matches!(
            (&s, claims.remit.kind),
            (Subject::Task { .. }, SvidKind::Task) | (Subject::Instance { .. }, SvidKind::Instance)
        );
        kind_ok.then_some(s)
    }

    /// Authenticates a bearer credential: the admin credential, a live instance token, or a
    /// live task token (for its own task's decisions, approvals and state), either token with
    /// an audience that includes Remit's own.
    pub async fn authenticate(&self, bearer: &str, operator: Option<&str>) -> Result<Caller, Error> {
        if bearer.starts_with(signin::ACCESS_PREFIX) {
            return self.authenticate_session(bearer).await;
        }
        if bearer.starts_with(ADMIN_TOKEN_PREFIX) {
            return if self.is_admin_credential(bearer) {
                Ok(Caller::Admin { operator: clean_operator(operator) })
            } else {
                Err(Error::Unauthenticated("the admin credential is not valid".into()))
            };
        }
        let claims = self.verify_jwt(bearer, Some(&self.cfg.audience), None).await?;
        let now = self.clock.now();
        match self.subject_of(&claims) {
            Some(Subject::Instance { agent, instance }) => self.instance_caller(agent, instance, claims.sub).await,
            Some(Subject::Task { task, .. }) if claims.remit.task.as_deref() == Some(task.as_str()) => {
                match self.store.identity().task_snapshot(&task).await? {
                    Some(s)
                        if remit_core::rules::task_liveness(
                            &s.task,
                            &s.workflow,
                            &s.agent,
                            s.instance.as_ref(),
                            now,
                        ) == Liveness::Active =>
                    {
                        let binding = claims
                            .cnf
                            .map(|c| Box::new(crate::caller::Binding { jti: claims.jti.clone(), jkt: c.jkt }));
                        Ok(Caller::Task { id: task, spiffe_id: claims.sub, snapshot: Box::new(s), binding })
                    }
                    _ => Err(Error::Unauthenticated("the task token is no longer active".into())),
                }
            }
            _ => Err(Error::Unauthenticated(
                "only the admin credential, an agent instance token or a task token may call this API".into(),
            )),
        }
    }

    /// A fresh `jti`.
    pub(crate) fn new_jti(&self) -> String {
        hex::encode(self.random.bytes16())
    }
}
