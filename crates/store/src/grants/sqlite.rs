//! The grants area on SQLite.

use async_trait::async_trait;
use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::grant::{Grant, GrantState};
use remit_core::ids::{GrantId, HumanId, TaskId};
use remit_core::model::{Kill, KillReport, KillTarget};
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{GRANT_COLS, GrantStore, Revocation};
use crate::identity::sqlite::kill_switch;
use crate::sqlite::rows::{bad, id, json, ms, ms_opt};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Result, StoreError};

#[async_trait]
impl GrantStore for SqliteStore {
    async fn create(&self, g: Grant, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "INSERT INTO grants (id, human, human_email, agent, workflow, authority, max_depth, state, \
                     confirmation_hash, created_at, expires_at) SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11 \
                     WHERE EXISTS (SELECT 1 FROM humans WHERE id = ?2 AND state = 'active')",
                    params![
                        g.id.as_str(),
                        g.human.as_str(),
                        g.human_email,
                        g.agent.as_str(),
                        g.workflow.as_str(),
                        serde_json::to_string(&g.authority).unwrap_or_default(),
                        g.max_depth,
                        g.state.as_str(),
                        g.confirmation_hash,
                        g.created_at.0,
                        g.expires_at.0
                    ],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("human `{}` is not active", g.human)));
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, gid: &GrantId) -> Result<Option<Grant>> {
        let gid = gid.clone();
        self.read(move |c| one(c, &gid)).await
    }

    async fn list(&self, human: Option<&HumanId>, limit: u32) -> Result<Vec<Grant>> {
        let human = human.map(|h| h.to_string());
        self.read(move |c| {
            let sql = format!(
                "SELECT {GRANT_COLS} FROM grants WHERE (?1 IS NULL OR human = ?1) ORDER BY created_at DESC, id LIMIT ?2"
            );
            let mut s = c.prepare(&sql).map_err(map_err)?;
            let rows = s.query_map(params![human, limit.min(crate::MAX_PAGE)], row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn confirm(&self, gid: &GrantId, at: UnixMillis, audit: AuditEvent) -> Result<()> {
        let gid = gid.clone();
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE grants SET state = 'active', confirmed_at = ?1 WHERE id = ?2 AND state = 'proposed' \
                     AND expires_at > ?1 AND EXISTS (SELECT 1 FROM humans h WHERE h.id = grants.human AND h.state = 'active')",
                    params![at.0, gid.as_str()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("grant `{gid}` is no longer waiting for confirmation")));
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn revoke(&self, gid: &GrantId, r: Revocation, audit: AuditEvent) -> Result<KillReport> {
        let gid = gid.clone();
        self.write(move |c| {
            let (ids, report) = revoke_where(c, "id = ?1", gid.as_str(), &r)?;
            if ids.is_empty() {
                return Err(match one(c.conn, &gid)? {
                    None => StoreError::not_found("grant", &gid),
                    Some(_) => StoreError::Conflict(format!("grant `{gid}` is already revoked")),
                });
            }
            c.audit(audit)?;
            Ok(report)
        })
        .await
    }
}

/// Revokes the grants matching `cond` (on `grants`, bound to `?1 = value`) that are not
/// revoked yet, and kills every live task under them with its subtree. Used by a grant's own
/// revocation and by a human's deactivation (their grants end with them).
pub(crate) fn revoke_where(
    c: &mut WriteCtx<'_>,
    cond: &str,
    value: &str,
    r: &Revocation,
) -> Result<(Vec<GrantId>, KillReport)> {
    let ids: Vec<String> = {
        let mut s = c
            .conn
            .prepare(&format!(
                "UPDATE grants SET state = 'revoked', revoked_at = ?2 WHERE {cond} AND state != 'revoked' RETURNING id"
            ))
            .map_err(map_err)?;
        let rows = s.query_map(params![value, r.at.0], |row| row.get::<_, String>(0)).map_err(map_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?
    };
    let mut report = KillReport::default();
    for g in &ids {
        let tasks: Vec<String> = {
            let mut s = c
                .conn
                .prepare("SELECT id FROM tasks WHERE grant_id = ?1 AND state = 'active' ORDER BY created_at, id")
                .map_err(map_err)?;
            let rows = s.query_map([g], |row| row.get::<_, String>(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?
        };
        for t in tasks {
            // An earlier kill in this loop may have ended it with its parent's subtree.
            let live: Option<String> = c
                .conn
                .query_row("SELECT id FROM tasks WHERE id = ?1 AND state = 'active'", [&t], |row| row.get(0))
                .optional()
                .map_err(map_err)?;
            if live.is_none() {
                continue;
            }
            let id = TaskId::parse(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let k = Kill { target: KillTarget::Task(id), actor: r.actor.clone(), reason: r.reason.clone(), at: r.at };
            let rep = kill_switch(c, k)?;
            report.tasks_revoked.extend(rep.tasks_revoked);
            report.leases_pending += rep.leases_pending;
        }
        let e = AuditEvent::new(r.at, r.actor.clone(), AuditAction::GrantRevoke)
            .reason(r.reason.clone())
            .detail([("grant", g.as_str().into())]);
        if cond != "id = ?1" {
            // A grant's own revocation is recorded by its caller; these end with something else.
            c.audit(e)?;
        }
    }
    report.tasks_revoked.sort();
    let ids = ids
        .iter()
        .map(|s| GrantId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    Ok((ids, report))
}

fn one(c: &Connection, gid: &GrantId) -> Result<Option<Grant>> {
    let sql = format!("SELECT {GRANT_COLS} FROM grants WHERE id = ?1");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([gid.as_str()], row).optional()).map_err(map_err)
}

fn row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    let state: String = r.get(7)?;
    Ok(Grant {
        id: id(r, 0)?,
        human: id(r, 1)?,
        human_email: r.get(2)?,
        agent: id(r, 3)?,
        workflow: id(r, 4)?,
        authority: json(r, 5)?,
        max_depth: r.get(6)?,
        state: GrantState::parse(&state).ok_or_else(|| bad(7, format!("unknown grant state `{state}`")))?,
        confirmation_hash: r.get(8)?,
        created_at: ms(r, 9)?,
        expires_at: ms(r, 10)?,
        confirmed_at: ms_opt(r, 11)?,
        revoked_at: ms_opt(r, 12)?,
    })
}
