//! The tamper-evident audit log: events, their canonical encoding, and the chain verifier.
//!
//! Every record carries `hash = SHA-256(canonical(seq, event) || prev_hash)`, so editing or
//! removing any record breaks every hash after it. Deleting the newest records is caught by
//! signed checkpoints of the chain head (see [`Checkpoint`]). The store assigns `seq` and
//! `prev_hash` inside the same transaction as the change it records; this module only
//! computes and checks.
//!
//! Records never hold a token, key or secret: callers put identifiers (task id, jti, key id,
//! a short hash prefix) in `detail`, never credential material.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::UnixMillis;

/// The hash that precedes the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// What happened. Stored as its dotted name (`task.start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Init,
    WorkflowCreate,
    WorkflowSuspend,
    WorkflowResume,
    WorkflowUpdate,
    AgentCreate,
    AgentDisable,
    AgentEnable,
    JoinTokenCreate,
    JoinTokenRevoke,
    InstanceJoin,
    InstanceRenew,
    InstanceRevoke,
    TaskStart,
    TaskComplete,
    TaskRevoke,
    TokenRevoke,
    KeyRotate,
    PolicyPush,
    EntitiesPush,
    AccessEvaluate,
    AccessExplain,
    AccessSearch,
    ApprovalRequest,
    ApprovalApprove,
    ApprovalDeny,
    ApprovalUse,
    InstallationReseal,
    HumanCreate,
    HumanUpdate,
    HumanDeactivate,
    SessionCreate,
    SessionRefresh,
    SessionRevoke,
    AdminDeny,
    BreakGlassUse,
    GroupWrite,
    GroupDelete,
    AgentUpdate,
    ToolCreate,
    ToolDisable,
    TokenExchange,
    GrantCreate,
    GrantConfirm,
    GrantRevoke,
    TokenPresent,
    TokenMisuse,
    EntryCreate,
    EntryDelete,
    WorkloadAttest,
    SecretSet,
    SecretDelete,
    LeakFound,
    ToolCall,
    LeaseCreate,
    LeaseRevokeRequest,
    LeaseRevoke,
    LeaseStuck,
    LeaseEnv,
    SsfStreamCreate,
    SsfStreamUpdate,
    SsfStreamDelete,
    SignalReceive,
    GovernanceUpdate,
    Recertify,
    RecertDue,
    TokenSharing,
    RiskSignal,
    ContainmentTrip,
    ReuseAccept,
    GrantNarrow,
    TaskRenew,
    WorkflowTools,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Init => "remit.init",
            AuditAction::WorkflowCreate => "workflow.create",
            AuditAction::WorkflowSuspend => "workflow.suspend",
            AuditAction::WorkflowResume => "workflow.resume",
            AuditAction::WorkflowUpdate => "workflow.update",
            AuditAction::AgentCreate => "agent.create",
            AuditAction::AgentDisable => "agent.disable",
            AuditAction::AgentEnable => "agent.enable",
            AuditAction::JoinTokenCreate => "join_token.create",
            AuditAction::JoinTokenRevoke => "join_token.revoke",
            AuditAction::InstanceJoin => "instance.join",
            AuditAction::InstanceRenew => "instance.renew",
            AuditAction::InstanceRevoke => "instance.revoke",
            AuditAction::TaskStart => "task.start",
            AuditAction::TaskComplete => "task.complete",
            AuditAction::TaskRevoke => "task.revoke",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::KeyRotate => "keys.rotate",
            AuditAction::PolicyPush => "policy.push",
            AuditAction::EntitiesPush => "entities.push",
            AuditAction::AccessEvaluate => "access.evaluate",
            AuditAction::AccessExplain => "access.explain",
            AuditAction::AccessSearch => "access.search",
            AuditAction::ApprovalRequest => "approval.request",
            AuditAction::ApprovalApprove => "approval.approve",
            AuditAction::ApprovalDeny => "approval.deny",
            AuditAction::ApprovalUse => "approval.use",
            AuditAction::InstallationReseal => "remit.reseal",
            AuditAction::HumanCreate => "human.create",
            AuditAction::HumanUpdate => "human.update",
            AuditAction::HumanDeactivate => "human.deactivate",
            AuditAction::SessionCreate => "session.create",
            AuditAction::SessionRefresh => "session.refresh",
            AuditAction::SessionRevoke => "session.revoke",
            AuditAction::AdminDeny => "admin.deny",
            AuditAction::BreakGlassUse => "breakglass.use",
            AuditAction::GroupWrite => "group.write",
            AuditAction::GroupDelete => "group.delete",
            AuditAction::AgentUpdate => "agent.update",
            AuditAction::ToolCreate => "tool.create",
            AuditAction::ToolDisable => "tool.disable",
            AuditAction::TokenExchange => "token.exchange",
            AuditAction::GrantCreate => "grant.create",
            AuditAction::GrantConfirm => "grant.confirm",
            AuditAction::GrantRevoke => "grant.revoke",
            AuditAction::TokenPresent => "token.present",
            AuditAction::TokenMisuse => "security.token_misuse",
            AuditAction::EntryCreate => "entry.create",
            AuditAction::EntryDelete => "entry.delete",
            AuditAction::WorkloadAttest => "workload.attest",
            AuditAction::SecretSet => "secret.set",
            AuditAction::SecretDelete => "secret.delete",
            AuditAction::LeakFound => "leak.found",
            AuditAction::ToolCall => "tool.call",
            AuditAction::LeaseCreate => "lease.create",
            AuditAction::LeaseRevokeRequest => "lease.revoke_request",
            AuditAction::LeaseRevoke => "lease.revoke",
            AuditAction::LeaseStuck => "lease.stuck",
            AuditAction::LeaseEnv => "lease.env",
            AuditAction::SsfStreamCreate => "ssf.stream_create",
            AuditAction::SsfStreamUpdate => "ssf.stream_update",
            AuditAction::SsfStreamDelete => "ssf.stream_delete",
            AuditAction::SignalReceive => "ssf.receive",
            AuditAction::GovernanceUpdate => "governance.update",
            AuditAction::Recertify => "recert.certify",
            AuditAction::RecertDue => "recert.due",
            AuditAction::TokenSharing => "security.token_sharing",
            AuditAction::RiskSignal => "security.risk_signal",
            AuditAction::ContainmentTrip => "containment.trip",
            AuditAction::ReuseAccept => "reuse.accept",
            AuditAction::GrantNarrow => "grant.narrow",
            AuditAction::TaskRenew => "task.renew",
            AuditAction::WorkflowTools => "workflow.narrow",
        }
    }
}

/// Whether the recorded action took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
        }
    }
}

/// An event to append; the store turns it into an [`AuditRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: UnixMillis,
    /// A SPIFFE ID, `admin`, or `join:<token id>`.
    pub actor: String,
    pub action: String,
    pub outcome: Outcome,
    pub workflow: Option<String>,
    pub task: Option<String>,
    pub agent: Option<String>,
    pub reason: Option<String>,
    /// Further facts as a JSON object with sorted keys (compact), or empty.
    pub detail: String,
}

impl AuditEvent {
    pub fn new(time: UnixMillis, actor: impl Into<String>, action: AuditAction) -> Self {
        AuditEvent {
            time,
            actor: actor.into(),
            action: action.as_str().to_owned(),
            outcome: Outcome::Success,
            workflow: None,
            task: None,
            agent: None,
            reason: None,
            detail: String::new(),
        }
    }
    pub fn workflow(mut self, w: impl ToString) -> Self {
        self.workflow = Some(w.to_string());
        self
    }
    pub fn task(mut self, t: impl ToString) -> Self {
        self.task = Some(t.to_string());
        self
    }
    /// [`Self::workflow`] when there is one.
    pub fn workflow_opt(mut self, w: Option<&str>) -> Self {
        self.workflow = w.map(str::to_owned);
        self
    }
    /// [`Self::agent`] when there is one.
    pub fn agent_opt(mut self, a: Option<&str>) -> Self {
        self.agent = a.map(str::to_owned);
        self
    }
    /// [`Self::task`] when there is one.
    pub fn task_opt(mut self, t: Option<&str>) -> Self {
        self.task = t.map(str::to_owned);
        self
    }
    pub fn agent(mut self, a: impl ToString) -> Self {
        self.agent = Some(a.to_string());
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn outcome(mut self, o: Outcome) -> Self {
        self.outcome = o;
        self
    }
    /// Sets `detail` from key/value pairs, encoded canonically (sorted keys, compact).
    pub fn detail<const N: usize>(mut self, pairs: [(&str, serde_json::Value); N]) -> Self {
        let map: BTreeMap<&str, serde_json::Value> = pairs.into_iter().collect();
        self.detail = serde_json::to_string(&map).unwrap_or_default();
        self
    }
    /// Adds (or replaces) one field of `detail`, keeping the canonical encoding.
    pub fn with_detail_field(mut self, key: &str, value: serde_json::Value) -> Self {
        let mut map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&self.detail).unwrap_or_default();
        map.insert(key.to_owned(), value);
        self.detail = serde_json::to_string(&map).unwrap_or_default();
        self
    }
}

/// A stored, chained audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record.
    pub hash: String,
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn put_opt(h: &mut Sha256, v: &Option<String>) {
    match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put(h, s.as_bytes());
        }
    }
}

/// The record hash over a canonical, length-prefixed encoding of every field.
pub fn record_hash(seq: u64, e: &AuditEvent, prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"remit-audit-v1\0");
    h.update(seq.to_be_bytes());
    h.update(e.time.0.to_be_bytes());
    put(&mut h, e.actor.as_bytes());
    put(&mut h, e.action.as_bytes());
    put(&mut h, e.outcome.as_str().as_bytes());
    put_opt(&mut h, &e.workflow);
    put_opt(&mut h, &e.task);
    put_opt(&mut h, &e.agent);
    put_opt(&mut h, &e.reason);
    put(&mut h, e.detail.as_bytes());
    h.update(prev);
    h.finalize().into()
}

/// Seals `event` as record `seq` following `prev`.
pub fn seal(seq: u64, event: AuditEvent, prev: &[u8; 32]) -> (AuditRecord, [u8; 32]) {
    let hash = record_hash(seq, &event, prev);
    let rec = AuditRecord { seq, event, prev_hash: hex::encode(prev), hash: hex::encode(hash) };
    (rec, hash)
}

/// A signed statement "the chain had `seq` records, the last with hash `head_hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub head_hash: String,
    pub time: UnixMillis,
    pub key_id: String,
    /// Base64url ES256 signature over [`checkpoint_message`].
    pub signature: String,
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(seq: u64, head_hash: &str, time: UnixMillis) -> Vec<u8> {
    format!("remit-audit-checkpoint-v1\n{seq}\n{head_hash}\n{}", time.0).into_bytes()
}

/// The first problem found in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq}: hash does not match its contents (record edited)")]
    HashMismatch { seq: u64 },
    #[error("record {seq}: previous hash does not match record {prev} (record edited or removed)")]
    LinkMismatch { seq: u64, prev: u64 },
    #[error("record {expected} is missing (found {found} next)")]
    Gap { expected: u64, found: u64 },
    #[error("checkpoint at record {seq}: signature is invalid")]
    BadCheckpointSignature { seq: u64 },
    #[error("checkpoint at record {seq}: head hash does not match record {seq} (record edited)")]
    CheckpointMismatch { seq: u64 },
    #[error("checkpoint at record {seq} arrived after that record was verified (a verifier bug)")]
    CheckpointOutOfOrder { seq: u64 },
    #[error(
        "records after {last} are missing: a signed checkpoint covers record {checkpoint} (newest records deleted)"
    )]
    Truncated { last: u64, checkpoint: u64 },
}

/// Verifies a log streamed in `seq` order. Construct it (with any checkpoints already read),
/// feed checkpoints with [`ChainVerifier::add_checkpoint`] before the records they cover
/// (so a day's 86,400 checkpoints stream through it page by page, never all at once), push
/// every record, then [`ChainVerifier::finish`].
pub struct ChainVerifier {
    /// Checkpoints not yet passed (at or beyond the next record).
    checkpoints: BTreeMap<u64, String>,
    /// Checkpoints seen in all, and the highest seq any of them covers.
    seen: u64,
    newest: u64,
    last_seq: u64,
    prev: [u8; 32],
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head_hash: String,
    pub checkpoints: u64,
    pub last_checkpoint_seq: u64,
}

impl ChainVerifier {
    /// `verify_sig` checks one checkpoint's signature with the audit key it names.
    pub fn new(checkpoints: &[Checkpoint], verify_sig: impl Fn(&Checkpoint) -> bool) -> Result<Self, ChainBreak> {
        let mut v = ChainVerifier { checkpoints: BTreeMap::new(), seen: 0, newest: 0, last_seq: 0, prev: GENESIS_HASH };
        for c in checkpoints {
            v.add_checkpoint(c, &verify_sig)?;
        }
        Ok(v)
    }

    /// Adds a checkpoint, checking its signature. It must come before the record it covers
    /// is pushed (else [`ChainBreak::CheckpointOutOfOrder`]: it could not be checked).
    pub fn add_checkpoint(
        &mut self,
        c: &Checkpoint,
        verify_sig: impl Fn(&Checkpoint) -> bool,
    ) -> Result<(), ChainBreak> {
        if !verify_sig(c) {
            return Err(ChainBreak::BadCheckpointSignature { seq: c.seq });
        }
        if c.seq <= self.last_seq && self.last_seq > 0 {
            return Err(ChainBreak::CheckpointOutOfOrder { seq: c.seq });
        }
        self.checkpoints.insert(c.seq, c.head_hash.clone());
        self.seen += 1;
        self.newest = self.newest.max(c.seq);
        Ok(())
    }

    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ChainBreak> {
        let expected = self.last_seq + 1;
        if r.seq != expected {
            return Err(ChainBreak::Gap { expected, found: r.seq });
        }
        if r.prev_hash != hex::encode(self.prev) {
            return Err(ChainBreak::LinkMismatch { seq: r.seq, prev: self.last_seq });
        }
        let h = record_hash(r.seq, &r.event, &self.prev);
        if hex::encode(h) != r.hash {
            return Err(ChainBreak::HashMismatch { seq: r.seq });
        }
        if let Some(cp) = self.checkpoints.remove(&r.seq)
            && cp != r.hash
        {
            return Err(ChainBreak::CheckpointMismatch { seq: r.seq });
        }
        self.last_seq = r.seq;
        self.prev = h;
        Ok(())
    }

    pub fn finish(self) -> Result<VerifyReport, ChainBreak> {
        let last_cp = self.newest;
        if last_cp > self.last_seq {
            return Err(ChainBreak::Truncated { last: self.last_seq, checkpoint: last_cp });
        }
        Ok(VerifyReport {
            records: self.last_seq,
            head_hash: hex::encode(self.prev),
            checkpoints: self.seen,
            last_checkpoint_seq: last_cp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::new(UnixMillis(seq as i64), "admin", AuditAction::TaskStart)
                    .task(format!("t{seq}"))
                    .detail([("n", serde_json::json!(seq))]);
                let (r, h) = seal(seq, e, &prev);
                prev = h;
                r
            })
            .collect()
    }

    fn cp(r: &AuditRecord) -> Checkpoint {
        Checkpoint {
            seq: r.seq,
            head_hash: r.hash.clone(),
            time: UnixMillis(0),
            key_id: "k".into(),
            signature: "ok".into(),
        }
    }

    fn verify(recs: &[AuditRecord], cps: &[Checkpoint]) -> Result<VerifyReport, ChainBreak> {
        let mut v = ChainVerifier::new(cps, |c| c.signature == "ok")?;
        for r in recs {
            v.push(r)?;
        }
        v.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let recs = chain(5);
        let rep = verify(&recs, &[cp(&recs[4])]).unwrap();
        assert_eq!(rep.records, 5);
    }

    #[test]
    fn edits_are_named() {
        let mut recs = chain(5);
        recs[2].event.reason = Some("edited".into());
        assert_eq!(verify(&recs, &[]), Err(ChainBreak::HashMismatch { seq: 3 }));
        let mut recs = chain(5);
        recs.remove(1);
        assert_eq!(verify(&recs, &[]), Err(ChainBreak::Gap { expected: 2, found: 3 }));
    }

    #[test]
    fn truncation_is_caught_by_checkpoint() {
        let recs = chain(5);
        let cps = [cp(&recs[4])];
        assert_eq!(verify(&recs[..3], &cps), Err(ChainBreak::Truncated { last: 3, checkpoint: 5 }));
        let mut bad = cps.clone();
        bad[0].signature = "forged".into();
        assert_eq!(verify(&recs, &bad), Err(ChainBreak::BadCheckpointSignature { seq: 5 }));
    }

    #[test]
    fn encoding_is_unambiguous() {
        let a = AuditEvent::new(UnixMillis(1), "ab", AuditAction::TaskStart).reason("c");
        let mut b = a.clone();
        b.actor = "a".into();
        b.reason = Some("bc".into());
        assert_ne!(record_hash(1, &a, &GENESIS_HASH), record_hash(1, &b, &GENESIS_HASH));
    }
}
