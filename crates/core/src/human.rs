//! Humans and their sessions: who a person is to Remit, the roles they hold, and the rules
//! for signing in, refreshing and ending a session. Pure: the store applies what these decide.
//!
//! A human is known by a [`HumanId`]; the email is an attribute (normalised by
//! [`crate::rules::human_identity`], unique among humans). A record is **unverified** while it
//! only stands for an owner someone typed in; it becomes **active** when that person signs in
//! (through an OpenID provider whose `email_verified` says the address is theirs) or is
//! provisioned; **deactivated** is final for sessions (a deactivated human cannot sign in, and
//! deactivating revokes every session in the same transaction).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::DomainError;
use crate::ids::{HumanId, SessionId};
use crate::rules::Liveness;
use crate::time::UnixMillis;

/// Most groups kept for one human (more is refused, never cut).
pub const MAX_GROUPS: usize = 64;
/// Longest group name kept.
pub const MAX_GROUP_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HumanState {
    /// Named as an owner (or provisioned) but has never signed in.
    Unverified,
    Active,
    Deactivated,
}

impl HumanState {
    pub fn as_str(self) -> &'static str {
        match self {
            HumanState::Unverified => "unverified",
            HumanState::Active => "active",
            HumanState::Deactivated => "deactivated",
        }
    }
}

impl FromStr for HumanState {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        match s {
            "unverified" => Ok(HumanState::Unverified),
            "active" => Ok(HumanState::Active),
            "deactivated" => Ok(HumanState::Deactivated),
            o => {
                Err(DomainError::invalid("human state", format!("`{o}` is not one of: unverified active deactivated")))
            }
        }
    }
}

/// What a human may do in Remit's own API, decided by Remit's built-in policy over these roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including managing humans and pushing policy.
    Admin,
    /// May pull and release kill switches and read state.
    Operator,
    /// May decide approval requests (never their own).
    Approver,
    /// Read-only: the audit log, reports and state.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Approver, Role::Auditor];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            DomainError::invalid("role", format!("`{s}` is not one of: admin operator approver auditor"))
        })
    }
}

/// The identity a human signed in with at an OpenID provider: the provider's issuer and
/// the `sub` it gave them (stable, unlike an email).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    pub issuer: String,
    pub subject: String,
}

/// A person known to Remit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Human {
    pub id: HumanId,
    /// Normalised ([`crate::rules::human_identity`]) and unique among humans.
    pub email: String,
    pub display_name: String,
    pub state: HumanState,
    /// Sorted, without repeats.
    pub roles: Vec<Role>,
    /// The groups the provider (or provisioning) says they are in; sorted, without repeats.
    pub groups: Vec<String>,
    pub external: Option<External>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub deactivated_at: Option<UnixMillis>,
}

/// One signed-in session. Only SHA-256 hashes of its two secrets are stored: the access
/// secret (short-lived) and the refresh secret (rotated on every refresh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub human: HumanId,
    /// How the human signed in: `oidc:<provider>` or `local`.
    pub method: String,
    pub access_hash: String,
    pub refresh_hash: String,
    pub created_at: UnixMillis,
    /// When the access secret stops working (a refresh moves it).
    pub expires_at: UnixMillis,
    /// When the session ends whatever refreshes happen.
    pub refresh_until: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
    pub revoke_reason: Option<String>,
}

/// Makes a new human record: the email must be an address, the name short printable text.
pub fn new_human(
    id: HumanId,
    email: &str,
    display_name: &str,
    state: HumanState,
    roles: Vec<Role>,
    groups: Vec<String>,
    now: UnixMillis,
) -> Result<Human, DomainError> {
    let email = crate::rules::human_identity(email);
    crate::rules::check_owner(&email, &crate::rules::Limits::default())?;
    check_name(display_name)?;
    Ok(Human {
        id,
        email,
        display_name: display_name.trim().to_owned(),
        state,
        roles: sorted(roles),
        groups: check_groups(groups)?,
        external: None,
        created_at: now,
        updated_at: now,
        deactivated_at: None,
    })
}

fn check_name(n: &str) -> Result<(), DomainError> {
    if n.len() > 256 || n.chars().any(char::is_control) {
        return Err(DomainError::invalid("display name", "must be at most 256 bytes of printable text"));
    }
    Ok(())
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

/// Validates and normalises a group list (sorted, without repeats).
pub fn check_groups(groups: Vec<String>) -> Result<Vec<String>, DomainError> {
    if groups.len() > MAX_GROUPS {
        return Err(DomainError::invalid("groups", format!("at most {MAX_GROUPS} groups are kept for one human")));
    }
    if groups.iter().any(|g| g.is_empty() || g.len() > MAX_GROUP_LEN || g.chars().any(char::is_control)) {
        return Err(DomainError::invalid("groups", format!("each group is 1-{MAX_GROUP_LEN} bytes of printable text")));
    }
    Ok(sorted(groups))
}

/// What a provider said about the person signing in (already verified: signature, issuer,
/// audience, nonce) and the roles Remit's mapping gives their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub external: External,
    pub email: String,
    pub email_verified: bool,
    pub display_name: String,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
}

/// The record a sign-in leaves behind, and whether it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub human: Human,
    pub created: bool,
}

/// Decides who a sign-in is. `by_external` is the human already linked to this provider
/// subject; `by_email` the human holding the address the provider states.
///
/// - A linked human signs in (their email, name, groups and roles follow the provider).
/// - Otherwise the address may claim an **unlinked** record (an owner placeholder or a
///   provisioned human) only if the provider says it verified the address; a record already
///   linked to another provider subject is never taken over.
/// - Otherwise a new active human is made with `new_id`.
///
/// A deactivated human never signs in.
pub fn sign_in(
    by_external: Option<&Human>,
    by_email: Option<&Human>,
    s: &SignIn,
    new_id: HumanId,
    now: UnixMillis,
) -> Result<SignedIn, DomainError> {
    let email = crate::rules::human_identity(&s.email);
    crate::rules::check_owner(&email, &crate::rules::Limits::default())?;
    check_name(&s.display_name)?;
    let groups = check_groups(s.groups.clone())?;
    let update = |h: &Human| -> Result<Human, DomainError> {
        if h.state == HumanState::Deactivated {
            return Err(DomainError::HumanDeactivated(h.email.clone()));
        }
        Ok(Human {
            email: email.clone(),
            display_name: if s.display_name.trim().is_empty() {
                h.display_name.clone()
            } else {
                s.display_name.trim().into()
            },
            state: HumanState::Active,
            roles: sorted(s.roles.clone()),
            groups: groups.clone(),
            external: Some(s.external.clone()),
            updated_at: now,
            ..h.clone()
        })
    };
    if let Some(h) = by_external {
        // Their address moved onto one another human holds: refuse rather than merge two people.
        if let Some(other) = by_email
            && other.id != h.id
        {
            return Err(DomainError::EmailTaken(email));
        }
        return Ok(SignedIn { human: update(h)?, created: false });
    }
    if let Some(h) = by_email {
        if h.external.is_some() || !s.email_verified {
            return Err(DomainError::EmailTaken(email));
        }
        return Ok(SignedIn { human: update(h)?, created: false });
    }
    let mut h = new_human(new_id, &email, &s.display_name, HumanState::Active, s.roles.clone(), groups, now)?;
    h.external = Some(s.external.clone());
    Ok(SignedIn { human: h, created: true })
}

/// Whether a session's access secret may act now.
pub fn session_liveness(s: &Session, h: &Human, now: UnixMillis) -> Liveness {
    if h.state == HumanState::Deactivated {
        Liveness::Inactive("human deactivated")
    } else if s.revoked_at.is_some() {
        Liveness::Inactive("session revoked")
    } else if now >= s.expires_at || now >= s.refresh_until {
        Liveness::Inactive("session expired")
    } else {
        Liveness::Active
    }
}

/// Why a refresh is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("the session was revoked")]
    Revoked,
    #[error("the session has ended; sign in again")]
    Ended,
    #[error("the human is deactivated")]
    Deactivated,
    /// An old refresh secret came back: someone else holds a copy; the session is revoked.
    #[error("the refresh secret was already used; the session is revoked")]
    Reused,
}

/// Rotates a session's secrets: new hashes and a new access expiry, never past `refresh_until`.
/// `presented_is_current` is whether the presented refresh secret's hash equals the stored one
/// (compared by the caller in constant time).
pub fn refresh(
    s: &Session,
    h: &Human,
    presented_is_current: bool,
    access_hash: String,
    refresh_hash: String,
    access_ttl_secs: u64,
    now: UnixMillis,
) -> Result<Session, RefreshError> {
    if h.state == HumanState::Deactivated {
        return Err(RefreshError::Deactivated);
    }
    if s.revoked_at.is_some() {
        return Err(RefreshError::Revoked);
    }
    if now >= s.refresh_until {
        return Err(RefreshError::Ended);
    }
    if !presented_is_current {
        return Err(RefreshError::Reused);
    }
    Ok(Session {
        access_hash,
        refresh_hash,
        expires_at: now.plus_secs(access_ttl_secs).min(s.refresh_until),
        ..s.clone()
    })
}

/// Who a human is in audit records: their id and the session acting.
pub fn actor(human: &HumanId, session: &SessionId) -> String {
    format!("human:{human}/session:{session}")
}

/// A local human's credential (for setups without an identity provider): an argon2id hash of
/// their password, their TOTP secret (sealed under the KEK) once enrolled, and the failed
/// attempts that lock the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCredential {
    pub human: HumanId,
    /// The PHC string (`$argon2id$…`).
    pub password_hash: String,
    /// The sealed TOTP secret, and whether the human confirmed it with a code (only then is a
    /// code required at sign-in).
    pub totp: Option<(Vec<u8>, bool)>,
    /// The last TOTP step a code was accepted for (a code works once).
    pub last_totp_step: Option<u64>,
    /// Failed sign-ins since the last success.
    pub failures: u32,
    pub locked_until: Option<UnixMillis>,
    pub updated_at: UnixMillis,
}

/// How many failures lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub max_failures: u32,
    pub lock_secs: u64,
}

/// Whether the account refuses sign-ins now.
pub fn locked(c: &LocalCredential, now: UnixMillis) -> bool {
    c.locked_until.is_some_and(|t| now < t)
}

/// The credential after a failed sign-in: one more failure, locked for `lock_secs` once they
/// reach `max_failures` (and the count starts again after the lock).
pub fn after_failure(c: &LocalCredential, l: Lockout, now: UnixMillis) -> LocalCredential {
    let failures = c.failures.saturating_add(1);
    let (failures, locked_until) =
        if failures >= l.max_failures { (0, Some(now.plus_secs(l.lock_secs))) } else { (failures, c.locked_until) };
    LocalCredential { failures, locked_until, updated_at: now, ..c.clone() }
}

/// The credential after a successful sign-in (with the TOTP step used, if any).
pub fn after_success(c: &LocalCredential, totp_step: Option<u64>, now: UnixMillis) -> LocalCredential {
    LocalCredential {
        failures: 0,
        locked_until: None,
        last_totp_step: totp_step.or(c.last_totp_step),
        updated_at: now,
        ..c.clone()
    }
}

/// Refuses a password shorter than 12 characters, longer than 1024 bytes, or with control
/// characters.
pub fn check_password(p: &str) -> Result<(), DomainError> {
    if p.chars().count() < 12 || p.len() > 1024 || p.chars().any(char::is_control) {
        return Err(DomainError::invalid("password", "must be 12 to 1024 characters, without control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ext(sub: &str) -> External {
        External { issuer: "https://idp.example".into(), subject: sub.into() }
    }
    fn facts(sub: &str, email: &str, verified: bool) -> SignIn {
        SignIn {
            external: ext(sub),
            email: email.into(),
            email_verified: verified,
            display_name: "Alice".into(),
            groups: vec!["sre".into(), "eng".into(), "sre".into()],
            roles: vec![Role::Operator, Role::Admin],
        }
    }
    fn id(n: u8) -> HumanId {
        HumanId::from_random([n; 16])
    }
    const T: UnixMillis = UnixMillis(1_000_000);

    #[test]
    fn a_first_sign_in_makes_an_active_human() {
        let s = sign_in(None, None, &facts("1", "Alice@Example.com ", true), id(1), T).unwrap();
        assert!(s.created);
        assert_eq!(s.human.email, "alice@example.com");
        assert_eq!(s.human.state, HumanState::Active);
        assert_eq!(s.human.groups, vec!["eng", "sre"]);
        assert_eq!(s.human.roles, vec![Role::Admin, Role::Operator]);
    }

    #[test]
    fn an_owner_placeholder_is_claimed_only_with_a_verified_address() {
        let placeholder = new_human(id(2), "alice@example.com", "", HumanState::Unverified, vec![], vec![], T).unwrap();
        let e = sign_in(None, Some(&placeholder), &facts("1", "alice@example.com", false), id(3), T).unwrap_err();
        assert_eq!(e, DomainError::EmailTaken("alice@example.com".into()));
        let s = sign_in(None, Some(&placeholder), &facts("1", "alice@example.com", true), id(3), T).unwrap();
        assert!(!s.created);
        assert_eq!(s.human.id, id(2));
        assert_eq!(s.human.external, Some(ext("1")));
    }

    #[test]
    fn a_linked_record_is_never_taken_over_and_deactivated_humans_stay_out() {
        let linked = sign_in(None, None, &facts("1", "alice@example.com", true), id(1), T).unwrap().human;
        let e = sign_in(None, Some(&linked), &facts("2", "alice@example.com", true), id(2), T).unwrap_err();
        assert!(matches!(e, DomainError::EmailTaken(_)));
        let gone = Human { state: HumanState::Deactivated, ..linked.clone() };
        assert!(matches!(
            sign_in(Some(&gone), None, &facts("1", "alice@example.com", true), id(2), T),
            Err(DomainError::HumanDeactivated(_))
        ));
        let other = new_human(id(9), "bob@example.com", "", HumanState::Active, vec![], vec![], T).unwrap();
        assert!(matches!(
            sign_in(Some(&linked), Some(&other), &facts("1", "bob@example.com", true), id(2), T),
            Err(DomainError::EmailTaken(_))
        ));
    }

    #[test]
    fn failures_lock_an_account_for_a_while() {
        let c = LocalCredential {
            human: id(1),
            password_hash: "x".into(),
            totp: None,
            last_totp_step: None,
            failures: 0,
            locked_until: None,
            updated_at: T,
        };
        let l = Lockout { max_failures: 3, lock_secs: 60 };
        let c1 = after_failure(&after_failure(&c, l, T), l, T);
        assert_eq!((c1.failures, locked(&c1, T)), (2, false));
        let c3 = after_failure(&c1, l, T);
        assert!(locked(&c3, T) && locked(&c3, T.plus_secs(59)) && !locked(&c3, T.plus_secs(60)));
        let ok = after_success(&c3, Some(7), T.plus_secs(61));
        assert_eq!((ok.failures, ok.locked_until, ok.last_totp_step), (0, None, Some(7)));
        assert!(check_password("short").is_err() && check_password("long enough pass").is_ok());
    }

    #[test]
    fn sessions_live_until_revoked_expired_or_their_human_goes() {
        let h = new_human(id(1), "a@b.c", "", HumanState::Active, vec![], vec![], T).unwrap();
        let s = Session {
            id: SessionId::from_random([1; 16]),
            human: h.id.clone(),
            method: "local".into(),
            access_hash: "a".into(),
            refresh_hash: "r".into(),
            created_at: T,
            expires_at: T.plus_secs(60),
            refresh_until: T.plus_secs(3600),
            revoked_at: None,
            revoke_reason: None,
        };
        assert_eq!(session_liveness(&s, &h, T), Liveness::Active);
        assert_eq!(session_liveness(&s, &h, T.plus_secs(60)), Liveness::Inactive("session expired"));
        let gone = Human { state: HumanState::Deactivated, ..h.clone() };
        assert_eq!(session_liveness(&s, &gone, T), Liveness::Inactive("human deactivated"));
        let later = T.plus_secs(3000);
        let r = refresh(&s, &h, true, "a2".into(), "r2".into(), 900, later).unwrap();
        assert_eq!(r.expires_at, T.plus_secs(3600), "never past refresh_until");
        assert_eq!(refresh(&s, &h, false, "x".into(), "y".into(), 60, T), Err(RefreshError::Reused));
        assert_eq!(refresh(&s, &h, true, "x".into(), "y".into(), 60, T.plus_secs(3600)), Err(RefreshError::Ended));
    }
}
