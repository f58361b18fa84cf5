//! PostgreSQL schema and migrations.
//!
//! Migrations are numbered and applied in order, all pending ones in one transaction
//! (PostgreSQL DDL is transactional), under an advisory lock so replicas starting at the same
//! time do not race. The applied version lives in `remit_schema`; a database made by an
//! earlier Remit is upgraded in place and one made by a newer Remit is refused.

use sqlx::PgPool;

use super::rows::map_err;
use crate::{Result, StoreError};

/// Advisory lock key held while migrating ("remit" in ASCII).
const MIGRATION_LOCK: i64 = 0x72_65_6d_69_74;

/// Each entry is one migration; never edit one that has shipped, append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE keys (
    kid          TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('jwt', 'audit')),
    sealed       BYTEA NOT NULL,
    public       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    retire_after BIGINT
);

CREATE TABLE workflows (
    name                 TEXT PRIMARY KEY,
    purpose              TEXT NOT NULL,
    owner                TEXT NOT NULL,
    ceiling              TEXT NOT NULL,
    allowed_tools        TEXT NOT NULL,
    max_task_ttl_secs    BIGINT NOT NULL,
    max_delegation_depth BIGINT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE agents (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    workflows  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('enabled', 'disabled')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);

CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    agent         TEXT NOT NULL REFERENCES agents(name),
    state         TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT
);
CREATE INDEX instances_active_by_agent ON instances(agent) WHERE state = 'active';

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL REFERENCES workflows(name),
    agent       TEXT NOT NULL REFERENCES agents(name),
    instance    TEXT REFERENCES instances(id),
    parent      TEXT REFERENCES tasks(id),
    intent      TEXT NOT NULL,
    intent_hash TEXT NOT NULL,
    sensitivity TEXT NOT NULL,
    audience    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'completed', 'revoked', 'expired')),
    started_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    end_reason  TEXT
);
CREATE INDEX tasks_by_workflow ON tasks(workflow, created_at);
CREATE INDEX tasks_active_by_workflow ON tasks(workflow) WHERE state = 'active';
CREATE INDEX tasks_active_by_agent ON tasks(agent) WHERE state = 'active';
CREATE INDEX tasks_by_instance ON tasks(instance) WHERE instance IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks(parent) WHERE parent IS NOT NULL;

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    time      BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    workflow  TEXT,
    task      TEXT,
    agent     TEXT,
    reason    TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_by_workflow ON audit(workflow, seq) WHERE workflow IS NOT NULL;
CREATE INDEX audit_by_task ON audit(task, seq) WHERE task IS NOT NULL;
CREATE INDEX audit_by_agent ON audit(agent, seq) WHERE agent IS NOT NULL;
CREATE INDEX audit_by_time ON audit(time);

-- The chain head every writer locks (SELECT ... FOR UPDATE) first in its transaction:
-- replicas append in one total order, each batch continuing from the last committed hash.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));

-- Append-only. A superuser can drop these; the hash chain and the signed checkpoints are
-- what detect that.
CREATE FUNCTION remit_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION remit_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION remit_audit_append_only();

CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    head_hash TEXT NOT NULL,
    time      BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);
"#,
    r#"
-- 2: policy bundles (versioned; the highest is active) and the attribute store.
CREATE TABLE policy_sets (
    version    BIGINT PRIMARY KEY,
    bundle     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE entities (
    etype      TEXT NOT NULL,
    id         TEXT NOT NULL,
    attrs      TEXT NOT NULL,
    parents    TEXT NOT NULL,
    aliases    TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (etype, id)
);

CREATE TABLE entity_aliases (
    etype TEXT NOT NULL,
    alias TEXT NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (etype, alias)
);
"#,
    r#"
-- 3: approval requests for calls that policy marks `@approval`.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
    digest          TEXT NOT NULL,
    policy_version  BIGINT NOT NULL,
    request         TEXT NOT NULL,
    reasons         TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requested_at    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_by      TEXT,
    decided_at      BIGINT,
    decision_reason TEXT,
    used_at         BIGINT
);
CREATE INDEX approvals_by_state ON approvals(state, requested_at);
"#,
    r#"
-- 4: approvals of a task's call name the task and its workflow (whose owner may decide);
-- the tools each task has used, for the request-time context.
ALTER TABLE approvals ADD COLUMN task TEXT;
ALTER TABLE approvals ADD COLUMN workflow TEXT;
CREATE TABLE task_tools (
    task_id       TEXT NOT NULL,
    tool          TEXT NOT NULL,
    first_used_at BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    uses          BIGINT NOT NULL,
    PRIMARY KEY (task_id, tool)
);
"#,
    r#"
-- 5: kills of an agent are counted, and its unused join tokens revoked (a token made under
-- an earlier kill generation never redeems); key rows carry a MAC under the KEK.
ALTER TABLE agents ADD COLUMN kill_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE join_tokens ADD COLUMN agent_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE join_tokens ADD COLUMN revoked_at BIGINT;
CREATE INDEX join_tokens_unused_by_agent ON join_tokens(agent) WHERE used_at IS NULL AND revoked_at IS NULL;
ALTER TABLE keys ADD COLUMN mac TEXT;
"#,
    r#"
-- 6: humans and their sessions; owners of workflows and agents are humans (the owner emails
-- typed in before become unverified humans), orphaned when their owner is deactivated.
CREATE TABLE humans (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('unverified', 'active', 'deactivated')),
    roles          TEXT NOT NULL,
    member_of      TEXT NOT NULL,
    ext_issuer     TEXT,
    ext_subject    TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    deactivated_at BIGINT,
    CHECK ((ext_issuer IS NULL) = (ext_subject IS NULL))
);
CREATE UNIQUE INDEX humans_by_external ON humans(ext_issuer, ext_subject) WHERE ext_issuer IS NOT NULL;

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    human         TEXT NOT NULL REFERENCES humans(id),
    method        TEXT NOT NULL,
    access_hash   TEXT NOT NULL,
    refresh_hash  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    refresh_until BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT
);
CREATE INDEX sessions_by_human ON sessions(human, created_at);

ALTER TABLE workflows ADD COLUMN owner_id TEXT REFERENCES humans(id);
ALTER TABLE workflows ADD COLUMN orphaned_at BIGINT;
ALTER TABLE agents ADD COLUMN owner_id TEXT REFERENCES humans(id);
ALTER TABLE agents ADD COLUMN orphaned_at BIGINT;
CREATE INDEX workflows_by_owner ON workflows(owner_id);
CREATE INDEX agents_by_owner ON agents(owner_id);

INSERT INTO humans (id, email, display_name, state, roles, member_of, created_at, updated_at)
SELECT 'h-' || replace(gen_random_uuid()::text, '-', ''), o, '', 'unverified', '[]', '[]',
       (extract(epoch FROM clock_timestamp()) * 1000)::bigint, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
FROM (SELECT lower(trim(owner)) AS o FROM workflows UNION SELECT lower(trim(owner)) FROM agents) owners
WHERE o != '';
UPDATE workflows SET owner_id = (SELECT id FROM humans WHERE email = lower(trim(workflows.owner)));
UPDATE agents SET owner_id = (SELECT id FROM humans WHERE email = lower(trim(agents.owner)));
"#,
    r#"
-- 7: SCIM 2.0 resources an identity provider provisions (a User is its human, by id).
CREATE TABLE scim_resources (
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('User', 'Group')),
    name        TEXT NOT NULL,
    external_id TEXT,
    resource    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX scim_live_names ON scim_resources(kind, lower(name)) WHERE deleted_at IS NULL;
"#,
    r#"
-- 8: local humans (no identity provider): an argon2id password hash, a sealed TOTP secret,
-- and the failures that lock the account.
CREATE TABLE local_credentials (
    human          TEXT PRIMARY KEY REFERENCES humans(id),
    password_hash  TEXT NOT NULL,
    totp           BYTEA,
    totp_confirmed BOOLEAN NOT NULL DEFAULT false,
    last_totp_step BIGINT,
    failures       BIGINT NOT NULL,
    locked_until   BIGINT,
    updated_at     BIGINT NOT NULL
);
"#,
    r#"
-- 9: the identity provider's refresh token of an OIDC session (sealed under the KEK), so a
-- Remit refresh first renews the sign-in at the provider.
CREATE TABLE session_idp_tokens (
    session    TEXT PRIMARY KEY REFERENCES sessions(id),
    provider   TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    r#"
-- 10: registered tools and the per-tool credentials issued by token exchange (never the
-- token: what it said, so introspection and revocation can find it).
CREATE TABLE tools (
    name           TEXT PRIMARY KEY,
    audience       TEXT NOT NULL UNIQUE,
    scopes         TEXT NOT NULL,
    max_ttl_secs   BIGINT NOT NULL,
    classification TEXT NOT NULL,
    owner          TEXT NOT NULL,
    owner_id       TEXT REFERENCES humans(id),
    orphaned_at    BIGINT,
    state          TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE TABLE credentials (
    id         TEXT PRIMARY KEY,
    task       TEXT NOT NULL REFERENCES tasks(id),
    tool       TEXT NOT NULL REFERENCES tools(name),
    scopes     TEXT NOT NULL,
    jkt        TEXT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX credentials_task ON credentials(task);
CREATE INDEX credentials_expiry ON credentials(expires_at);
"#,
    r#"
-- 11: delegation. A task's place in its delegation tree (depth, ancestors, the authority it
-- holds), and a workflow's transitive-trust rules; both JSON, both defaulting to "none".
ALTER TABLE tasks ADD COLUMN delegation TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workflows ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';
-- The allowed calls of a task whose delegation limits them (max_calls).
ALTER TABLE tasks ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
-- Humans' grants to agents; a task started under one names it in its delegation.
CREATE TABLE grants (
    id                TEXT PRIMARY KEY,
    human             TEXT NOT NULL REFERENCES humans(id),
    human_email       TEXT NOT NULL,
    agent             TEXT NOT NULL,
    workflow          TEXT NOT NULL,
    authority         TEXT NOT NULL,
    max_depth         BIGINT NOT NULL,
    state             TEXT NOT NULL,
    confirmation_hash TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    confirmed_at      BIGINT,
    revoked_at        BIGINT
);
CREATE INDEX grants_human ON grants(human);
ALTER TABLE tasks ADD COLUMN grant_id TEXT GENERATED ALWAYS AS ((delegation::jsonb)->>'grant') STORED;
CREATE INDEX tasks_grant ON tasks(grant_id) WHERE grant_id IS NOT NULL;
-- DPoP: the proofs seen (replay cache shared by replicas; rows expire) and the presentations
-- of sender-constrained tokens (token jti, key thumbprint, audience).
CREATE TABLE dpop_proofs (
    key        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_expiry ON dpop_proofs(expires_at);
CREATE TABLE presentations (
    jti      TEXT NOT NULL,
    jkt      TEXT NOT NULL,
    audience TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at  BIGINT NOT NULL,
    uses     BIGINT NOT NULL,
    PRIMARY KEY (jti, jkt, audience)
);
"#,
    r#"
-- 12: a grant's call budget is shared by every task under it (counted here).
ALTER TABLE grants ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- 13: the SPIFFE Workload API. The trust domain's X.509 CA is a key of purpose `x509` with
-- its certificate chain; at most one key of a purpose is active. Registration entries map
-- attested selectors to an agent; an attested instance may be held to one workflow.
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check CHECK (purpose IN ('jwt', 'audit', 'x509'));
ALTER TABLE keys ADD COLUMN cert BYTEA;
CREATE UNIQUE INDEX keys_one_active ON keys(purpose) WHERE retire_after IS NULL;
CREATE TABLE registration_entries (
    id         TEXT PRIMARY KEY,
    selectors  TEXT NOT NULL,
    -- SHA-256 of the canonical selector set: unique, and short enough for any index.
    selectors_hash TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL REFERENCES agents(name),
    workflow   TEXT REFERENCES workflows(name),
    hint       TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
ALTER TABLE instances ADD COLUMN workflow TEXT;
ALTER TABLE instances ADD COLUMN renew_until BIGINT;
"#,
    r#"
-- 14: separate trust domains for model, tool and data access: a tool's class, and each
-- class's own JWT signing key (`jwt-<class>`).
ALTER TABLE tools ADD COLUMN class TEXT NOT NULL DEFAULT 'tool' CHECK (class IN ('model', 'tool', 'data'));
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('jwt', 'audit', 'x509', 'jwt-model', 'jwt-tool', 'jwt-data'));
"#,
    r#"
-- 15: upstream secrets, sealed (envelope encryption) and versioned per tool; no value in clear.
CREATE TABLE tool_secrets (
    tool         TEXT NOT NULL REFERENCES tools(name),
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL CHECK (version > 0),
    fingerprint  TEXT NOT NULL,
    length       BIGINT NOT NULL,
    wrapped_key  BYTEA NOT NULL,
    wrapped_by   TEXT NOT NULL,
    ciphertext   BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    retire_after BIGINT,
    PRIMARY KEY (tool, name, version)
);
CREATE UNIQUE INDEX tool_secrets_one_current ON tool_secrets(tool, name) WHERE retire_after IS NULL;
"#,
    r#"
-- 16: the injecting tool proxy: a tool's upstream, routes and credential injection (JSON).
ALTER TABLE tools ADD COLUMN proxy TEXT;
"#,
    r#"
-- 17: dynamic credentials: a tool's engine (JSON), and one lease per login an engine made for
-- a task, kept until the engine confirms the login is gone.
ALTER TABLE tools ADD COLUMN database TEXT;
CREATE TABLE leases (
    id                  TEXT PRIMARY KEY,
    tool                TEXT NOT NULL REFERENCES tools(name),
    task                TEXT NOT NULL REFERENCES tasks(id),
    workflow            TEXT NOT NULL,
    agent               TEXT NOT NULL,
    engine              TEXT NOT NULL CHECK (engine IN ('postgres')),
    handle              TEXT NOT NULL UNIQUE,
    target              TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('active', 'revoking', 'revoked')),
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    revoke_requested_at BIGINT,
    revoke_reason       TEXT,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT,
    last_error          TEXT,
    revoked_at          BIGINT
);
CREATE INDEX leases_task ON leases(task);
CREATE INDEX leases_workflow ON leases(workflow, state);
CREATE INDEX leases_due ON leases(next_attempt_at) WHERE state = 'revoking';
CREATE INDEX leases_expiry ON leases(expires_at) WHERE state = 'active';
"#,
    r#"
-- 18: governance: cluster-wide jobs (holder, lease, cursor), Shared Signals streams and the
-- outbox of signed SETs waiting for their receivers, the first presenter of each bearer
-- token, per-workflow governance settings (JSON) and recertifications.
CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    held_until BIGINT NOT NULL,
    cursor     BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE ssf_streams (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    config     TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    reason     TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX ssf_streams_owner ON ssf_streams(owner);
CREATE TABLE ssf_outbox (
    stream     TEXT NOT NULL REFERENCES ssf_streams(id),
    jti        TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    set_jwt    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (stream, jti)
);
CREATE INDEX ssf_outbox_order ON ssf_outbox(stream, seq);
CREATE TABLE bearers (
    jti        TEXT PRIMARY KEY,
    task       TEXT NOT NULL,
    presenter  TEXT NOT NULL,
    first_at   BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX bearers_expiry ON bearers(expires_at);
CREATE TABLE governance_settings (
    workflow   TEXT PRIMARY KEY REFERENCES workflows(name),
    settings   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE recertifications (
    kind   TEXT NOT NULL CHECK (kind IN ('agent', 'workflow', 'grant')),
    id     TEXT NOT NULL,
    at     BIGINT NOT NULL,
    by     TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
"#,
    r#"
-- 19: accepted identity reuse: an agent serving several equivalent workflows, accepted by an
-- owner until a time.
CREATE TABLE reuse_acceptances (
    agent      TEXT PRIMARY KEY REFERENCES agents(name),
    workflows  TEXT NOT NULL,
    by         TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    r#"
-- 20: a stream's version, so an update made from a stale read (a receiver's change racing
-- the transmitter's own) is refused instead of overwriting the other.
ALTER TABLE ssf_streams ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
"#,
];

/// Brings the database to `migrations.len()` (normally all of [`MIGRATIONS`]; tests pass a
/// prefix to build a database "made by an earlier version").
pub async fn migrate(pool: &PgPool, migrations: &[&str]) -> Result<usize> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(map_err)?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS remit_schema (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT version FROM remit_schema").fetch_optional(&mut *tx).await.map_err(map_err)?;
    let current = match current {
        Some(v) => usize::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))?,
        None => {
            sqlx::query("INSERT INTO remit_schema (version) VALUES (0)").execute(&mut *tx).await.map_err(map_err)?;
            0
        }
    };
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this remit ({}); upgrade remit",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Internal(format!("postgres migration {} failed: {}", i + 1, map_err(e))))?;
        sqlx::query("UPDATE remit_schema SET version = $1")
            .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tracing::info!(version = i + 1, "applied postgres migration");
    }
    tx.commit().await.map_err(map_err)?;
    Ok(migrations.len().max(current))
}
