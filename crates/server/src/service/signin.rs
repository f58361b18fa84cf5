//! Humans signing in through an OpenID provider, and their Remit sessions.
//!
//! Remit never hands out or keeps the provider's tokens: after verifying the ID token it
//! issues its **own** session, an opaque access token (`remit_s.<session>.<secret>`, short
//! lived) and a refresh token (`remit_r.<session>.<secret>`, rotated on every use). Only
//! SHA-256 hashes of the secrets are stored; a presented secret is compared in constant time;
//! every use reads the session from the store, so a revocation holds everywhere at once.

use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::human::{self, External, Human, Session, SignIn};
use remit_core::ids::{HumanId, SessionId};
use remit_core::rules::Liveness;
use subtle::ConstantTimeEq;

use super::Caller;
use crate::app::App;
use crate::error::Error;
use crate::signin::flow::{self, CliLogin, FlowState, Handoff};

/// Prefix of a session's access token.
pub const ACCESS_PREFIX: &str = "remit_s.";
/// Prefix of a session's refresh token.
pub const REFRESH_PREFIX: &str = "remit_r.";

/// A session's tokens, as handed to the human once.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: remit_core::time::UnixMillis,
    pub session: SessionId,
}

/// Where a started sign-in goes next.
pub struct Started {
    /// The provider's authorization URL, with PKCE, `state` and `nonce`.
    pub authorize_url: String,
    /// The value of the browser cookie that binds the sign-in to this browser.
    pub binding: String,
}

/// A finished sign-in.
pub struct Finished {
    pub human: Human,
    pub tokens: SessionTokens,
    /// For `remit login`: the loopback URL to send the browser to, with the hand-off code.
    pub cli_redirect: Option<String>,
}

fn hash(secret: &str) -> String {
    hex::encode(remit_token::sha256(secret.as_bytes()))
}

/// Splits `<prefix><session id>.<secret>`.
fn parse_token<'a>(token: &'a str, prefix: &str) -> Option<(SessionId, &'a str)> {
    let (id, secret) = token.strip_prefix(prefix)?.split_once('.')?;
    Some((SessionId::parse(id).ok()?, secret))
}

impl App {
    fn secret(&self) -> String {
        remit_token::b64e(&self.random.bytes32())
    }

    fn redirect_uri(&self) -> String {
        format!("{}/v1/auth/oidc/callback", self.cfg.public_url())
    }

    /// Starts a sign-in at `provider`: the authorization URL (code flow, PKCE S256, `state`,
    /// `nonce`) and the browser-binding cookie value. With `cli`, the session goes to
    /// `remit login`'s loopback listener at the end.
    pub async fn begin_sign_in(&self, provider: &str, cli: Option<CliLogin>) -> Result<Started, Error> {
        let p =
            self.providers.get(provider).ok_or_else(|| Error::NotFound(format!("provider `{provider}` not found")))?;
        if let Some(c) = &cli {
            flow::check_loopback_redirect(&c.redirect)?;
            if c.challenge.len() != 43 || remit_token::b64d(&c.challenge).is_none_or(|b| b.len() != 32) {
                return Err(Error::Invalid(
                    "`code_challenge` must be an S256 challenge (43 base64url characters)".into(),
                ));
            }
            if c.state.is_empty() || c.state.len() > 256 {
                return Err(Error::Invalid("`state` must be 1-256 characters".into()));
            }
        }
        let meta = p.meta().await?;
        let binding = self.secret();
        let verifier = self.secret();
        let nonce = self.secret();
        let exp = self.clock.now().secs() + i64::try_from(self.cfg.sessions.sign_in_timeout.as_secs()).unwrap_or(600);
        let state = flow::seal_state(
            self.kek(),
            &FlowState {
                provider: provider.into(),
                nonce: nonce.clone(),
                verifier: verifier.clone(),
                binding: hash(&binding),
                exp,
                cli,
            },
        )?;
        let mut url = url::Url::parse(&meta.authorization_endpoint)
            .map_err(|_| Error::Unavailable(format!("provider `{provider}` has an invalid authorization endpoint")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &p.cfg.client_id)
            .append_pair("redirect_uri", &self.redirect_uri())
            .append_pair("scope", &p.cfg.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &flow::s256(&verifier))
            .append_pair("code_challenge_method", "S256");
        if p.offline() {
            // OpenID Connect Core §11: `offline_access` is granted only with consent asked for.
            url.query_pairs_mut().append_pair("prompt", "consent");
        }
        Ok(Started { authorize_url: url.into(), binding })
    }

    /// Finishes a sign-in: checks the state and its browser, trades the code for the ID token,
    /// verifies it, decides who the human is, and starts their session, all audited.
    pub async fn finish_sign_in(&self, code: &str, state: &str, cookie: Option<&str>) -> Result<Finished, Error> {
        let now = self.clock.now();
        let st = flow::open_state(self.kek(), state, cookie, now.secs())?;
        let p =
            self.providers.get(&st.provider).ok_or_else(|| Error::Invalid("the sign-in's provider is gone".into()))?;
        let method = format!("oidc:{}", p.cfg.name);
        let (id_token, idp_refresh) = match p.exchange_code(code, &st.verifier, &self.redirect_uri()).await {
            Ok(t) => t,
            Err(e) => return Err(self.refuse_sign_in(&method, e, None).await),
        };
        let leeway = self.cfg.limits.clock_skew.as_secs();
        let claims = match p.verify(&id_token, &st.nonce, now.secs(), leeway).await {
            Ok(c) => c,
            Err(e) => return Err(self.refuse_sign_in(&method, e, None).await),
        };
        let Some(email) = claims.email.clone() else {
            return Err(self
                .refuse_sign_in(&method, Error::Denied("the provider stated no email for this account".into()), None)
                .await);
        };
        let email_verified = claims.email_verified == Some(true);
        if !email_verified {
            return Err(self
                .refuse_sign_in(
                    &method,
                    Error::Denied("the provider has not verified this account's email".into()),
                    Some(&email),
                )
                .await);
        }
        if !p.domain_allowed(&email) {
            return Err(self
                .refuse_sign_in(&method, Error::Denied("this email's domain may not sign in here".into()), Some(&email))
                .await);
        }
        let groups = p.groups(&claims);
        let facts = SignIn {
            external: External { issuer: claims.iss.clone(), subject: claims.sub.clone() },
            email: email.clone(),
            email_verified,
            display_name: claims.name.clone().unwrap_or_default(),
            roles: p.roles_for(&groups),
            groups,
        };
        let by_external = self.store.humans().by_external(&claims.iss, &claims.sub).await?;
        let by_email = self.store.humans().by_email(&remit_core::rules::human_identity(&email)).await?;
        let decided = human::sign_in(
            by_external.as_ref(),
            by_email.as_ref(),
            &facts,
            HumanId::from_random(self.random.bytes16()),
            now,
        );
        let signed = match decided {
            Ok(s) => s,
            Err(e) => return Err(self.refuse_sign_in(&method, e.into(), Some(&email)).await),
        };
        let read_at = if signed.created { None } else { by_external.or(by_email).map(|h| h.updated_at) };
        let (session, tokens) = self.new_session(&signed.human, &method);
        let actor = human::actor(&signed.human.id, &session.id);
        let mut audit = Vec::new();
        if signed.created {
            audit.push(
                AuditEvent::new(now, actor.clone(), AuditAction::HumanCreate).detail([
                    ("human", signed.human.id.to_string().into()),
                    ("email", signed.human.email.clone().into()),
                ]),
            );
        }
        audit.push(AuditEvent::new(now, actor, AuditAction::SessionCreate).detail([
            ("method", method.clone().into()),
            ("human", signed.human.id.to_string().into()),
            ("email", signed.human.email.clone().into()),
            ("groups", signed.human.groups.clone().into()),
            ("roles", signed.human.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().into()),
        ]));
        let sid = session.id.clone();
        self.store.humans().sign_in(signed.human.clone(), read_at, session, audit).await?;
        if let Some(rt) = idp_refresh.filter(|_| p.offline()) {
            // Fail closed: a session whose renewal at the provider cannot be kept does not start.
            if let Err(e) = self.keep_idp_refresh(&sid, &p.cfg.name, &rt).await {
                let revoke = AuditEvent::new(now, "remit", AuditAction::SessionRevoke)
                    .reason("the provider's refresh token could not be kept");
                let _ = self.store.humans().revoke_session(&sid, now, "sign-in incomplete", revoke).await;
                return Err(e);
            }
        }
        let cli_redirect = match &st.cli {
            None => None,
            Some(c) => {
                let code = flow::seal_handoff(
                    self.kek(),
                    &Handoff {
                        access_token: tokens.access_token.clone(),
                        refresh_token: tokens.refresh_token.clone(),
                        expires_at: tokens.expires_at.0,
                        challenge: c.challenge.clone(),
                        exp: now.secs() + flow::HANDOFF_TTL_SECS,
                    },
                )?;
                let mut u = url::Url::parse(&c.redirect).map_err(|_| Error::Invalid("bad redirect".into()))?;
                u.query_pairs_mut().append_pair("code", &code).append_pair("state", &c.state);
                Some(u.into())
            }
        };
        Ok(Finished { human: signed.human, tokens, cli_redirect })
    }

    /// The provider redirected back with an error (the human cancelled, or the provider
    /// refused them): recorded if the `state` is a real sign-in of this browser.
    pub async fn refuse_provider_error(&self, state: &str, cookie: Option<&str>, error: &str) -> Result<(), Error> {
        let st = flow::open_state(self.kek(), state, cookie, self.clock.now().secs())?;
        let e = Error::Denied(format!("the identity provider answered `{error}`"));
        self.refuse_sign_in(&format!("oidc:{}", st.provider), e, None).await;
        Ok(())
    }

    fn idp_key(&self) -> Result<remit_token::Kek, Error> {
        self.kek().derive("remit-idp-refresh-v1").map_err(|e| Error::Internal(e.to_string()))
    }

    async fn keep_idp_refresh(&self, session: &SessionId, provider: &str, token: &str) -> Result<(), Error> {
        let sealed = self.idp_key()?.seal(session.as_str(), token.as_bytes());
        Ok(self.store.humans().put_idp_refresh(session, provider, sealed, self.clock.now()).await?)
    }

    /// Before a Remit session of an OIDC sign-in is refreshed, the provider renews the sign-in:
    /// `invalid_grant` there deactivates the human (sessions revoked, what they own orphaned);
    /// a provider that cannot be asked means no refresh now (fail closed), nothing more.
    async fn renew_at_provider(&self, h: &Human, session: &SessionId) -> Result<(), Error> {
        let Some((provider, sealed)) = self.store.humans().idp_refresh(session).await? else { return Ok(()) };
        let p = self.providers.get(&provider).ok_or_else(|| {
            Error::Unauthenticated(format!("the provider `{provider}` of this session is no longer configured"))
        })?;
        let token = self
            .idp_key()?
            .open(session.as_str(), &sealed)
            .map_err(|_| Error::Internal("a provider refresh token does not open".into()))?;
        let token =
            String::from_utf8(token).map_err(|_| Error::Internal("a provider refresh token is not text".into()))?;
        match p.refresh(&token).await? {
            crate::signin::Renewal::Renewed(next) => {
                if let Some(next) = next {
                    self.keep_idp_refresh(session, &provider, &next).await?;
                }
                Ok(())
            }
            crate::signin::Renewal::Refused => {
                let now = self.clock.now();
                let why = format!("the identity provider `{provider}` refused to renew the sign-in (invalid_grant)");
                let audit = AuditEvent::new(now, format!("oidc:{provider}"), AuditAction::HumanDeactivate)
                    .reason(why.clone())
                    .detail([("human", h.id.to_string().into())]);
                match self.store.humans().deactivate(&h.id, now, &why, audit).await {
                    Ok(_) | Err(remit_store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                Err(Error::Unauthenticated(format!("{why}: the human is deactivated")))
            }
        }
    }

    /// The periodic reconciliation: every live session holding a provider refresh token is
    /// renewed at its provider (one per human per sweep), so someone the provider no longer
    /// vouches for is deactivated even if they never refresh. Returns how many humans were
    /// checked and how many were deactivated.
    pub async fn reconcile_providers(&self) -> Result<(usize, usize), Error> {
        let now = self.clock.now();
        let (mut checked, mut gone) = (std::collections::HashSet::new(), 0);
        let mut after = None;
        loop {
            let page = self.store.humans().idp_sessions(now, after.clone(), 500).await?;
            let Some((last, _)) = page.last().cloned() else { break };
            for (session, human) in page {
                if !checked.insert(human.clone()) {
                    continue;
                }
                let Some(h) = self.store.humans().get(&human).await? else { continue };
                if h.state == remit_core::human::HumanState::Deactivated {
                    continue;
                }
                match self.renew_at_provider(&h, &session).await {
                    Ok(()) => {}
                    Err(Error::Unauthenticated(m)) if m.contains("invalid_grant") => gone += 1,
                    // An unreachable provider is retried at the next sweep.
                    Err(e) => tracing::warn!(error = %e, human = %h.id, "reconciliation could not ask the provider"),
                }
            }
            after = Some(last);
        }
        Ok((checked.len(), gone))
    }

    /// Records a refused sign-in (after the provider answered: a garbage callback is refused
    /// before, unrecorded) and hands the error back.
    async fn refuse_sign_in(&self, method: &str, e: Error, email: Option<&str>) -> Error {
        let audit = AuditEvent::new(self.clock.now(), method, AuditAction::SessionCreate)
            .outcome(Outcome::Denied)
            .reason(e.to_string())
            .detail([("email", email.unwrap_or_default().into())]);
        if let Err(a) = self.store.audit().append(vec![audit]).await {
            tracing::warn!(error = %a, "could not record a refused sign-in");
        }
        e
    }

    /// A new session for `h`, with its tokens (only their hashes go into the session).
    fn new_session(&self, h: &Human, method: &str) -> (Session, SessionTokens) {
        let now = self.clock.now();
        let id = SessionId::from_random(self.random.bytes16());
        let (access, refresh) = (self.secret(), self.secret());
        let refresh_until = now.plus_secs(self.cfg.sessions.max_age.as_secs());
        let expires_at = now.plus_secs(self.cfg.sessions.access_ttl.as_secs()).min(refresh_until);
        let s = Session {
            id: id.clone(),
            human: h.id.clone(),
            method: method.into(),
            access_hash: hash(&access),
            refresh_hash: hash(&refresh),
            created_at: now,
            expires_at,
            refresh_until,
            revoked_at: None,
            revoke_reason: None,
        };
        let t = SessionTokens {
            access_token: format!("{ACCESS_PREFIX}{id}.{access}"),
            refresh_token: format!("{REFRESH_PREFIX}{id}.{refresh}"),
            expires_at,
            session: id,
        };
        (s, t)
    }

    /// A new session for a human who proved who they are some other way (a local password).
    pub(crate) async fn start_session(&self, h: &Human, method: &str) -> Result<SessionTokens, Error> {
        let now = self.clock.now();
        let (session, tokens) = self.new_session(h, method);
        let bumped = Human { updated_at: now.after(h.updated_at), ..h.clone() };
        let audit = vec![AuditEvent::new(now, human::actor(&h.id, &session.id), AuditAction::SessionCreate).detail([
            ("method", method.into()),
            ("human", h.id.to_string().into()),
            ("email", h.email.clone().into()),
        ])];
        self.store.humans().sign_in(bumped, Some(h.updated_at), session, audit).await?;
        Ok(tokens)
    }

    /// `remit login`'s last step: the hand-off code and the CLI's PKCE verifier.
    pub fn redeem_login(&self, code: &str, verifier: &str) -> Result<SessionTokens, Error> {
        let h = flow::redeem_handoff(self.kek(), code, verifier, self.clock.now().secs())?;
        let session = parse_token(&h.access_token, ACCESS_PREFIX)
            .map(|(id, _)| id)
            .ok_or_else(|| Error::Internal("a hand-off holds a malformed token".into()))?;
        Ok(SessionTokens {
            access_token: h.access_token,
            refresh_token: h.refresh_token,
            expires_at: remit_core::time::UnixMillis(h.expires_at),
            session,
        })
    }

    /// Authenticates a session's access token.
    pub(crate) async fn authenticate_session(&self, bearer: &str) -> Result<Caller, Error> {
        let refused = || Error::Unauthenticated("the session token is not valid".into());
        let (id, secret) = parse_token(bearer, ACCESS_PREFIX).ok_or_else(refused)?;
        let (s, h) = self.store.humans().session(&id).await?.ok_or_else(refused)?;
        if !bool::from(hash(secret).as_bytes().ct_eq(s.access_hash.as_bytes())) {
            return Err(refused());
        }
        match human::session_liveness(&s, &h, self.clock.now()) {
            Liveness::Active => Ok(Caller::Human { human: Box::new(h), session: id }),
            Liveness::Inactive(why) => Err(Error::Unauthenticated(format!("the session is no longer active ({why})"))),
        }
    }

    /// Trades a refresh token for new tokens (both rotated). A refresh token presented a
    /// second time revokes the session: someone else holds a copy.
    pub async fn refresh_session(&self, refresh_token: &str) -> Result<SessionTokens, Error> {
        let refused = || Error::Unauthenticated("the refresh token is not valid".into());
        let (id, secret) = parse_token(refresh_token, REFRESH_PREFIX).ok_or_else(refused)?;
        let (s, h) = self.store.humans().session(&id).await?.ok_or_else(refused)?;
        let now = self.clock.now();
        let current = bool::from(hash(secret).as_bytes().ct_eq(s.refresh_hash.as_bytes()));
        if current && s.revoked_at.is_none() && h.state != remit_core::human::HumanState::Deactivated {
            self.renew_at_provider(&h, &id).await?;
        }
        let (access, refresh) = (self.secret(), self.secret());
        let ttl = self.cfg.sessions.access_ttl.as_secs();
        let actor = human::actor(&h.id, &id);
        match human::refresh(&s, &h, current, hash(&access), hash(&refresh), ttl, now) {
            Ok(next) => {
                let audit = AuditEvent::new(now, actor, AuditAction::SessionRefresh)
                    .detail([("human", h.id.to_string().into()), ("session", id.to_string().into())]);
                self.store.humans().refresh(next.clone(), &s.refresh_hash, audit).await.map_err(|e| match e {
                    remit_store::StoreError::Conflict(_) => refused(),
                    e => e.into(),
                })?;
                Ok(SessionTokens {
                    access_token: format!("{ACCESS_PREFIX}{id}.{access}"),
                    refresh_token: format!("{REFRESH_PREFIX}{id}.{refresh}"),
                    expires_at: next.expires_at,
                    session: id,
                })
            }
            Err(human::RefreshError::Reused) => {
                let audit = AuditEvent::new(now, actor, AuditAction::SessionRevoke)
                    .reason("a refresh token was used twice")
                    .detail([("human", h.id.to_string().into()), ("session", id.to_string().into())]);
                let _ = self.store.humans().revoke_session(&id, now, "refresh token reused", audit).await;
                Err(Error::Unauthenticated("the refresh token was already used; the session is revoked".into()))
            }
            Err(e) => Err(Error::Unauthenticated(e.to_string())),
        }
    }

    /// The signed-in human and their session.
    pub async fn whoami(&self, caller: &Caller) -> Result<(Human, Session), Error> {
        let Caller::Human { session, .. } = caller else {
            return Err(Error::Denied("only a signed-in human has a session".into()));
        };
        let (s, h) =
            self.store.humans().session(session).await?.ok_or_else(|| Error::NotFound("session not found".into()))?;
        Ok((h, s))
    }

    /// Ends the caller's own session.
    pub async fn sign_out(&self, caller: &Caller) -> Result<Session, Error> {
        let Caller::Human { human, session } = caller else {
            return Err(Error::Denied("only a signed-in human has a session to end".into()));
        };
        let now = self.clock.now();
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::SessionRevoke)
            .reason("signed out")
            .detail([("human", human.id.to_string().into()), ("session", session.to_string().into())]);
        Ok(self.store.humans().revoke_session(session, now, "signed out", audit).await?)
    }
}
