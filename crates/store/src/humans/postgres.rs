//! The humans area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::human::{External, Human, HumanState, LocalCredential, Session};
use remit_core::ids::{AgentName, HumanId, SessionId, WorkflowName};
use remit_core::time::UnixMillis;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{Deactivation, HUMAN_COLS, HumanStore, LOCAL_COLS, SESSION_COLS, deactivation_record, json, parse_all};
use crate::postgres::rows::{corrupt, json as json_col, ms, ms_opt, parsed, s, so, typed};
use crate::postgres::{PgStore, WriteCtx, map_err, pg_read};
use crate::{Change, Result, StoreError};

#[async_trait]
impl HumanStore for PgStore {
    async fn create(&self, h: Human, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                insert(c.conn(), &h).await?;
                c.audit(audit)?;
                c.changed([Change::Human(h.id.clone())]);
                Ok(())
            })
        })
        .await
    }
    async fn get(&self, id: &HumanId) -> Result<Option<Human>> {
        pg_read!(self, |c| one(c, "id = $1", id.as_str(), None))
    }
    async fn by_email(&self, email: &str) -> Result<Option<Human>> {
        pg_read!(self, |c| one(c, "email = $1", email, None))
    }
    async fn by_external(&self, issuer: &str, subject: &str) -> Result<Option<Human>> {
        pg_read!(self, |c| one(c, "ext_issuer = $1 AND ext_subject = $2", issuer, Some(subject)))
    }
    async fn list(&self, state: Option<HumanState>, after: Option<String>, limit: u32) -> Result<Vec<Human>> {
        let sql = format!(
            "SELECT {HUMAN_COLS} FROM humans WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR email > $2) \
             ORDER BY email LIMIT {}",
            limit.clamp(1, crate::MAX_PAGE)
        );
        let rs: Result<Vec<PgRow>> = pg_read!(self, |c| async {
            sqlx::query(&sql)
                .bind(state.map(HumanState::as_str))
                .bind(after.as_deref())
                .fetch_all(c)
                .await
                .map_err(map_err)
        });
        rs?.iter().map(human).collect()
    }
    async fn update(&self, h: Human, read_at: UnixMillis, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                update(c.conn(), &h, read_at).await?;
                c.audit(audit)?;
                c.changed([Change::Human(h.id.clone())]);
                Ok(())
            })
        })
        .await
    }
    async fn ensure(&self, placeholder: Human, audit: AuditEvent) -> Result<Human> {
        self.write(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO humans ({HUMAN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) \
                     ON CONFLICT (email) DO NOTHING"
                );
                let n = bind_human(sqlx::query(&sql), &placeholder)
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 0 {
                    return one(c.conn(), "email = $1", &placeholder.email, None)
                        .await?
                        .ok_or_else(|| StoreError::Internal("a human vanished while being ensured".into()));
                }
                c.audit(audit)?;
                c.changed([Change::Human(placeholder.id.clone())]);
                Ok(placeholder)
            })
        })
        .await
    }
    async fn sign_in(&self, h: Human, read_at: Option<UnixMillis>, s: Session, audit: Vec<AuditEvent>) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                match read_at {
                    None => insert(c.conn(), &h).await?,
                    Some(at) => update(c.conn(), &h, at).await?,
                }
                insert_session(c.conn(), &s).await?;
                for e in audit {
                    c.audit(e)?;
                }
                c.changed([Change::Human(h.id.clone()), Change::Session(s.id.clone())]);
                Ok(())
            })
        })
        .await
    }
    async fn deactivate(&self, id: &HumanId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Deactivation> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.write(move |c| Box::pin(deactivate(c, id, at, reason, audit))).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<(Session, Human)>> {
        let sql = format!(
            "SELECT {}, {} FROM sessions s JOIN humans h ON h.id = s.human WHERE s.id = $1",
            crate::postgres::rows::prefixed("s", SESSION_COLS),
            crate::postgres::rows::prefixed("h", HUMAN_COLS)
        );
        let r: Result<Option<PgRow>> =
            pg_read!(self, |c| async { sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err) });
        let Some(r) = r? else { return Ok(None) };
        Ok(Some((session_at(&r, 0)?, human_at(&r, SESSION_N)?)))
    }
    async fn sessions_of(&self, human: &HumanId) -> Result<Vec<Session>> {
        let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE human = $1 ORDER BY created_at DESC LIMIT 1000");
        let rs: Result<Vec<PgRow>> =
            pg_read!(self, |c| async { sqlx::query(&sql).bind(human.as_str()).fetch_all(c).await.map_err(map_err) });
        rs?.iter().map(|r| session_at(r, 0)).collect()
    }
    async fn refresh(&self, next: Session, replaced_refresh_hash: &str, audit: AuditEvent) -> Result<()> {
        let replaced = replaced_refresh_hash.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE sessions SET access_hash = $1, refresh_hash = $2, expires_at = $3 \
                     WHERE id = $4 AND refresh_hash = $5 AND revoked_at IS NULL",
                )
                .bind(&next.access_hash)
                .bind(&next.refresh_hash)
                .bind(next.expires_at.0)
                .bind(next.id.as_str())
                .bind(&replaced)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(format!(
                        "session `{}` was refreshed or revoked meanwhile",
                        next.id
                    )));
                }
                c.audit(audit)?;
                c.changed([Change::Session(next.id.clone())]);
                Ok(())
            })
        })
        .await
    }
    async fn create_local(&self, h: Human, c: LocalCredential, audit: AuditEvent) -> Result<()> {
        self.write(move |ctx| {
            Box::pin(async move {
                insert(ctx.conn(), &h).await?;
                put_local(ctx.conn(), &c, None).await?;
                ctx.audit(audit)?;
                ctx.changed([Change::Human(h.id.clone())]);
                Ok(())
            })
        })
        .await
    }
    async fn local_credential(&self, human: &HumanId) -> Result<Option<LocalCredential>> {
        let sql = format!("SELECT {LOCAL_COLS} FROM local_credentials WHERE human = $1");
        let r: Result<Option<PgRow>> = pg_read!(self, |c| async {
            sqlx::query(&sql).bind(human.as_str()).fetch_optional(c).await.map_err(map_err)
        });
        r?.as_ref().map(local_row).transpose()
    }
    async fn put_local_credential(
        &self,
        c: LocalCredential,
        read_at: UnixMillis,
        audit: Option<AuditEvent>,
    ) -> Result<()> {
        self.write(move |ctx| {
            Box::pin(async move {
                put_local(ctx.conn(), &c, Some(read_at)).await?;
                if let Some(a) = audit {
                    ctx.audit(a)?;
                }
                Ok(())
            })
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
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO session_idp_tokens (session, provider, sealed, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (session) DO UPDATE SET provider = excluded.provider, sealed = excluded.sealed, \
                     updated_at = excluded.updated_at",
                )
                .bind(session.as_str())
                .bind(&provider)
                .bind(&sealed)
                .bind(at.0)
                .execute(c.conn())
                .await
                .map_err(map_err)?;
                Ok(())
            })
        })
        .await
    }
    async fn idp_sessions(
        &self,
        now: UnixMillis,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<(SessionId, HumanId)>> {
        let sql = format!(
            "SELECT s.id, s.human FROM sessions s JOIN session_idp_tokens t ON t.session = s.id \
             WHERE s.revoked_at IS NULL AND s.refresh_until > $1 AND ($2::text IS NULL OR s.id > $2) ORDER BY s.id LIMIT {}",
            limit.clamp(1, crate::MAX_PAGE)
        );
        let rs: Result<Vec<PgRow>> = pg_read!(self, |c| async {
            sqlx::query(&sql)
                .bind(now.0)
                .bind(after.as_ref().map(SessionId::as_str))
                .fetch_all(c)
                .await
                .map_err(map_err)
        });
        rs?.iter().map(|r| Ok((typed(r, 0, SessionId::parse)?, typed(r, 1, HumanId::parse)?))).collect()
    }
    async fn idp_refresh(&self, session: &SessionId) -> Result<Option<(String, Vec<u8>)>> {
        let r: Result<Option<(String, Vec<u8>)>> = pg_read!(self, |c| async {
            sqlx::query_as("SELECT provider, sealed FROM session_idp_tokens WHERE session = $1")
                .bind(session.as_str())
                .fetch_optional(c)
                .await
                .map_err(map_err)
        });
        r
    }
    async fn revoke_session(&self, id: &SessionId, at: UnixMillis, reason: &str, audit: AuditEvent) -> Result<Session> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
                )
                .bind(at.0)
                .bind(&reason)
                .bind(id.as_str())
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1");
                let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c.conn()).await.map_err(map_err)?;
                let s = r
                    .as_ref()
                    .map(|r| session_at(r, 0))
                    .transpose()?
                    .ok_or_else(|| StoreError::not_found("session", &id))?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("session `{id}` is already revoked")));
                }
                c.audit(audit)?;
                c.changed([Change::Session(id.clone())]);
                Ok(s)
            })
        })
        .await
    }
}

/// Columns in a session row (where the human's start in a joined row).
const SESSION_N: usize = 10;

fn human(r: &PgRow) -> Result<Human> {
    human_at(r, 0)
}

fn human_at(r: &PgRow, o: usize) -> Result<Human> {
    let external = match (so(r, o + 6)?, so(r, o + 7)?) {
        (Some(issuer), Some(subject)) => Some(External { issuer, subject }),
        (None, None) => None,
        _ => return Err(corrupt(o + 6, "a provider identity needs both issuer and subject")),
    };
    Ok(Human {
        id: typed(r, o, HumanId::parse)?,
        email: s(r, o + 1)?,
        display_name: s(r, o + 2)?,
        state: parsed(r, o + 3)?,
        roles: json_col(r, o + 4)?,
        groups: json_col(r, o + 5)?,
        external,
        created_at: ms(r, o + 8)?,
        updated_at: ms(r, o + 9)?,
        deactivated_at: ms_opt(r, o + 10)?,
    })
}

fn session_at(r: &PgRow, o: usize) -> Result<Session> {
    Ok(Session {
        id: typed(r, o, SessionId::parse)?,
        human: typed(r, o + 1, HumanId::parse)?,
        method: s(r, o + 2)?,
        access_hash: s(r, o + 3)?,
        refresh_hash: s(r, o + 4)?,
        created_at: ms(r, o + 5)?,
        expires_at: ms(r, o + 6)?,
        refresh_until: ms(r, o + 7)?,
        revoked_at: ms_opt(r, o + 8)?,
        revoke_reason: so(r, o + 9)?,
    })
}

pub(crate) async fn one(c: &mut PgConnection, cond: &str, a: &str, b: Option<&str>) -> Result<Option<Human>> {
    let sql = format!("SELECT {HUMAN_COLS} FROM humans WHERE {cond}");
    let mut q = sqlx::query(&sql).bind(a);
    if let Some(b) = b {
        q = q.bind(b);
    }
    let r = q.fetch_optional(c).await.map_err(map_err)?;
    r.as_ref().map(human).transpose()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_human<'q>(q: Query<'q>, h: &'q Human) -> Query<'q> {
    q.bind(h.id.as_str())
        .bind(&h.email)
        .bind(&h.display_name)
        .bind(h.state.as_str())
        .bind(json(&h.roles))
        .bind(json(&h.groups))
        .bind(h.external.as_ref().map(|e| e.issuer.as_str()))
        .bind(h.external.as_ref().map(|e| e.subject.as_str()))
        .bind(h.created_at.0)
        .bind(h.updated_at.0)
        .bind(h.deactivated_at.map(|t| t.0))
}

pub(crate) async fn insert(c: &mut PgConnection, h: &Human) -> Result<()> {
    let sql = format!("INSERT INTO humans ({HUMAN_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)");
    bind_human(sqlx::query(&sql), h).execute(c).await.map_err(|e| match map_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("a human with the email `{}` already exists", h.email)),
        e => e,
    })?;
    Ok(())
}

pub(crate) async fn update(c: &mut PgConnection, h: &Human, read_at: UnixMillis) -> Result<()> {
    if h.state == HumanState::Deactivated {
        return Err(StoreError::Internal("deactivating a human is `deactivate`, not `update`".into()));
    }
    let n = sqlx::query(
        "UPDATE humans SET email = $1, display_name = $2, state = $3, roles = $4, member_of = $5, ext_issuer = $6, \
         ext_subject = $7, updated_at = $8 WHERE id = $9 AND updated_at = $10 AND state != 'deactivated'",
    )
    .bind(&h.email)
    .bind(&h.display_name)
    .bind(h.state.as_str())
    .bind(json(&h.roles))
    .bind(json(&h.groups))
    .bind(h.external.as_ref().map(|e| e.issuer.as_str()))
    .bind(h.external.as_ref().map(|e| e.subject.as_str()))
    .bind(h.updated_at.0)
    .bind(h.id.as_str())
    .bind(read_at.0)
    .execute(&mut *c)
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return match one(c, "id = $1", h.id.as_str(), None).await? {
            None => Err(StoreError::not_found("human", &h.id)),
            Some(_) => Err(StoreError::Conflict(format!("human `{}` changed meanwhile or is deactivated", h.id))),
        };
    }
    Ok(())
}

async fn insert_session(c: &mut PgConnection, s: &Session) -> Result<()> {
    let n = sqlx::query(
        "INSERT INTO sessions (id, human, method, access_hash, refresh_hash, created_at, expires_at, refresh_until) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint, $8::bigint \
         WHERE EXISTS (SELECT 1 FROM humans WHERE id = $2 AND state = 'active')",
    )
    .bind(s.id.as_str())
    .bind(s.human.as_str())
    .bind(&s.method)
    .bind(&s.access_hash)
    .bind(&s.refresh_hash)
    .bind(s.created_at.0)
    .bind(s.expires_at.0)
    .bind(s.refresh_until.0)
    .execute(c)
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{}` is not active", s.human)));
    }
    Ok(())
}

async fn names(
    c: &mut PgConnection,
    sql: &str,
    at: UnixMillis,
    id: &HumanId,
    reason: Option<&str>,
) -> Result<Vec<String>> {
    let mut q = sqlx::query_scalar::<_, String>(sql).bind(at.0).bind(id.as_str());
    if let Some(r) = reason {
        q = q.bind(r);
    }
    let mut v = q.fetch_all(c).await.map_err(map_err)?;
    v.sort();
    Ok(v)
}

pub(crate) async fn deactivate(
    ctx: &mut WriteCtx,
    id: HumanId,
    at: UnixMillis,
    reason: String,
    audit: AuditEvent,
) -> Result<Deactivation> {
    let n = sqlx::query(
        "UPDATE humans SET state = 'deactivated', deactivated_at = $1, updated_at = $1 \
         WHERE id = $2 AND state != 'deactivated'",
    )
    .bind(at.0)
    .bind(id.as_str())
    .execute(ctx.conn())
    .await
    .map_err(map_err)?
    .rows_affected();
    let human =
        one(ctx.conn(), "id = $1", id.as_str(), None).await?.ok_or_else(|| StoreError::not_found("human", &id))?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{id}` is already deactivated")));
    }
    let sessions = names(
        ctx.conn(),
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $3 WHERE human = $2 AND revoked_at IS NULL RETURNING id",
        at,
        &id,
        Some(&reason),
    )
    .await?;
    let orphan =
        |t: &str| format!("UPDATE {t} SET orphaned_at = $1 WHERE owner_id = $2 AND orphaned_at IS NULL RETURNING name");
    let workflows = names(ctx.conn(), &orphan("workflows"), at, &id, None).await?;
    let agents = names(ctx.conn(), &orphan("agents"), at, &id, None).await?;
    let tools = names(ctx.conn(), &orphan("tools"), at, &id, None).await?;
    let r = crate::grants::Revocation {
        actor: audit.actor.clone(),
        reason: format!("its human was deactivated: {reason}"),
        at,
    };
    let (grants, killed) = crate::grants::postgres::revoke_where(ctx, "human = $1", id.as_str(), &r).await?;
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
pub(crate) async fn reactivate(c: &mut PgConnection, id: &HumanId, at: UnixMillis) -> Result<()> {
    let n = sqlx::query(
        "UPDATE humans SET state = 'active', deactivated_at = NULL, updated_at = $1 \
         WHERE id = $2 AND state = 'deactivated'",
    )
    .bind(at.0)
    .bind(id.as_str())
    .execute(c)
    .await
    .map_err(map_err)?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!("human `{id}` is not deactivated")));
    }
    Ok(())
}

fn local_row(r: &PgRow) -> Result<LocalCredential> {
    use sqlx::Row;
    let totp: Option<Vec<u8>> = r.try_get(2).map_err(map_err)?;
    let confirmed: bool = r.try_get(3).map_err(map_err)?;
    let step: Option<i64> = r.try_get(4).map_err(map_err)?;
    Ok(LocalCredential {
        human: typed(r, 0, HumanId::parse)?,
        password_hash: s(r, 1)?,
        totp: totp.map(|t| (t, confirmed)),
        last_totp_step: step.map(|v| u64::try_from(v).map_err(|_| corrupt(4, "negative step"))).transpose()?,
        failures: crate::postgres::rows::unsigned(r, 5)?,
        locked_until: ms_opt(r, 6)?,
        updated_at: ms(r, 7)?,
    })
}

async fn put_local(c: &mut PgConnection, l: &LocalCredential, read_at: Option<UnixMillis>) -> Result<()> {
    let (totp, confirmed) = match &l.totp {
        Some((t, ok)) => (Some(t.clone()), *ok),
        None => (None, false),
    };
    let step = l.last_totp_step.map(crate::postgres::i64_of).transpose()?;
    let q = match read_at {
        None => sqlx::query(
            "INSERT INTO local_credentials (human, password_hash, totp, totp_confirmed, last_totp_step, failures, \
             locked_until, updated_at) SELECT $1::text, $2::text, $3::bytea, $4::boolean, $5::bigint, $6::bigint, \
             $7::bigint, $8::bigint WHERE $9::bigint IS NULL",
        ),
        Some(_) => sqlx::query(
            "UPDATE local_credentials SET password_hash = $2, totp = $3, totp_confirmed = $4, last_totp_step = $5, \
             failures = $6, locked_until = $7, updated_at = $8 WHERE human = $1 AND updated_at = $9",
        ),
    };
    let n = q
        .bind(l.human.as_str())
        .bind(&l.password_hash)
        .bind(totp)
        .bind(confirmed)
        .bind(step)
        .bind(i64::from(l.failures))
        .bind(l.locked_until.map(|t| t.0))
        .bind(l.updated_at.0)
        .bind(read_at.map(|t| t.0))
        .execute(c)
        .await
        .map_err(map_err)?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict(format!("the credential of `{}` changed meanwhile", l.human)));
    }
    Ok(())
}
