//! Column lists shared by both SQL backends (their schemas keep the same columns).

pub const WORKFLOW_COLS: &str = "name, purpose, owner, ceiling, allowed_tools, max_task_ttl_secs, max_delegation_depth, state, created_at, updated_at";
pub const AGENT_COLS: &str = "name, owner, workflows, state, created_at, updated_at, kill_generation";
pub const JOIN_COLS: &str =
    "id, agent, secret_hash, created_at, expires_at, used_at, used_by, agent_generation, revoked_at";
pub const INSTANCE_COLS: &str = "id, agent, state, created_at, expires_at, revoked_at, revoke_reason";
pub const TASK_COLS: &str = "id, workflow, agent, instance, parent, intent, intent_hash, sensitivity, audience, state, \
     started_by, created_at, expires_at, ended_at, end_reason";
pub const AUDIT_COLS: &str =
    "seq, time, actor, action, outcome, workflow, task, agent, reason, detail, prev_hash, hash";
pub const KEY_COLS: &str = "kid, purpose, sealed, public, created_at, retire_after, mac";
pub const APPROVAL_COLS: &str = "id, state, digest, policy_version, request, reasons, requested_by, requested_at, \
     expires_at, decided_by, decided_at, decision_reason, used_at, task, workflow";
