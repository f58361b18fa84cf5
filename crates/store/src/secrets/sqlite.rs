//! The secrets area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{SecretName, ToolName};
use remit_core::secret::{MAX_SECRETS_PER_TOOL, SecretVersion};
use remit_core::time::UnixMillis;
use rusqlite::{Row, params};

use super::{MAX_SECRET_ROWS, SECRET_COLS, SecretStore, SecretsMarker};
use crate::sqlite::rows::{bad, id, ms, ms_opt};
use crate::sqlite::{SqliteStore, map_err};
use crate::{Result, StoreError};

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(&self, v: SecretVersion, overlap_until: UnixMillis, audit: AuditEvent) -> Result<u32> {
        self.write(move |c| {
            let tool_exists: bool = c
                .conn
                .query_row("SELECT EXISTS (SELECT 1 FROM tools WHERE name = ?1)", [v.tool.as_str()], |r| r.get(0))
                .map_err(map_err)?;
            if !tool_exists {
                return Err(StoreError::not_found("tool", &v.tool));
            }
            let (names, newest): (u32, Option<u32>) = c
                .conn
                .query_row(
                    "SELECT (SELECT COUNT(DISTINCT name) FROM tool_secrets WHERE tool = ?1 AND name <> ?2), \
                     (SELECT MAX(version) FROM tool_secrets WHERE tool = ?1 AND name = ?2)",
                    params![v.tool.as_str(), v.name.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(map_err)?;
            if newest.is_none() && names >= MAX_SECRETS_PER_TOOL {
                return Err(StoreError::Conflict(format!("a tool holds at most {MAX_SECRETS_PER_TOOL} secrets")));
            }
            let version = newest.unwrap_or(0) + 1;
            if v.version != version {
                return Err(StoreError::Conflict(format!("secret `{}/{}` changed meanwhile; retry", v.tool, v.name)));
            }
            c.conn
                .execute(
                    "UPDATE tool_secrets SET retire_after = ?3 \
                     WHERE tool = ?1 AND name = ?2 AND retire_after IS NULL",
                    params![v.tool.as_str(), v.name.as_str(), overlap_until.0],
                )
                .map_err(map_err)?;
            c.conn
                .execute(
                    &format!("INSERT INTO tool_secrets ({SECRET_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,NULL)"),
                    params![
                        v.tool.as_str(),
                        v.name.as_str(),
                        version,
                        v.fingerprint,
                        v.length,
                        v.wrapped_key,
                        v.wrapped_by,
                        v.ciphertext,
                        v.created_at.0,
                        v.created_by
                    ],
                )
                .map_err(map_err)?;
            c.audit(audit.detail([("version", version.into())]))?;
            Ok(version)
        })
        .await
    }

    async fn secret_versions(&self, tool: &ToolName, name: &SecretName) -> Result<Vec<SecretVersion>> {
        let (tool, name) = (tool.clone(), name.clone());
        self.read(move |c| {
            let sql = format!("SELECT {SECRET_COLS} FROM tool_secrets WHERE tool = ?1 AND name = ?2 ORDER BY version");
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = s.query_map([tool.as_str(), name.as_str()], row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn list_secrets(&self, tool: Option<&ToolName>) -> Result<Vec<SecretVersion>> {
        let tool = tool.cloned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {SECRET_COLS} FROM tool_secrets WHERE (?1 IS NULL OR tool = ?1) \
                 ORDER BY tool, name, version LIMIT ?2"
            );
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let rows =
                s.query_map(params![tool.as_ref().map(|t| t.as_str()), MAX_SECRET_ROWS], row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn delete_secret(&self, tool: &ToolName, name: &SecretName, audit: AuditEvent) -> Result<u32> {
        let (tool, name) = (tool.clone(), name.clone());
        self.write(move |c| {
            let n = c
                .conn
                .execute("DELETE FROM tool_secrets WHERE tool = ?1 AND name = ?2", [tool.as_str(), name.as_str()])
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found("secret", format!("{tool}/{name}")));
            }
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            c.audit(audit.detail([("versions", n.into())]))?;
            Ok(n)
        })
        .await
    }

    async fn prune_secrets(&self, before: UnixMillis) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .conn
                .execute("DELETE FROM tool_secrets WHERE retire_after IS NOT NULL AND retire_after < ?1", [before.0])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn secrets_marker(&self) -> Result<SecretsMarker> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*), COALESCE(MAX(created_at), 0) FROM tool_secrets", [], |r| {
                Ok(SecretsMarker { versions: r.get::<_, i64>(0)?.max(0) as u64, newest: r.get(1)? })
            })
            .map_err(map_err)
        })
        .await
    }
}

fn row(r: &Row<'_>) -> rusqlite::Result<SecretVersion> {
    Ok(SecretVersion {
        tool: id(r, 0)?,
        name: id(r, 1)?,
        version: r.get(2)?,
        fingerprint: r.get(3)?,
        length: r.get(4)?,
        wrapped_key: r.get(5)?,
        wrapped_by: r.get(6)?,
        ciphertext: r.get(7)?,
        created_at: ms(r, 8)?,
        created_by: r.get(9)?,
        retire_after: ms_opt(r, 10)?,
    })
    .and_then(|v: SecretVersion| if v.version == 0 { Err(bad(2, "version 0")) } else { Ok(v) })
}
