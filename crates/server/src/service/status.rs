//! What `remit status` shows an operator: this server's version, its store, the keys it signs
//! with and publishes, the audit chain's head and how old its last signed checkpoint is, and
//! the policy version deciding. Admin only.

use serde::Serialize;

use super::Caller;
use crate::app::App;
use crate::error::Error;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// This server's version.
    pub version: String,
    pub trust_domain: String,
    pub issuer: String,
    /// The server's clock (RFC 3339).
    pub time: String,
    pub store: StoreStatus,
    pub keys: KeysStatus,
    pub audit: AuditStatus,
    pub policy: PolicyStatus,
    pub break_glass: BreakGlassStatus,
    /// Database logins made for tasks: live, being removed, and stuck (removal failed six
    /// times or more; still retried — look at `remit lease list --stuck`).
    pub leases: LeasesStatus,
    /// Cluster jobs (governance's audit tail, Shared Signals push, recertification): who holds
    /// each and, for the tail, how far behind the audit log it is.
    pub jobs: Vec<JobStatus>,
}

/// One cluster job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub name: String,
    /// The process holding it (`local` on SQLite; a random name per PostgreSQL replica).
    pub holder: String,
    /// Whether that is this server.
    pub held_here: bool,
    /// Held until (RFC 3339); past it another replica takes the job.
    pub held_until: String,
    /// Whether the hold is current.
    pub held: bool,
    /// The audit `seq` the job has read up to (the tail's cursor; 0 for jobs without one).
    pub cursor: u64,
    /// For the audit tail: records written it has not read yet.
    pub behind: Option<u64>,
}

/// Uses of the break-glass credential (the admin credential from `remit init`) by this server.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakGlassStatus {
    /// Requests made with it since this server started.
    pub uses_since_start: u64,
    /// The last one (RFC 3339).
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// Where (a PostgreSQL URL without its password).
    pub location: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeysStatus {
    /// The kid new tokens are signed with.
    pub jwt_signing_kid: String,
    /// Keys published in the JWKS (the signer and the retired keys still accepted).
    pub jwt_published: usize,
    /// The kid audit checkpoints are signed with.
    pub audit_signing_kid: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditStatus {
    /// The newest record's sequence number (0: empty).
    pub head_seq: u64,
    /// The newest signed checkpoint's sequence number, time and age.
    pub checkpoint_seq: Option<u64>,
    pub checkpoint_at: Option<String>,
    pub checkpoint_age_secs: Option<u64>,
    /// Records written after the newest checkpoint.
    pub unsigned_records: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeasesStatus {
    pub active: u64,
    pub revoking: u64,
    pub stuck: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus {
    /// The active policy version (0: none pushed; every decision is deny).
    pub version: u64,
    pub policies: usize,
}

impl App {
    pub async fn status(&self, caller: &Caller) -> Result<Status, Error> {
        self.allow(
            caller,
            remit_policy::admin::AdminAction::StatusRead,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        let now = self.clock.now();
        let (head_seq, _) = self.store.audit().head().await?;
        let cp = self.store.audit().latest_checkpoint().await?;
        let keyring = self.keyring();
        let engine = self.pdp.engine();
        let leases = self.store.leases().lease_counts().await?;
        let jobs = self
            .store
            .governance()
            .jobs()
            .await?
            .into_iter()
            .map(|j| JobStatus {
                held_here: j.holder == self.governance.holder,
                held: j.held_until > now,
                held_until: j.held_until.to_rfc3339(),
                behind: (j.name == crate::governance::tail::JOB).then(|| head_seq.saturating_sub(j.cursor)),
                name: j.name,
                holder: j.holder,
                cursor: j.cursor,
            })
            .collect();
        // The store was opened from this very setting, so it parses.
        let kind = match self.cfg.store_kind() {
            Ok(crate::config::StoreKind::Postgres(_)) => "postgres",
            _ => "sqlite",
        };
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            trust_domain: self.trust_domain.to_string(),
            issuer: self.issuer.clone(),
            time: now.to_rfc3339(),
            store: StoreStatus { kind: kind.to_owned(), location: self.cfg.store_display() },
            keys: KeysStatus {
                jwt_signing_kid: keyring.signer().kid().to_owned(),
                jwt_published: keyring.jwks()["keys"].as_array().map(Vec::len).unwrap_or(0),
                audit_signing_kid: self.audit_signing_kid().to_owned(),
            },
            audit: AuditStatus {
                head_seq,
                checkpoint_seq: cp.as_ref().map(|c| c.seq),
                checkpoint_at: cp.as_ref().map(|c| c.time.to_rfc3339()),
                checkpoint_age_secs: cp.as_ref().map(|c| u64::try_from((now.0 - c.time.0).max(0) / 1000).unwrap_or(0)),
                unsigned_records: head_seq.saturating_sub(cp.as_ref().map(|c| c.seq).unwrap_or(0)),
            },
            policy: PolicyStatus { version: engine.version(), policies: engine.len() },
            leases: LeasesStatus { active: leases.active, revoking: leases.revoking, stuck: leases.stuck },
            jobs,
            break_glass: BreakGlassStatus {
                uses_since_start: self.authz.break_glass_uses.load(std::sync::atomic::Ordering::Relaxed),
                last_used_at: match self.authz.break_glass_last.load(std::sync::atomic::Ordering::Relaxed) {
                    0 => None,
                    ms => Some(remit_core::time::UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX)).to_rfc3339()),
                },
            },
        })
    }
}
