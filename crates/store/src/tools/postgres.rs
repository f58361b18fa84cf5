//! The tools area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{CredentialId, HumanId, TaskId, ToolName};
use remit_core::time::UnixMillis;
use remit_core::tool::{Credential, Tool, ToolClass, ToolState};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{CREDENTIAL_COLS, TOOL_COLS, ToolStore};
use crate::identity::postgres::link_owner;
use crate::postgres::rows::{corrupt, json, ms, ms_opt, parsed, s, so, typed, typed_opt, unsigned};
use crate::postgres::{PgStore, i64_of, map_err, pg_read};
use crate::{Result, StoreError};

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[async_trait]
impl ToolStore for PgStore {
    async fn create_tool(&self, t: Tool, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO tools (name, audience, scopes, max_ttl_secs, classification, owner, state, \
                     created_at, updated_at, secret_hash, class, proxy, database) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                )
                .bind(t.name.as_str())
                .bind(&t.audience)
                .bind(to_json(&t.scopes))
                .bind(i64_of(t.max_ttl_secs)?)
                .bind(t.classification.as_str())
                .bind(&t.owner)
                .bind(t.state.as_str())
                .bind(t.created_at.0)
                .bind(t.updated_at.0)
                .bind(&t.secret_hash)
                .bind(t.class.as_str())
                .bind(t.proxy.as_ref().map(to_json))
                .bind(t.database.as_ref().map(to_json))
                .execute(c.conn())
                .await
                .map_err(|e| match map_err(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "a tool named `{}` or with audience `{}` exists",
                        t.name, t.audience
                    )),
                    e => e,
                })?;
                link_owner(c.conn(), "tools", t.name.as_str(), &t.owner, t.owner_id.as_ref(), t.created_at).await?;
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn tool(&self, name: &ToolName) -> Result<Option<Tool>> {
        pg_read!(self, |c| one_tool(c, "name = $1", name.as_str()))
    }

    async fn tool_by_audience(&self, audience: &str) -> Result<Option<Tool>> {
        pg_read!(self, |c| one_tool(c, "audience = $1", audience))
    }

    async fn list_tools(&self) -> Result<Vec<Tool>> {
        let sql = format!("SELECT {TOOL_COLS} FROM tools ORDER BY name");
        let rs: Result<Vec<PgRow>> =
            pg_read!(self, |c| async { sqlx::query(&sql).fetch_all(c).await.map_err(map_err) });
        rs?.iter().map(tool_row).collect()
    }

    async fn set_tool_state(&self, name: &ToolName, from: ToolState, to: ToolState, audit: AuditEvent) -> Result<()> {
        let name = name.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE tools SET state = $1, updated_at = $2 WHERE name = $3 AND state = $4")
                    .bind(to.as_str())
                    .bind(audit.time.0)
                    .bind(name.as_str())
                    .bind(from.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 0 {
                    return Err(match one_tool(c.conn(), "name = $1", name.as_str()).await? {
                        None => StoreError::not_found("tool", &name),
                        Some(t) => StoreError::Conflict(format!("tool `{name}` is {}", t.state.as_str())),
                    });
                }
                if to == ToolState::Disabled {
                    // Its database logins are cut with it, removed in the background.
                    sqlx::query(
                        "UPDATE leases SET state = 'revoking', revoke_requested_at = $1, revoke_reason = 'tool disabled', \
                         next_attempt_at = GREATEST($1, COALESCE(next_attempt_at, $1)) WHERE tool = $2 AND state = 'active'",
                    )
                    .bind(audit.time.0)
                    .bind(name.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn issue_credential(&self, cred: Credential, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "INSERT INTO credentials (id, task, tool, scopes, jkt, issued_at, expires_at) \
                     SELECT $1,$2,$3,$4,$5,$6,$7 WHERE EXISTS (SELECT 1 FROM tasks WHERE id = $2 AND state = 'active') \
                     AND EXISTS (SELECT 1 FROM tools WHERE name = $3 AND state = 'active')",
                )
                .bind(cred.id.as_str())
                .bind(cred.task.as_str())
                .bind(cred.tool.as_str())
                .bind(to_json(&cred.scopes))
                .bind(cred.jkt.as_deref())
                .bind(cred.issued_at.0)
                .bind(cred.expires_at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "task `{}` or tool `{}` is no longer active",
                        cred.task, cred.tool
                    )));
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn credential(&self, id: &CredentialId) -> Result<Option<Credential>> {
        let sql = format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = $1");
        let r: Result<Option<PgRow>> =
            pg_read!(self, |c| async { sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err) });
        r?.as_ref().map(credential_row).transpose()
    }

    async fn prune_credentials(&self, before: UnixMillis) -> Result<u64> {
        self.delete_before("DELETE FROM credentials WHERE expires_at < $1", before).await
    }

    async fn prune_presentations(&self, before: UnixMillis) -> Result<u64> {
        self.delete_before("DELETE FROM presentations WHERE last_at < $1", before).await
    }

    async fn use_proof(&self, key: &str, at: UnixMillis, expires_at: UnixMillis) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM dpop_proofs WHERE expires_at < $1")
                    .bind(at.0)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                let n = sqlx::query(
                    "INSERT INTO dpop_proofs (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(&key)
                .bind(expires_at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                Ok(n == 1)
            })
        })
        .await
    }

    async fn forget_proof(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM dpop_proofs WHERE key = $1")
                    .bind(&key)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                Ok(())
            })
        })
        .await
    }
    async fn record_presentation(&self, p: super::Presentation, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE presentations SET last_at = $4, uses = uses + 1 WHERE jti = $1 AND jkt = $2 AND audience = $3",
                )
                .bind(&p.jti)
                .bind(&p.jkt)
                .bind(&p.audience)
                .bind(p.at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    let n = sqlx::query(
                        "INSERT INTO presentations (jti, jkt, audience, first_at, last_at, uses) VALUES ($1,$2,$3,$4,$4,1) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&p.jti)
                    .bind(&p.jkt)
                    .bind(&p.audience)
                    .bind(p.at.0)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                    if n == 1 {
                        c.audit(audit)?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn revoke_credential(&self, id: &CredentialId, at: UnixMillis, audit: AuditEvent) -> Result<bool> {
        let id = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE credentials SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(at.0)
                    .bind(id.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                c.audit(audit)?;
                Ok(true)
            })
        })
        .await
    }
}

impl PgStore {
    /// Runs a fixed `DELETE … WHERE <time> < $1` (pruning); how many rows went.
    async fn delete_before(&self, sql: &'static str, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(sql).bind(before.0).execute(c.conn()).await.map_err(map_err)?.rows_affected())
            })
        })
        .await
    }
}

async fn one_tool(c: &mut PgConnection, cond: &str, v: &str) -> Result<Option<Tool>> {
    let sql = format!("SELECT {TOOL_COLS} FROM tools WHERE {cond}");
    let r = sqlx::query(&sql).bind(v).fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(tool_row).transpose()
}

fn tool_row(r: &PgRow) -> Result<Tool> {
    let state = s(r, 7)?;
    Ok(Tool {
        name: typed(r, 0, ToolName::parse)?,
        audience: s(r, 1)?,
        scopes: json(r, 2)?,
        max_ttl_secs: unsigned(r, 3)?,
        classification: parsed(r, 4)?,
        owner: s(r, 5)?,
        owner_id: typed_opt(r, 6, HumanId::parse)?,
        state: ToolState::parse(&state).ok_or_else(|| corrupt(7, format!("unknown tool state `{state}`")))?,
        created_at: ms(r, 8)?,
        updated_at: ms(r, 9)?,
        secret_hash: s(r, 10)?,
        orphaned_at: ms_opt(r, 11)?,
        class: {
            let c = s(r, 12)?;
            ToolClass::parse(&c).ok_or_else(|| corrupt(12, format!("unknown tool class `{c}`")))?
        },
        proxy: so(r, 13)?.map(|p| serde_json::from_str(&p).map_err(|e| corrupt(13, e))).transpose()?,
        database: so(r, 14)?.map(|p| serde_json::from_str(&p).map_err(|e| corrupt(14, e))).transpose()?,
    })
}

fn credential_row(r: &PgRow) -> Result<Credential> {
    Ok(Credential {
        id: typed(r, 0, CredentialId::parse)?,
        task: typed(r, 1, TaskId::parse)?,
        tool: typed(r, 2, ToolName::parse)?,
        scopes: json(r, 3)?,
        jkt: so(r, 4)?,
        issued_at: ms(r, 5)?,
        expires_at: ms(r, 6)?,
        revoked_at: ms_opt(r, 7)?,
    })
}
