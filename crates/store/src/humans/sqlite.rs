//! The humans area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::human::{External, Human, HumanState, LocalCredential, Session};
use remit_core::ids::{AgentName, HumanId, SessionId, WorkflowName};
use remit_core::time::UnixMillis;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Deactivation, HUMAN_COLS, HumanStore, LOCAL_COLS, SESSION_COLS, deactivation_record, json, parse_all};
use crate::sqlite::rows::{bad, id, json as json_col, ms, ms_opt, parsed};
use crate::sqlite::{SqliteStore, WriteCtx, map_err};
use crate::{Change, Result, StoreError};

#[async_trait]
impl HumanStore for SqliteStore {
    async fn create(&self, h: Human, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            insert(c.conn, &h)?;
            c.audit(audit)?;
            c.changed([Change::Human(h.id.clone())]);
            Ok(())
        })
        .await
    }
    async fn get(&self, id: &HumanId) -> Result<Option<Human>> {
        let id = id.clone();
        self.read(move |c| one(c, "id = ?1", params![id.as_str()])).await
    }
    async fn by_email(&self, email: &str) -> Result<Option<Human>> {
        let email = email.to_owned();
        self.read(move |c| one(c, "email = ?1", params![email])).await
    }
    async fn by_external(&self, issuer: &str, subject: &str) -> Result<Option<Human>> {
        let (i, s) = (issuer.to_owned(), subject.to_owned());
        self.read(move |c| one(c, "ext_issuer = ?1 AND ext_subject = ?2", params![i, s])).await
    }
    async fn list(&self, state: Option<HumanState>, after: Option<String>, limit: u32) -> Result<Vec<Human>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {HUMAN_COLS} FROM humans WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR email > ?2) \
                 ORDER BY email LIMIT {}",
                limit.clamp(1, crate::MAX_PAGE)
            );
            let mut s = c.prepare(&sql).map_err(map_err)?;
            let rows = s.query_map(params![state.map(HumanState::as_str), after], human).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
    async fn update(&self, h: Human, read_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            update(c.conn, &h, read_at)?;
            c.audit(audit)?;
            c.changed([Change::Human(h.id.clone())]);
            Ok(())
        })
        .await
    }
    async fn ensure(&self, placeholder: Human, audit: AuditEvent) -> Result<Human> {
        self.write(move |c| {
            if let Some(h) = one(c.conn, "email = ?1", params![placeholder.email])? {
                return Ok(h);
            }
            insert(c.conn, &placeholder)?;
            c.audit(audit)?;
            c.changed([Change::Human(placeholder.id.clone())]);
            Ok(placeholder)
        })
        .await
    }
    async fn sign_in(&self, h: Human, read_at: Option<UnixMillis>, s: Session, audit: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            match read_at {
                None => insert(c.conn, &h)?,
                Some(at) => update(c.conn, &h, at)?,
            }
            insert_session(c.conn, &s)?;
            for e in audit {
                c.audit(e)?;
            }
            c.changed([Change::Human(h.id.clone()), Change::Session(s.id.clone())]);
            Ok(())
        })
        .await
    }
    async fn deactivate(&self, id: &HumanId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Deactivation> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.write(move |c| deactivate(c, &id, at, &reason, audit)).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<(Session, Human)>> {
        let id = id.clone();
        self.read(move |c| {
            let Some(s) = session(c, &id)? else { return Ok(None) };
            let h = one(c, "id = ?1", params![s.human.as_str()])?
                .ok_or_else(|| StoreError::Corrupt(format!("session `{id}` names no human")))?;
            Ok(Some((s, h)))
        })
        .await
    }
    async fn sessions_of(&self, human: &HumanId) -> Result<Vec<Session>> {
        let human = human.clone();
        self.read(move |c| {
            let sql =
                format!("SELECT {SESSION_COLS} FROM sessions WHERE human = ?1 ORDER BY created_at DESC LIMIT 1000");
            let mut s = c.prepare(&sql).map_err(map_err)?;
            let rows = s.query_map([human.as_str()], session_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
    async fn refresh(&self, next: Session, replaced_refresh_hash: &str, audit: AuditEvent) -> Result<()> {
        let replaced = replaced_refresh_hash.to_owned();
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE sessions SET access_hash = ?1, refresh_hash = ?2, expires_at = ?3 \
                     WHERE id = ?4 AND refresh_hash = ?5 AND revoked_at IS NULL",
                    params![next.access_hash, next.refresh_hash, next.expires_at.0, next.id.as_str(), replaced],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("session `{}` was refreshed or revoked meanwhile", next.id)));
            }
            c.audit(audit)?;
            c.changed([Change::Session(next.id.clone())]);
            Ok(())
        })
        .await
    }
    async fn create_local(&self, h: Human, c: LocalCredential, audit: AuditEvent) -> Result<()> {
        self.write(move |ctx| {
            insert(ctx.conn, &h)?;
            put_local(ctx.conn, &c, None)?;
            ctx.audit(audit)?;
            ctx.changed([Change::Human(h.id.clone())]);
            Ok(())
        })
        .await
    }
    async fn local_credential(&self, human: &HumanId) -> Result<Option<LocalCredential>> {
        let human = human.clone();
        self.read(move |c| {
            let sql = format!("SELECT {LOCAL_COLS} FROM local_credentials WHERE human = ?1");
            c.prepare_cached(&sql)
                .and_then(|mut s| s.query_row([human.as_str()], local_row).optional())
                .map_err(map_err)
        })
        .await
    }
    async fn put_local_credential(
        &self,
        c: LocalCredential,
        read_at: UnixMillis,
        audit: Option<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx| {
            put_local(ctx.conn, &c, Some(read_at))?;
            if let Some(a) = audit {
                ctx.audit(a)?;
            }
            Ok(())
        })
        .await
    }
    async fn put_idp_refresh(
        &self,
        session: &SessionId,
        provider: &str,
        sealed: Vec<u8>,
        at: UnixMillis,
    ) -> Result<()> {
        let (session, provider) = (session.clone(), provider.to_owned());
        self.write(move |c| {
            c.conn
                .execute(
                    "INSERT INTO session_idp_tokens (session, provider, sealed, updated_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (session) DO UPDATE SET provider = excluded.provider, sealed = excluded.sealed, \
                     updated_at = excluded.updated_at",
                    params![session.as_str(), provider, sealed, at.0],
                )
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn idp_sessions(
        &self,
        now: UnixMillis,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<(SessionId, HumanId)>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT s.id, s.human FROM sessions s JOIN session_idp_tokens t ON t.session = s.id \
                 WHERE s.revoked_at IS NULL AND s.refresh_until > ?1 AND (?2 IS NULL OR s.id > ?2) ORDER BY s.id LIMIT {}",
                limit.clamp(1, crate::MAX_PAGE)
            );
            let mut st = c.prepare(&sql).map_err(map_err)?;
            let rows = st
                .query_map(params![now.0, after.as_ref().map(SessionId::as_str)], |r| Ok((id(r, 0)?, id(r, 1)?)))
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
    async fn idp_refresh(&self, session: &SessionId) -> Result<Option<(String, Vec<u8>)>> {
        let session = session.clone();
        self.read(move |c| {
            c.prepare_cached("SELECT provider, sealed FROM session_idp_tokens WHERE session = ?1")
                .and_then(|mut s| s.query_row([session.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(map_err)
        })
        .await
    }
    async fn revoke_session(&self, id: &SessionId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Session> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.write(move |c| {
            let n = c
                .conn
                .execute(
                    "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 WHERE id = ?3 AND revoked_at IS NULL",
                    params![at.0, reason, id.as_str()],
                )
                .map_err(map_err)?;
            let s = session(c.conn, &id)?.ok_or_else(|| StoreError::not_found("session", &id))?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("session `{id}` is already revoked")));
            }
            c.audit(audit)?;
            c.changed([Change::Session(id.clone())]);
            Ok(s)
        })
        .await
    }
}

fn human(r: &Row<'_>) -> rusqlite::Result<Human> {
    let issuer: Option<String> = r.get(6)?;
    let subject: Option<String> = r.get(7)?;
    let external = match (issuer, subject) {
        (Some(issuer), Some(subject)) => Some(External { issuer, subject }),
        (None, None) => None,
        _ => return Err(bad(6, "a provider identity needs both issuer and subject")),
    };
    Ok(Human {
        id: id(r, 0)?,
        email: r.get(1)?,
        display_name: r.get(2)?,
        state: parsed(r, 3)?,
        roles: json_col(r, 4)?,
        groups: json_col(r, 5)?,
        external,
        created_at: ms(r, 8)?,
        updated_at: ms(r, 9)?,
        deactivated_at: ms_opt(r, 10)?,
    })
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: id(r, 0)?,
        human: id(r, 1)?,
        method: r.get(2)?,
        access_hash: r.get(3)?,
        refresh_hash: r.get(4)?,
        created_at: ms(r, 5)?,
        expires_at: ms(r, 6)?,
        refresh_until: ms(r, 7)?,
        revoked_at: ms_opt(r, 8)?,
        revoke_reason: r.get(9)?,
    })
}

pub(crate) fn one(c: &Connection, cond: &str, p: impl rusqlite::Params) -> Result<Option<Human>> {
    let sql = format!("SELECT {HUMAN_COLS} FROM humans WHERE {cond}");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row(p, human).optional()).map_err(map_err)
}

fn session(c: &Connection, id: &SessionId) -> Result<Option<Session>> {
    let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1");
    c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], session_row).optional()).map_err(map_err)
}

pub(crate) fn insert(c: &Connection, h: &Human) -> Result<()> {
    c.execute(
        "INSERT INTO humans (id, email, display_name, state, roles, member_of, ext_issuer, ext_subject, created_at, \
         updated_at, deactivated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
        params![
            h.id.as_str(),
            h.email,
            h.display_name,
            h.state.as_str(),
            json(&h.roles),
            json(&h.groups),
            h.external.as_ref().map(|e| e.issuer.as_str()),
            h.external.as_ref().map(|e| e.subject.as_str()),
            h.created_at.0,
            h.updated_at.0,
            h.deactivated_at.map(|t| t.0)
        ],
    )
    .map_err(|e| match map_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("a human with the email `{}` already exists", h.email)),
        e => e,
    })?;
    Ok(())
}

pub(crate) fn update(c: &Connection, h: &Human, read_at: UnixMillis) -> Result<()> {
    if h.state == HumanState::Deactivated {
        return Err(StoreError::Internal("deactivating a human is `deactivate`, not `update`".into()));
    }
    let n = c
        .execute(
            "UPDATE humans SET email = ?1, display_name = ?2, state = ?3, roles = ?4, member_of = ?5, ext_issuer = ?6, \
             ext_subject = ?7, updated_at = ?8 WHERE id = ?9 AND updated_at = ?10 AND state != 'deactivated'",
            params![
                h.email,
                h.display_name,
                h.state.as_str(),
                json(&h.roles),
                json(&h.groups),
                h.external.as_ref().map(|e| e.issuer.as_str()),
                h.external.as_ref().map(|e| e.subject.as_str()),
                h.updated_at.0,
                h.id.as_str(),
                read_at.0
            ],
        )
        .map_err(map_err)?;
    if n == 0 {
        return match one(c, "id = ?1", params![h.id.as_str()])? {
            None => Err(StoreError::not_found("human", &h.id)),
            Some(_) => Err(StoreError::Conflict(format!("human `{}` changed meanwhile or is deactivated", h.id))),
        };
    }
    Ok(())
}

fn insert_session(c: &Connection, s: &Session) -> Result<()> {
    let n = c
        .execute(
            "INSERT INTO sessions (id, human, method, access_hash, refresh_hash, created_at, expires_at, refresh_until) \
             SELECT ?1,?2,?3,?4,?5,?6,?7,?8 WHERE EXISTS (SELECT 1 FROM humans WHERE id = ?2 AND state = 'active')",
            params![
                s.id.as_str(),
                s.human.as_str(),
                s.method,
                s.access_hash,
                s.refresh_hash,
                s.created_at.0,
                s.expires_at.0,
                s.refresh_until.0
            ],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{}` is not active", s.human)));
    }
    Ok(())
}

pub(crate) fn deactivate(
    ctx: &mut WriteCtx<'_>,
    id: &HumanId,
    at: UnixMillis,
    reason: &str,
    audit: AuditEvent,
) -> Result<Deactivation> {
    let c = ctx.conn;
    let n = c
        .execute(
            "UPDATE humans SET state = 'deactivated', deactivated_at = ?1, updated_at = ?1 \
             WHERE id = ?2 AND state != 'deactivated'",
            params![at.0, id.as_str()],
        )
        .map_err(map_err)?;
    let human = one(c, "id = ?1", params![id.as_str()])?.ok_or_else(|| StoreError::not_found("human", id))?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{id}` is already deactivated")));
    }
    let names = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<String>> {
        let mut s = c.prepare(sql).map_err(map_err)?;
        let rows = s.query_map(p, |r| r.get::<_, String>(0)).map_err(map_err)?;
        let mut v = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?;
        v.sort();
        Ok(v)
    };
    let sessions = names(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 WHERE human = ?3 AND revoked_at IS NULL RETURNING id",
        &[&at.0, &reason, &id.as_str()],
    )?;
    let orphan = |table: &str| {
        names(
            &format!("UPDATE {table} SET orphaned_at = ?1 WHERE owner_id = ?2 AND orphaned_at IS NULL RETURNING name"),
            &[&at.0, &id.as_str()],
        )
    };
    let (workflows, agents, tools) = (orphan("workflows")?, orphan("agents")?, orphan("tools")?);
    let r = crate::grants::Revocation {
        actor: audit.actor.clone(),
        reason: format!("its human was deactivated: {reason}"),
        at,
    };
    let (grants, killed) = crate::grants::sqlite::revoke_where(ctx, "human = ?1", id.as_str(), &r)?;
    let d = Deactivation {
        human,
        sessions_revoked: parse_all(&sessions, SessionId::parse)?,
        workflows_orphaned: parse_all(&workflows, WorkflowName::parse)?,
        agents_orphaned: parse_all(&agents, AgentName::parse)?,
        tools_orphaned: parse_all(&tools, remit_core::ids::ToolName::parse)?,
        grants_revoked: grants,
        tasks_revoked: killed.tasks_revoked,
    };
    ctx.audit(deactivation_record(audit, &d))?;
    ctx.changed([Change::Human(id.clone())]);
    ctx.changed(d.sessions_revoked.iter().cloned().map(Change::Session));
    Ok(d)
}

/// Brings a deactivated human back (an IdP re-enabling them); their old sessions stay revoked.
pub(crate) fn reactivate(c: &Connection, id: &HumanId, at: UnixMillis) -> Result<()> {
    let n = c
        .execute(
            "UPDATE humans SET state = 'active', deactivated_at = NULL, updated_at = ?1 \
             WHERE id = ?2 AND state = 'deactivated'",
            params![at.0, id.as_str()],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{id}` is not deactivated")));
    }
    Ok(())
}

fn local_row(r: &Row<'_>) -> rusqlite::Result<LocalCredential> {
    let totp: Option<Vec<u8>> = r.get(2)?;
    let confirmed: bool = r.get(3)?;
    Ok(LocalCredential {
        human: id(r, 0)?,
        password_hash: r.get(1)?,
        totp: totp.map(|t| (t, confirmed)),
        last_totp_step: r.get(4)?,
        failures: r.get(5)?,
        locked_until: ms_opt(r, 6)?,
        updated_at: ms(r, 7)?,
    })
}

/// Inserts (`read_at` `None`) or replaces a credential unchanged since `read_at`.
fn put_local(c: &Connection, l: &LocalCredential, read_at: Option<UnixMillis>) -> Result<()> {
    let (totp, confirmed) = match &l.totp {
        Some((t, ok)) => (Some(t.as_slice()), *ok),
        None => (None, false),
    };
    let n = match read_at {
        None => c.execute(
            &format!("INSERT INTO local_credentials ({LOCAL_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"),
            params![
                l.human.as_str(),
                l.password_hash,
                totp,
                confirmed,
                l.last_totp_step,
                l.failures,
                l.locked_until.map(|t| t.0),
                l.updated_at.0
            ],
        ),
        Some(at) => c.execute(
            "UPDATE local_credentials SET password_hash = ?2, totp = ?3, totp_confirmed = ?4, last_totp_step = ?5, \
             failures = ?6, locked_until = ?7, updated_at = ?8 WHERE human = ?1 AND updated_at = ?9",
            params![
                l.human.as_str(),
                l.password_hash,
                totp,
                confirmed,
                l.last_totp_step,
                l.failures,
                l.locked_until.map(|t| t.0),
                l.updated_at.0,
                at.0
            ],
        ),
    }
    .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("the credential of `{}` changed meanwhile", l.human)));
    }
    Ok(())
}
