//! Local humans, for small setups without an identity provider: created by an admin with a
//! password (hashed with argon2id, memory-hard; verified off the async threads, at most two at
//! a time), an optional TOTP second factor (RFC 6238; the secret sealed under a KEK-derived
//! key, a code accepted once), and sign-in that locks an account after repeated failures.
//! An unknown email, a wrong password, a wrong code and a locked account all get the same
//! answer (and an unknown email costs a hash like a known one), so sign-in says nothing about
//! who exists.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use remit_core::audit::{AuditAction, AuditEvent, Outcome};
use remit_core::human::{self, Human, HumanState, LocalCredential, Lockout, Role};
use remit_core::ids::HumanId;
use remit_policy::admin::{AdminAction, AdminTarget};
use remit_token::totp;

use super::Caller;
use super::signin::SessionTokens;
use crate::app::App;
use crate::error::Error;

/// Failures that lock an account, and for how long.
const LOCKOUT: Lockout = Lockout { max_failures: 5, lock_secs: 15 * 60 };
/// The purpose a TOTP secret is sealed for.
const TOTP_PURPOSE: &str = "remit-totp-secret-v1";

/// Argon2id with the OWASP-recommended minimum (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// At most two password hashes run at once (each takes ~19 MiB and tens of milliseconds).
fn hashing() -> &'static tokio::sync::Semaphore {
    static S: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    S.get_or_init(|| tokio::sync::Semaphore::new(2))
}

async fn hash_password(password: String, salt: [u8; 16]) -> Result<String, Error> {
    let _permit = hashing().acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(e.to_string()))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn password_matches(password: String, phc: String) -> Result<bool, Error> {
    let _permit = hashing().acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc).map_err(|e| Error::Internal(format!("a stored password hash: {e}")))?;
        Ok(argon2().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// The hash an unknown email is checked against, so it costs what a known one does.
fn decoy() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$cmVtaXQtZGVjb3ktc2FsdA$Ij2P1p7D8bmV0kbTnmVJ7Uj4r7o0sOtB3JHy5jkRhuM"
}

/// What a TOTP enrolment hands the human once.
pub struct TotpEnrolment {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub uri: String,
}

impl App {
    fn totp_key(&self) -> Result<remit_token::Kek, Error> {
        self.kek().derive(TOTP_PURPOSE).map_err(|e| Error::Internal(e.to_string()))
    }

    /// An admin creates a local human with a password.
    pub async fn create_local_human(
        &self,
        caller: &Caller,
        email: &str,
        display_name: &str,
        roles: Vec<Role>,
        password: &str,
    ) -> Result<Human, Error> {
        self.allow(caller, AdminAction::HumanManage, AdminTarget::Installation).await?;
        human::check_password(password)?;
        let now = self.clock.now();
        let h = human::new_human(
            HumanId::from_random(self.random.bytes16()),
            email,
            display_name,
            HumanState::Active,
            roles,
            vec![],
            now,
        )?;
        let salt = self.random.bytes16();
        let c = LocalCredential {
            human: h.id.clone(),
            password_hash: hash_password(password.to_owned(), salt).await?,
            totp: None,
            last_totp_step: None,
            failures: 0,
            locked_until: None,
            updated_at: now,
        };
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::HumanCreate).detail([
            ("human", h.id.to_string().into()),
            ("email", h.email.clone().into()),
            ("method", "local".into()),
            ("roles", h.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().into()),
        ]);
        self.store.humans().create_local(h.clone(), c, audit).await?;
        Ok(h)
    }

    /// A local human signs in with their password (and a TOTP code once enrolled).
    pub async fn local_sign_in(
        &self,
        email: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<(Human, SessionTokens), Error> {
        let refused =
            || Error::Unauthenticated("the email, password or code is not right, or the account is locked".into());
        let email = remit_core::rules::human_identity(email);
        let found = match self.store.humans().by_email(&email).await? {
            Some(h) => self.store.humans().local_credential(&h.id).await?.map(|c| (h, c)),
            None => None,
        };
        let Some((h, c)) = found else {
            let _ = password_matches(password.to_owned(), decoy().to_owned()).await;
            return Err(refused());
        };
        let now = self.clock.now();
        let record_failure = |why: &'static str| {
            let next = human::after_failure(&c, LOCKOUT, now);
            let audit = AuditEvent::new(now, "local", AuditAction::SessionCreate)
                .outcome(Outcome::Denied)
                .reason(why)
                .detail([("human", h.id.to_string().into()), ("locked", next.locked_until.is_some().into())]);
            (next, audit)
        };
        if human::locked(&c, now) || h.state == HumanState::Deactivated {
            let audit = AuditEvent::new(now, "local", AuditAction::SessionCreate)
                .outcome(Outcome::Denied)
                .reason(if h.state == HumanState::Deactivated { "deactivated" } else { "account locked" })
                .detail([("human", h.id.to_string().into())]);
            let _ = self.store.audit().append(vec![audit]).await;
            return Err(refused());
        }
        let mut ok = password_matches(password.to_owned(), c.password_hash.clone()).await?;
        let mut step = None;
        if ok && let Some((sealed, true)) = &c.totp {
            let secret = self
                .totp_key()?
                .open(TOTP_PURPOSE, sealed)
                .map_err(|_| Error::Internal("a TOTP secret does not open".into()))?;
            step = code.and_then(|code| totp::verify(&secret, code, now.secs(), c.last_totp_step));
            ok = step.is_some();
        }
        if !ok {
            let (next, audit) = record_failure("wrong password or code");
            // A lost race with another attempt only means this failure is not counted twice.
            let _ = self.store.humans().put_local_credential(next, c.updated_at, Some(audit)).await;
            return Err(refused());
        }
        let next = human::after_success(&c, step, now.after(c.updated_at));
        self.store.humans().put_local_credential(next, c.updated_at, None).await.map_err(|_| refused())?;
        let tokens = self.start_session(&h, "local").await?;
        Ok((h, tokens))
    }

    /// Starts a TOTP enrolment for the signed-in local human (confirmed by a first code).
    pub async fn enroll_totp(&self, caller: &Caller) -> Result<TotpEnrolment, Error> {
        let Caller::Human { human, .. } = caller else {
            return Err(Error::Denied("only a signed-in human enrols a second factor".into()));
        };
        let c = self.local_of(&human.id).await?;
        if matches!(c.totp, Some((_, true))) {
            return Err(Error::Conflict("a second factor is already enrolled".into()));
        }
        let secret: [u8; 20] = self.random.bytes32()[..20].try_into().map_err(|_| Error::Internal("secret".into()))?;
        let sealed = self.totp_key()?.seal(TOTP_PURPOSE, &secret);
        let now = self.clock.now();
        let next = LocalCredential { totp: Some((sealed, false)), updated_at: now.after(c.updated_at), ..c.clone() };
        self.store.humans().put_local_credential(next, c.updated_at, None).await?;
        let b32 = totp::base32(&secret);
        let label =
            url::form_urlencoded::byte_serialize(format!("Remit:{}", human.email).as_bytes()).collect::<String>();
        Ok(TotpEnrolment {
            uri: format!("otpauth://totp/{label}?secret={b32}&issuer=Remit&algorithm=SHA1&digits=6&period=30"),
            secret: b32,
        })
    }

    /// Confirms an enrolment with a code from the authenticator: from now on sign-in needs one.
    pub async fn confirm_totp(&self, caller: &Caller, code: &str) -> Result<(), Error> {
        let Caller::Human { human, .. } = caller else {
            return Err(Error::Denied("only a signed-in human enrols a second factor".into()));
        };
        let c = self.local_of(&human.id).await?;
        let Some((sealed, false)) = &c.totp else {
            return Err(Error::Conflict("no enrolment is waiting for a code".into()));
        };
        let now = self.clock.now();
        let secret = self
            .totp_key()?
            .open(TOTP_PURPOSE, sealed)
            .map_err(|_| Error::Internal("a TOTP secret does not open".into()))?;
        let step = totp::verify(&secret, code, now.secs(), c.last_totp_step)
            .ok_or_else(|| Error::Invalid("the code does not match: check the authenticator's clock".into()))?;
        let next = LocalCredential {
            totp: Some((sealed.clone(), true)),
            last_totp_step: Some(step),
            updated_at: now.after(c.updated_at),
            ..c.clone()
        };
        let audit = AuditEvent::new(now, caller.actor(), AuditAction::HumanUpdate)
            .reason("second factor enrolled")
            .detail([("human", human.id.to_string().into())]);
        Ok(self.store.humans().put_local_credential(next, c.updated_at, Some(audit)).await?)
    }

    async fn local_of(&self, h: &HumanId) -> Result<LocalCredential, Error> {
        self.store
            .humans()
            .local_credential(h)
            .await?
            .ok_or_else(|| Error::Conflict("this human signs in through an identity provider".into()))
    }
}
