//! Row ↔ domain conversions for the SQLite backend.
//!
//! Every value read back is re-parsed into its typed form; a value that does not parse means
//! the file was changed behind Remit's back and surfaces as [`StoreError::Corrupt`].

use std::str::FromStr;

use remit_core::ids::{
    AgentName, CredentialId, EntryId, GrantId, HumanId, InstanceId, JoinTokenId, LeaseId, SecretName, SessionId,
    TaskId, ToolName, WorkflowName,
};
use remit_core::model::{Agent, Instance, JoinToken, Task, Workflow};
use remit_core::time::UnixMillis;
use rusqlite::Row;
use rusqlite::types::Type;

use crate::StoreError;

pub(crate) fn bad(i: usize, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e.to_string().into())
}

pub(crate) fn parsed<T: FromStr>(r: &Row<'_>, i: usize) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = r.get(i)?;
    s.parse().map_err(|e| bad(i, e))
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| bad(i, e))
}

pub(crate) fn ms(r: &Row<'_>, i: usize) -> rusqlite::Result<UnixMillis> {
    Ok(UnixMillis(r.get(i)?))
}

pub(crate) fn ms_opt(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<UnixMillis>> {
    Ok(r.get::<_, Option<i64>>(i)?.map(UnixMillis))
}

macro_rules! from_str_via_parse {
    ($($t:ty),*) => {$(
        impl FromStrTyped for $t {
            fn parse_typed(s: &str) -> Result<Self, remit_core::DomainError> { <$t>::parse(s) }
        }
    )*};
}

/// Typed ids parse with `parse`, not `FromStr`; this bridges them.
pub trait FromStrTyped: Sized {
    fn parse_typed(s: &str) -> Result<Self, remit_core::DomainError>;
}
from_str_via_parse!(
    GrantId,
    WorkflowName,
    AgentName,
    TaskId,
    InstanceId,
    JoinTokenId,
    HumanId,
    SessionId,
    ToolName,
    CredentialId,
    EntryId,
    SecretName,
    LeaseId
);

pub(crate) fn id<T: FromStrTyped>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    T::parse_typed(&s).map_err(|e| bad(i, e))
}

pub(crate) fn id_opt<T: FromStrTyped>(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| T::parse_typed(&s).map_err(|e| bad(i, e))).transpose()
}

pub fn workflow(r: &Row<'_>) -> rusqlite::Result<Workflow> {
    Ok(Workflow {
        name: id(r, 0)?,
        purpose: r.get(1)?,
        owner: r.get(2)?,
        ceiling: parsed(r, 3)?,
        allowed_tools: json(r, 4)?,
        max_task_ttl_secs: r.get(5)?,
        max_delegation_depth: r.get(6)?,
        state: parsed(r, 7)?,
        created_at: ms(r, 8)?,
        updated_at: ms(r, 9)?,
        owner_id: id_opt(r, 10)?,
        orphaned_at: ms_opt(r, 11)?,
        trust: json(r, 12)?,
    })
}

pub fn agent(r: &Row<'_>) -> rusqlite::Result<Agent> {
    Ok(Agent {
        name: id(r, 0)?,
        owner: r.get(1)?,
        workflows: json(r, 2)?,
        state: parsed(r, 3)?,
        created_at: ms(r, 4)?,
        updated_at: ms(r, 5)?,
        kill_generation: r.get(6)?,
        owner_id: id_opt(r, 7)?,
        orphaned_at: ms_opt(r, 8)?,
    })
}

pub fn join_token(r: &Row<'_>) -> rusqlite::Result<JoinToken> {
    Ok(JoinToken {
        id: id(r, 0)?,
        agent: id(r, 1)?,
        secret_hash: r.get(2)?,
        created_at: ms(r, 3)?,
        expires_at: ms(r, 4)?,
        used_at: ms_opt(r, 5)?,
        used_by: id_opt(r, 6)?,
        agent_generation: r.get(7)?,
        revoked_at: ms_opt(r, 8)?,
    })
}

pub fn instance(r: &Row<'_>) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: id(r, 0)?,
        agent: id(r, 1)?,
        state: parsed(r, 2)?,
        created_at: ms(r, 3)?,
        expires_at: ms(r, 4)?,
        revoked_at: ms_opt(r, 5)?,
        revoke_reason: r.get(6)?,
        workflow: id_opt(r, 7)?,
        renew_until: ms_opt(r, 8)?,
    })
}

pub fn task(r: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: id(r, 0)?,
        workflow: id(r, 1)?,
        agent: id(r, 2)?,
        instance: id_opt(r, 3)?,
        parent: id_opt(r, 4)?,
        intent: r.get(5)?,
        intent_hash: r.get(6)?,
        sensitivity: parsed(r, 7)?,
        audience: json(r, 8)?,
        state: parsed(r, 9)?,
        started_by: r.get(10)?,
        created_at: ms(r, 11)?,
        expires_at: ms(r, 12)?,
        ended_at: ms_opt(r, 13)?,
        end_reason: r.get(14)?,
        delegation: json(r, 15)?,
    })
}

/// Maps a SQLite error to the store's error kinds, in one place.
pub fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Unavailable(e.to_string()),
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(e.to_string()),
            ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}
