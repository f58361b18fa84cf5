//! Approvals: a human's yes or no to one exact call that policy marked `@approval`.
//!
//! The lifecycle, decided here and only here: `pending → approved | denied`, by a named
//! human, before the request expires; `approved → used`, once, by a retry of the very same
//! call (same digest, same policy version) before expiry. Nothing else moves. A store applies
//! a transition with a compare-and-set on the previous state, so two concurrent retries can
//! never both use one approval.
//!
//! Using an approval yields a [`Consumed`] proof; a decision that may turn "approval
//! required" into "allow" takes that proof, not a boolean.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ApprovalId, TaskId, WorkflowName};
use crate::time::UnixMillis;

/// Where an approval request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Used,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Used => "used",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "used" => ApprovalState::Used,
            _ => return None,
        })
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for a human to approve one exact call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub state: ApprovalState,
    /// SHA-256 (hex) of the canonical call: subject, action, resource and context.
    pub digest: String,
    /// The policy version that asked for it; a retry under another version does not match.
    pub policy_version: u64,
    /// The call, as JSON, for the approver to read.
    pub request: String,
    /// The `@approval` texts of the policies that asked.
    pub reasons: Vec<String>,
    pub requested_by: String,
    pub requested_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub decided_by: Option<String>,
    pub decided_at: Option<UnixMillis>,
    pub decision_reason: Option<String>,
    pub used_at: Option<UnixMillis>,
    /// The task whose call it is (task-token decisions); `None` for AuthZEN subjects.
    pub task: Option<TaskId>,
    /// That task's workflow: its owner may decide the request.
    pub workflow: Option<WorkflowName>,
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval `{0}` has expired")]
    Expired(ApprovalId),
    #[error("approval `{0}` is already {1}")]
    NotPending(ApprovalId, ApprovalState),
    #[error("approval `{0}` is {1}, not approved")]
    NotApproved(ApprovalId, ApprovalState),
    #[error("approval `{0}` was given for another call")]
    OtherCall(ApprovalId),
    #[error("approval `{0}` was given under another policy version")]
    OtherPolicyVersion(ApprovalId),
}

/// A human's decision on a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approve: bool,
    pub by: String,
    pub reason: String,
    pub at: UnixMillis,
}

/// `pending → approved | denied`, before expiry. Returns the decided request.
pub fn decide(a: &Approval, d: &Decision) -> Result<Approval, ApprovalError> {
    if a.state != ApprovalState::Pending {
        return Err(ApprovalError::NotPending(a.id.clone(), a.state));
    }
    if d.at >= a.expires_at {
        return Err(ApprovalError::Expired(a.id.clone()));
    }
    Ok(Approval {
        state: if d.approve { ApprovalState::Approved } else { ApprovalState::Denied },
        decided_by: Some(d.by.clone()),
        decided_at: Some(d.at),
        decision_reason: Some(d.reason.clone()),
        ..a.clone()
    })
}

/// The call a retry presents an approval for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub digest: &'a str,
    pub policy_version: u64,
    pub at: UnixMillis,
}

/// `approved → used`, once, for the very call it was given for, before expiry. Returns the
/// used request.
pub fn consume(a: &Approval, p: Presented<'_>) -> Result<Approval, ApprovalError> {
    // An open request past its expiry says so (rather than "pending, not approved").
    if matches!(a.state, ApprovalState::Pending | ApprovalState::Approved) && p.at >= a.expires_at {
        return Err(ApprovalError::Expired(a.id.clone()));
    }
    if a.state != ApprovalState::Approved {
        return Err(ApprovalError::NotApproved(a.id.clone(), a.state));
    }
    if a.digest != p.digest {
        return Err(ApprovalError::OtherCall(a.id.clone()));
    }
    if a.policy_version != p.policy_version {
        return Err(ApprovalError::OtherPolicyVersion(a.id.clone()));
    }
    Ok(Approval { state: ApprovalState::Used, used_at: Some(p.at), ..a.clone() })
}

/// Proof that an approval was used, exactly once, for the call being decided. Only a store
/// that moved it `approved → used` makes one (its fields are private to this crate's
/// constructor); a decision that honours an approval takes this, not a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    id: ApprovalId,
    digest: String,
    policy_version: u64,
}

impl Consumed {
    /// Made by a store right after its compare-and-set moved `used` into place.
    pub fn after_consume(used: &Approval) -> Option<Consumed> {
        (used.state == ApprovalState::Used).then(|| Consumed {
            id: used.id.clone(),
            digest: used.digest.clone(),
            policy_version: used.policy_version,
        })
    }

    pub fn id(&self) -> &ApprovalId {
        &self.id
    }

    /// Whether this proof is for the call with `digest` under `policy_version`.
    pub fn covers(&self, digest: &str, policy_version: u64) -> bool {
        self.digest == digest && self.policy_version == policy_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Approval {
        Approval {
            id: ApprovalId::from_random([1; 16]),
            state: ApprovalState::Pending,
            digest: "d".into(),
            policy_version: 3,
            request: "{}".into(),
            reasons: vec![],
            requested_by: "admin:mallory@example.com".into(),
            requested_at: UnixMillis(0),
            expires_at: UnixMillis(1000),
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            used_at: None,
            task: None,
            workflow: None,
        }
    }

    fn decision(approve: bool, at: i64) -> Decision {
        Decision { approve, by: "bob@example.com".into(), reason: "ok".into(), at: UnixMillis(at) }
    }

    fn presented(digest: &str, v: u64, at: i64) -> Presented<'_> {
        Presented { digest, policy_version: v, at: UnixMillis(at) }
    }

    #[test]
    fn the_lifecycle_moves_one_way() {
        let a = pending();
        let approved = decide(&a, &decision(true, 10)).unwrap();
        assert_eq!(approved.state, ApprovalState::Approved);
        assert!(matches!(decide(&approved, &decision(false, 11)), Err(ApprovalError::NotPending(..))));
        let used = consume(&approved, presented("d", 3, 20)).unwrap();
        assert_eq!((used.state, used.used_at), (ApprovalState::Used, Some(UnixMillis(20))));
        assert!(matches!(consume(&used, presented("d", 3, 21)), Err(ApprovalError::NotApproved(..))));
        let denied = decide(&a, &decision(false, 10)).unwrap();
        assert!(matches!(consume(&denied, presented("d", 3, 20)), Err(ApprovalError::NotApproved(..))));
        assert!(matches!(consume(&a, presented("d", 3, 20)), Err(ApprovalError::NotApproved(..))));
    }

    #[test]
    fn only_the_same_call_under_the_same_policy_before_expiry() {
        let approved = decide(&pending(), &decision(true, 10)).unwrap();
        assert!(matches!(consume(&approved, presented("other", 3, 20)), Err(ApprovalError::OtherCall(_))));
        assert!(matches!(consume(&approved, presented("d", 4, 20)), Err(ApprovalError::OtherPolicyVersion(_))));
        assert!(matches!(consume(&approved, presented("d", 3, 1000)), Err(ApprovalError::Expired(_))));
        assert!(matches!(decide(&pending(), &decision(true, 1000)), Err(ApprovalError::Expired(_))));
    }

    #[test]
    fn a_proof_exists_only_for_a_used_approval() {
        let approved = decide(&pending(), &decision(true, 10)).unwrap();
        assert!(Consumed::after_consume(&approved).is_none());
        let p = Consumed::after_consume(&consume(&approved, presented("d", 3, 20)).unwrap()).unwrap();
        assert!(p.covers("d", 3) && !p.covers("d", 4) && !p.covers("x", 3));
    }
}
