//! The tools area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{CredentialId, ToolName};
use remit_core::time::UnixMillis;
use remit_core::tool::{Credential, Tool, ToolClass, ToolState};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{CREDENTIAL_COLS, TOOL_COLS, ToolStore};
use crate::identity::sqlite::link_owner;
use crate::sqlite::rows::{bad, id, id_opt, json, ms, ms_opt, parsed};
use crate::sqlite::{SqliteStore, map_err};
use crate::{Result, StoreError};

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[async_trait]
impl ToolStore for SqliteStore {
    async fn create_tool(&self, t: Tool, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            c.conn
                .execute(
                    "INSERT INTO tools (name, audience, scopes, max_ttl_secs, classification, owner, state, \
                     created_at, updated_at, secret_hash, class, proxy, database) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                    params![
                        t.name.as_str(),
                        t.audience,
                        to_json(&t.scopes),
                        i64::try_from(t.max_ttl_secs).unwrap_or(i64::MAX),
                        t.classification.as_str(),
                        t.owner,
                        t.state.as_str(),
                        t.created_at.0,
                        t.updated_at.0,
                        t.secret_hash,
                        t.class.as_str(),
                        t.proxy.as_ref().map(to_json),
                        t.database.as_ref().map(to_json)
                    ],
                )
                .map_err(|e| match map_err(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "a tool named `{}` or with audience `{}` exists",
                        t.name, t.audience
                    )),
                    e => e,
                })?;
            link_owner(c.conn, "tools", t.name.as_str(), &t.owner, t.owner_id.as_ref(), t.created_at)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn tool(&self, name: &ToolName) -> Result<Option<Tool>> {
        let name = name.clone();
        self.read(move |c| one_tool(c, "name = ?1", name.as_str())).await
    }

    async fn tool_by_audience(&self, audience: &str) -> Result<Option<Tool>> {
        let audience = audience.to_owned();
        self.read(move |c| one_tool(c, "audience = ?1", &audience)).await
    }

    async fn list_tools(&self) -> Result<Vec<Tool>> {
        self.read(|c| {
            let mut s = c.prepare(&format!("SELECT {TOOL_COLS} FROM tools ORDER BY name")).map_err(map_err)?;
            let rows = s.query_map([], tool_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn set_tool_state(&self, name: &ToolName, from: ToolState, to: ToolState, audit: AuditEvent) -> Result<()> {
        let name = name.clone();
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE tools SET state = ?1, updated_at = ?2 WHERE name = ?3 AND state = ?4",
                    params![to.as_str(), audit.time.0, name.as_str(), from.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(match one_tool(c.conn, "name = ?1", name.as_str())? {
                    None => StoreError::not_found("tool", &name),
                    Some(t) => StoreError::Conflict(format!("tool `{name}` is {}", t.state.as_str())),
                });
            }
            if to == ToolState::Disabled {
                // Its database logins are cut with it, removed in the background.
                c.conn
                    .execute(
                        "UPDATE leases SET state = 'revoking', revoke_requested_at = ?1, revoke_reason = 'tool disabled', \
                         next_attempt_at = MAX(?1, COALESCE(next_attempt_at, ?1)) WHERE tool = ?2 AND state = 'active'",
                        params![audit.time.0, name.as_str()],
                    )
                    .map_err(map_err)?;
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn issue_credential(&self, cred: Credential, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "INSERT INTO credentials (id, task, tool, scopes, jkt, issued_at, expires_at) \
                     SELECT ?1,?2,?3,?4,?5,?6,?7 WHERE EXISTS (SELECT 1 FROM tasks WHERE id = ?2 AND state = 'active') \
                     AND EXISTS (SELECT 1 FROM tools WHERE name = ?3 AND state = 'active')",
                    params![
                        cred.id.as_str(),
                        cred.task.as_str(),
                        cred.tool.as_str(),
                        to_json(&cred.scopes),
                        cred.jkt,
                        cred.issued_at.0,
                        cred.expires_at.0
                    ],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "task `{}` or tool `{}` is no longer active",
                    cred.task, cred.tool
                )));
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn credential(&self, cid: &CredentialId) -> Result<Option<Credential>> {
        let cid = cid.clone();
        self.read(move |c| {
            let sql = format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = ?1");
            c.prepare_cached(&sql)
                .and_then(|mut s| s.query_row([cid.as_str()], credential_row).optional())
                .map_err(map_err)
        })
        .await
    }

    async fn prune_credentials(&self, before: UnixMillis) -> Result<u64> {
        self.delete_before("DELETE FROM credentials WHERE expires_at < ?1", before).await
    }

    async fn prune_presentations(&self, before: UnixMillis) -> Result<u64> {
        self.delete_before("DELETE FROM presentations WHERE last_at < ?1", before).await
    }

    async fn use_proof(&self, key: &str, at: UnixMillis, expires_at: UnixMillis) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |c| {
            c.conn.execute("DELETE FROM dpop_proofs WHERE expires_at < ?1", [at.0]).map_err(map_err)?;
            let n = c
                .conn
                .execute(
                    "INSERT INTO dpop_proofs (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    params![key, expires_at.0],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn forget_proof(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.write(move |c| {
            c.conn.execute("DELETE FROM dpop_proofs WHERE key = ?1", [key]).map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn record_presentation(&self, p: super::Presentation, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE presentations SET last_at = ?4, uses = uses + 1 WHERE jti = ?1 AND jkt = ?2 AND audience = ?3",
                    params![p.jti, p.jkt, p.audience, p.at.0],
                )
                .map_err(map_err)?;
            if n == 0 {
                c.conn
                    .execute(
                        "INSERT INTO presentations (jti, jkt, audience, first_at, last_at, uses) VALUES (?1,?2,?3,?4,?4,1)",
                        params![p.jti, p.jkt, p.audience, p.at.0],
                    )
                    .map_err(map_err)?;
                c.audit(audit)?;
            }
            Ok(())
        })
        .await
    }

    async fn revoke_credential(&self, cid: &CredentialId, at: UnixMillis, audit: AuditEvent) -> Result<bool> {
        let cid = cid.clone();
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE credentials SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![at.0, cid.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Ok(false);
            }
            c.audit(audit)?;
            Ok(true)
        })
        .await
    }
}

impl SqliteStore {
    /// Runs a fixed `DELETE … WHERE <time> < ?1` (pruning); how many rows went.
    async fn delete_before(&self, sql: &'static str, before: UnixMillis) -> Result<u64> {
        self.write(move |c| Ok(u64::try_from(c.conn.execute(sql, [before.0]).map_err(map_err)?).unwrap_or(0))).await
    }
}

fn one_tool(c: &Connection, cond: &str, v: &str) -> Result<Option<Tool>> {
    let sql = format!("SELECT {TOOL_COLS} FROM tools WHERE {cond}");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([v], tool_row).optional()).map_err(map_err)
}

fn tool_row(r: &Row<'_>) -> rusqlite::Result<Tool> {
    let state: String = r.get(7)?;
    Ok(Tool {
        name: id(r, 0)?,
        audience: r.get(1)?,
        scopes: json(r, 2)?,
        max_ttl_secs: u64::try_from(r.get::<_, i64>(3)?).map_err(|e| bad(3, e))?,
        classification: parsed(r, 4)?,
        owner: r.get(5)?,
        owner_id: id_opt(r, 6)?,
        state: ToolState::parse(&state).ok_or_else(|| bad(7, format!("unknown tool state `{state}`")))?,
        created_at: ms(r, 8)?,
        updated_at: ms(r, 9)?,
        secret_hash: r.get(10)?,
        orphaned_at: ms_opt(r, 11)?,
        class: {
            let c: String = r.get(12)?;
            ToolClass::parse(&c).ok_or_else(|| bad(12, format!("unknown tool class `{c}`")))?
        },
        proxy: {
            let p: Option<String> = r.get(13)?;
            p.map(|p| serde_json::from_str(&p).map_err(|e| bad(13, e))).transpose()?
        },
        database: {
            let p: Option<String> = r.get(14)?;
            p.map(|p| serde_json::from_str(&p).map_err(|e| bad(14, e))).transpose()?
        },
    })
}

fn credential_row(r: &Row<'_>) -> rusqlite::Result<Credential> {
    Ok(Credential {
        id: id(r, 0)?,
        task: id(r, 1)?,
        tool: id(r, 2)?,
        scopes: json(r, 3)?,
        jkt: r.get(4)?,
        issued_at: ms(r, 5)?,
        expires_at: ms(r, 6)?,
        revoked_at: ms_opt(r, 7)?,
    })
}
