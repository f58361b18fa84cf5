//! SQLite schema and migrations.
//!
//! Migrations are numbered and applied in order inside one transaction each; the applied
//! version is kept in `PRAGMA user_version`, so a database made by an earlier Remit is
//! upgraded in place and one made by a newer Remit is refused.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry is one migration; never edit one that has shipped, append a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE keys (
    kid          TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('jwt', 'audit')),
    sealed       BLOB NOT NULL,
    public       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retire_after INTEGER
) STRICT;

CREATE TABLE workflows (
    name                 TEXT PRIMARY KEY,
    purpose              TEXT NOT NULL,
    owner                TEXT NOT NULL,
    ceiling              TEXT NOT NULL,
    allowed_tools        TEXT NOT NULL,
    max_task_ttl_secs    INTEGER NOT NULL,
    max_delegation_depth INTEGER NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    workflows  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('enabled', 'disabled')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE join_tokens (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
) STRICT;

CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    agent         TEXT NOT NULL REFERENCES agents(name),
    state         TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT
) STRICT;
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
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT
) STRICT;
CREATE INDEX tasks_by_workflow ON tasks(workflow, created_at);
CREATE INDEX tasks_active_by_workflow ON tasks(workflow) WHERE state = 'active';
CREATE INDEX tasks_active_by_agent ON tasks(agent) WHERE state = 'active';
CREATE INDEX tasks_by_instance ON tasks(instance) WHERE instance IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks(parent) WHERE parent IS NOT NULL;

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    time      INTEGER NOT NULL,
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
) STRICT;
CREATE INDEX audit_by_workflow ON audit(workflow, seq) WHERE workflow IS NOT NULL;
CREATE INDEX audit_by_task ON audit(task, seq) WHERE task IS NOT NULL;
CREATE INDEX audit_by_agent ON audit(agent, seq) WHERE agent IS NOT NULL;
CREATE INDEX audit_by_time ON audit(time);
-- Append-only. Someone with the file can drop these; the hash chain and the signed
-- checkpoints are what detect that.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;

CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    head_hash TEXT NOT NULL,
    time      INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
) STRICT;
"#,
    r#"
-- 2: policy bundles (versioned; the highest is active) and the attribute store.
CREATE TABLE policy_sets (
    version    INTEGER PRIMARY KEY,
    bundle     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
) STRICT;

CREATE TABLE entities (
    etype      TEXT NOT NULL,
    id         TEXT NOT NULL,
    attrs      TEXT NOT NULL,
    parents    TEXT NOT NULL,
    aliases    TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (etype, id)
) STRICT;

CREATE TABLE entity_aliases (
    etype TEXT NOT NULL,
    alias TEXT NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (etype, alias)
) STRICT;
"#,
    r#"
-- 3: approval requests for calls that policy marks `@approval`.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
    digest          TEXT NOT NULL,
    policy_version  INTEGER NOT NULL,
    request         TEXT NOT NULL,
    reasons         TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requested_at    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    decided_by      TEXT,
    decided_at      INTEGER,
    decision_reason TEXT,
    used_at         INTEGER
) STRICT;
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
    first_used_at INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    uses          INTEGER NOT NULL,
    PRIMARY KEY (task_id, tool)
) STRICT, WITHOUT ROWID;
"#,
    r#"
-- 5: kills of an agent are counted, and its unused join tokens revoked (a token made under
-- an earlier kill generation never redeems); key rows carry a MAC under the KEK.
ALTER TABLE agents ADD COLUMN kill_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE join_tokens ADD COLUMN agent_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE join_tokens ADD COLUMN revoked_at INTEGER;
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
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    deactivated_at INTEGER,
    CHECK ((ext_issuer IS NULL) = (ext_subject IS NULL))
) STRICT;
CREATE UNIQUE INDEX humans_by_external ON humans(ext_issuer, ext_subject) WHERE ext_issuer IS NOT NULL;

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    human         TEXT NOT NULL REFERENCES humans(id),
    method        TEXT NOT NULL,
    access_hash   TEXT NOT NULL,
    refresh_hash  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    refresh_until INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT
) STRICT;
CREATE INDEX sessions_by_human ON sessions(human, created_at);

ALTER TABLE workflows ADD COLUMN owner_id TEXT REFERENCES humans(id);
ALTER TABLE workflows ADD COLUMN orphaned_at INTEGER;
ALTER TABLE agents ADD COLUMN owner_id TEXT REFERENCES humans(id);
ALTER TABLE agents ADD COLUMN orphaned_at INTEGER;
CREATE INDEX workflows_by_owner ON workflows(owner_id);
CREATE INDEX agents_by_owner ON agents(owner_id);

INSERT INTO humans (id, email, display_name, state, roles, member_of, created_at, updated_at)
SELECT 'h-' || lower(hex(randomblob(16))), o, '', 'unverified', '[]', '[]',
       CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER)
FROM (SELECT lower(trim(owner)) AS o FROM workflows UNION SELECT lower(trim(owner)) FROM agents)
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
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (kind, id)
) STRICT;
CREATE UNIQUE INDEX scim_live_names ON scim_resources(kind, lower(name)) WHERE deleted_at IS NULL;
"#,
    r#"
-- 8: local humans (no identity provider): an argon2id password hash, a sealed TOTP secret,
-- and the failures that lock the account.
CREATE TABLE local_credentials (
    human          TEXT PRIMARY KEY REFERENCES humans(id),
    password_hash  TEXT NOT NULL,
    totp           BLOB,
    totp_confirmed INTEGER NOT NULL DEFAULT 0,
    last_totp_step INTEGER,
    failures       INTEGER NOT NULL,
    locked_until   INTEGER,
    updated_at     INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- 9: the identity provider's refresh token of an OIDC session (sealed under the KEK), so a
-- Remit refresh first renews the sign-in at the provider.
CREATE TABLE session_idp_tokens (
    session    TEXT PRIMARY KEY REFERENCES sessions(id),
    provider   TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- 10: registered tools and the per-tool credentials issued by token exchange (never the
-- token: what it said, so introspection and revocation can find it).
CREATE TABLE tools (
    name           TEXT PRIMARY KEY,
    audience       TEXT NOT NULL UNIQUE,
    scopes         TEXT NOT NULL,
    max_ttl_secs   INTEGER NOT NULL,
    classification TEXT NOT NULL,
    owner          TEXT NOT NULL,
    owner_id       TEXT REFERENCES humans(id),
    orphaned_at    INTEGER,
    state          TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE TABLE credentials (
    id         TEXT PRIMARY KEY,
    task       TEXT NOT NULL REFERENCES tasks(id),
    tool       TEXT NOT NULL REFERENCES tools(name),
    scopes     TEXT NOT NULL,
    jkt        TEXT,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE INDEX credentials_task ON credentials(task);
CREATE INDEX credentials_expiry ON credentials(expires_at);
"#,
    r#"
-- 11: delegation. A task's place in its delegation tree (depth, ancestors, the authority it
-- holds), and a workflow's transitive-trust rules; both JSON, both defaulting to "none".
ALTER TABLE tasks ADD COLUMN delegation TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workflows ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';
-- The allowed calls of a task whose delegation limits them (max_calls).
ALTER TABLE tasks ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
-- Humans' grants to agents; a task started under one names it in its delegation.
CREATE TABLE grants (
    id                TEXT PRIMARY KEY,
    human             TEXT NOT NULL REFERENCES humans(id),
    human_email       TEXT NOT NULL,
    agent             TEXT NOT NULL,
    workflow          TEXT NOT NULL,
    authority         TEXT NOT NULL,
    max_depth         INTEGER NOT NULL,
    state             TEXT NOT NULL,
    confirmation_hash TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    confirmed_at      INTEGER,
    revoked_at        INTEGER
) STRICT;
CREATE INDEX grants_human ON grants(human);
ALTER TABLE tasks ADD COLUMN grant_id TEXT GENERATED ALWAYS AS (json_extract(delegation, '$.grant')) VIRTUAL;
CREATE INDEX tasks_grant ON tasks(grant_id) WHERE grant_id IS NOT NULL;
-- DPoP: the proofs seen (replay cache shared by replicas; rows expire) and the presentations
-- of sender-constrained tokens (token jti, key thumbprint, audience).
CREATE TABLE dpop_proofs (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX dpop_proofs_expiry ON dpop_proofs(expires_at);
CREATE TABLE presentations (
    jti      TEXT NOT NULL,
    jkt      TEXT NOT NULL,
    audience TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    uses     INTEGER NOT NULL,
    PRIMARY KEY (jti, jkt, audience)
) STRICT;
"#,
    r#"
-- 12: a grant's call budget is shared by every task under it (counted here).
ALTER TABLE grants ADD COLUMN calls INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- 13: the SPIFFE Workload API. The trust domain's X.509 CA is a key of purpose `x509` with
-- its certificate chain; at most one key of a purpose is active. Registration entries map
-- attested selectors to an agent; an attested instance may be held to one workflow.
CREATE TABLE keys_13 (
    kid          TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('jwt', 'audit', 'x509')),
    sealed       BLOB NOT NULL,
    public       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retire_after INTEGER,
    mac          TEXT,
    cert         BLOB
) STRICT;
INSERT INTO keys_13 (kid, purpose, sealed, public, created_at, retire_after, mac)
    SELECT kid, purpose, sealed, public, created_at, retire_after, mac FROM keys;
DROP TABLE keys;
ALTER TABLE keys_13 RENAME TO keys;
CREATE UNIQUE INDEX keys_one_active ON keys(purpose) WHERE retire_after IS NULL;
CREATE TABLE registration_entries (
    id         TEXT PRIMARY KEY,
    selectors  TEXT NOT NULL,
    -- SHA-256 of the canonical selector set: unique, and short enough for any index.
    selectors_hash TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL REFERENCES agents(name),
    workflow   TEXT REFERENCES workflows(name),
    hint       TEXT,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
) STRICT;
ALTER TABLE instances ADD COLUMN workflow TEXT;
ALTER TABLE instances ADD COLUMN renew_until INTEGER;
"#,
    r#"
-- 14: separate trust domains for model, tool and data access: a tool's class, and each
-- class's own JWT signing key (`jwt-<class>`).
ALTER TABLE tools ADD COLUMN class TEXT NOT NULL DEFAULT 'tool' CHECK (class IN ('model', 'tool', 'data'));
CREATE TABLE keys_14 (
    kid          TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL
                 CHECK (purpose IN ('jwt', 'audit', 'x509', 'jwt-model', 'jwt-tool', 'jwt-data')),
    sealed       BLOB NOT NULL,
    public       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retire_after INTEGER,
    mac          TEXT,
    cert         BLOB
) STRICT;
INSERT INTO keys_14 (kid, purpose, sealed, public, created_at, retire_after, mac, cert)
    SELECT kid, purpose, sealed, public, created_at, retire_after, mac, cert FROM keys;
DROP TABLE keys;
ALTER TABLE keys_14 RENAME TO keys;
CREATE UNIQUE INDEX keys_one_active ON keys(purpose) WHERE retire_after IS NULL;
"#,
    r#"
-- 15: upstream secrets, sealed (envelope encryption) and versioned per tool; no value in clear.
CREATE TABLE tool_secrets (
    tool         TEXT NOT NULL REFERENCES tools(name),
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version > 0),
    fingerprint  TEXT NOT NULL,
    length       INTEGER NOT NULL,
    wrapped_key  BLOB NOT NULL,
    wrapped_by   TEXT NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    retire_after INTEGER,
    PRIMARY KEY (tool, name, version)
) STRICT;
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
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    revoke_requested_at INTEGER,
    revoke_reason       TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER,
    last_error          TEXT,
    revoked_at          INTEGER
) STRICT;
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
    held_until INTEGER NOT NULL,
    cursor     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE ssf_streams (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    config     TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
    reason     TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX ssf_streams_owner ON ssf_streams(owner);
CREATE TABLE ssf_outbox (
    stream     TEXT NOT NULL REFERENCES ssf_streams(id),
    jti        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    set_jwt    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_error TEXT,
    PRIMARY KEY (stream, jti)
) STRICT;
CREATE INDEX ssf_outbox_order ON ssf_outbox(stream, seq);
CREATE TABLE bearers (
    jti        TEXT PRIMARY KEY,
    task       TEXT NOT NULL,
    presenter  TEXT NOT NULL,
    first_at   INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX bearers_expiry ON bearers(expires_at);
CREATE TABLE governance_settings (
    workflow   TEXT PRIMARY KEY REFERENCES workflows(name),
    settings   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE recertifications (
    kind   TEXT NOT NULL CHECK (kind IN ('agent', 'workflow', 'grant')),
    id     TEXT NOT NULL,
    at     INTEGER NOT NULL,
    by     TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT;
"#,
    r#"
-- 19: accepted identity reuse: an agent serving several equivalent workflows, accepted by an
-- owner until a time.
CREATE TABLE reuse_acceptances (
    agent      TEXT PRIMARY KEY REFERENCES agents(name),
    workflows  TEXT NOT NULL,
    by         TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
"#,
    r#"
-- 20: a stream's version, so an update made from a stale read (a receiver's change racing
-- the transmitter's own) is refused instead of overwriting the other.
ALTER TABLE ssf_streams ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
"#,
];

/// Brings `conn` to the newest schema.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let internal = |e: rusqlite::Error| StoreError::Internal(format!("migration failed: {e}"));
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(internal)?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this remit ({}); upgrade remit",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(internal)?;
        tx.execute_batch(sql).map_err(internal)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(internal)?;
        tx.commit().map_err(internal)?;
        tracing::info!(version = i + 1, "applied sqlite migration");
    }
    Ok(())
}
