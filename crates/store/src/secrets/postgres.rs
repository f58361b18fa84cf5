//! The secrets area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::{MAX_SECRETS_PER_TOOL, SecretVersion};
use remit_core::time::UnixMillis;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{MAX_SECRET_ROWS, SECRET_COLS, SecretStore, SecretsMarker};
use crate::postgres::rows::{corrupt, ms, ms_opt, s, typed, unsigned};
use crate::postgres::{PgStore, map_err, pg_read};
use crate::{Result, StoreError};

#[async_trait]
impl SecretStore for PgStore {
    async fn put_secret(&self, v: SecretVersion, overlap_until: UnixMillis, audit: AuditEvent) -> Result<u32> {
        self.write(move |c| {
            Box::pin(async move {
                // Locks the tool's row: versions of its secrets are numbered one at a time.
                let tool: Option<String> = sqlx::query_scalar("SELECT name FROM tools WHERE name = $1 FOR UPDATE")
                    .bind(v.tool.as_str())
                    .fetch_optional(c.conn())
                    .await
                    .map_err(map_err)?;
                if tool.is_none() {
                    return Err(StoreError::not_found("tool", &v.tool));
                }
                let (names, newest): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT COUNT(DISTINCT name) FROM tool_secrets WHERE tool = $1 AND name <> $2), \
                     (SELECT MAX(version) FROM tool_secrets WHERE tool = $1 AND name = $2)",
                )
                .bind(v.tool.as_str())
                .bind(v.name.as_str())
                .fetch_one(c.conn())
                .await
                .map_err(map_err)?;
                if newest.is_none() && names >= i64::from(MAX_SECRETS_PER_TOOL) {
                    return Err(StoreError::Conflict(format!("a tool holds at most {MAX_SECRETS_PER_TOOL} secrets")));
                }
                let version = u32::try_from(newest.unwrap_or(0) + 1).map_err(|e| corrupt(2, e))?;
                if v.version != version {
                    return Err(StoreError::Conflict(format!(
                        "secret `{}/{}` changed meanwhile; retry",
                        v.tool, v.name
                    )));
                }
                sqlx::query(
                    "UPDATE tool_secrets SET retire_after = $3 WHERE tool = $1 AND name = $2 AND retire_after IS NULL",
                )
                .bind(v.tool.as_str())
                .bind(v.name.as_str())
                .bind(overlap_until.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                sqlx::query(&format!(
                    "INSERT INTO tool_secrets ({SECRET_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,NULL)"
                ))
                .bind(v.tool.as_str())
                .bind(v.name.as_str())
                .bind(i64::from(version))
                .bind(&v.fingerprint)
                .bind(i64::from(v.length))
                .bind(&v.wrapped_key)
                .bind(&v.wrapped_by)
                .bind(&v.ciphertext)
                .bind(v.created_at.0)
                .bind(&v.created_by)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                c.audit(audit.detail([("version", version.into())]))?;
                Ok(version)
            })
        })
        .await
    }

    async fn secret_versions(&self, tool: &ToolName, name: &SecretName) -> Result<Vec<SecretVersion>> {
        let sql = format!("SELECT {SECRET_COLS} FROM tool_secrets WHERE tool = $1 AND name = $2 ORDER BY version");
        pg_read!(self, |c| async {
            let rs = sqlx::query(&sql).bind(tool.as_str()).bind(name.as_str()).fetch_all(c).await.map_err(map_err)?;
            rs.iter().map(row).collect()
        })
    }

    async fn list_secrets(&self, tool: Option<&ToolName>) -> Result<Vec<SecretVersion>> {
        let sql = format!(
            "SELECT {SECRET_COLS} FROM tool_secrets WHERE ($1::text IS NULL OR tool = $1) \
             ORDER BY tool, name, version LIMIT $2"
        );
        pg_read!(self, |c| async {
            let rs = sqlx::query(&sql)
                .bind(tool.map(|t| t.as_str()))
                .bind(i64::from(MAX_SECRET_ROWS))
                .fetch_all(c)
                .await
                .map_err(map_err)?;
            rs.iter().map(row).collect()
        })
    }

    async fn delete_secret(&self, tool: &ToolName, name: &SecretName, audit: AuditEvent) -> Result<u32> {
        let (tool, name) = (tool.clone(), name.clone());
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM tool_secrets WHERE tool = $1 AND name = $2")
                    .bind(tool.as_str())
                    .bind(name.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::not_found("secret", format!("{tool}/{name}")));
                }
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                c.audit(audit.detail([("versions", n.into())]))?;
                Ok(n)
            })
        })
        .await
    }

    async fn prune_secrets(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM tool_secrets WHERE retire_after IS NOT NULL AND retire_after < $1")
                    .bind(before.0)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                Ok(n)
            })
        })
        .await
    }

    async fn secrets_marker(&self) -> Result<SecretsMarker> {
        pg_read!(self, |c| async {
            let (versions, newest): (i64, i64) =
                sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(created_at), 0) FROM tool_secrets")
                    .fetch_one(c)
                    .await
                    .map_err(map_err)?;
            Ok(SecretsMarker { versions: versions.max(0) as u64, newest })
        })
    }
}

fn row(r: &PgRow) -> Result<SecretVersion> {
    Ok(SecretVersion {
        tool: typed(r, 0, ToolName::parse)?,
        name: typed(r, 1, SecretName::parse)?,
        version: unsigned(r, 2)?,
        fingerprint: s(r, 3)?,
        length: unsigned(r, 4)?,
        wrapped_key: r.try_get(5).map_err(map_err)?,
        wrapped_by: s(r, 6)?,
        ciphertext: r.try_get(7).map_err(map_err)?,
        created_at: ms(r, 8)?,
        created_by: s(r, 9)?,
        retire_after: ms_opt(r, 10)?,
    })
}
