//! Row ↔ domain conversions for the PostgreSQL backend, and its error mapping.
//!
//! Decoders take a column offset so one joined row (task + workflow + agent + instance) is
//! read in a single round trip. Every value is re-parsed into its typed form; one that does
//! not parse surfaces as [`StoreError::Corrupt`].

use std::str::FromStr;

use remit_core::ids::{AgentName, HumanId, InstanceId, JoinTokenId, TaskId, WorkflowName};
use remit_core::model::{Agent, Instance, JoinToken, Task, Workflow};
use remit_core::time::UnixMillis;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::{Result, StoreError};

/// `cols` with every column prefixed by `alias.` (for joins).
pub fn prefixed(alias: &str, cols: &str) -> String {
    cols.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

pub const WORKFLOW_N: usize = 13;
pub const AGENT_N: usize = 9;
pub const TASK_N: usize = 16;

pub(crate) fn corrupt(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {i}: {e}"))
}

pub(crate) fn s(r: &PgRow, i: usize) -> Result<String> {
    r.try_get(i).map_err(map_err)
}
pub(crate) fn so(r: &PgRow, i: usize) -> Result<Option<String>> {
    r.try_get(i).map_err(map_err)
}
pub(crate) fn int(r: &PgRow, i: usize) -> Result<i64> {
    r.try_get(i).map_err(map_err)
}
pub(crate) fn ms(r: &PgRow, i: usize) -> Result<UnixMillis> {
    Ok(UnixMillis(int(r, i)?))
}
pub(crate) fn ms_opt(r: &PgRow, i: usize) -> Result<Option<UnixMillis>> {
    Ok(r.try_get::<Option<i64>, _>(i).map_err(map_err)?.map(UnixMillis))
}
pub(crate) fn unsigned<T: TryFrom<i64>>(r: &PgRow, i: usize) -> Result<T> {
    let v = int(r, i)?;
    T::try_from(v).map_err(|_| corrupt(i, format!("{v} out of range")))
}
pub(crate) fn parsed<T: FromStr>(r: &PgRow, i: usize) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s(r, i)?.parse().map_err(|e| corrupt(i, e))
}
pub(crate) fn json<T: serde::de::DeserializeOwned>(r: &PgRow, i: usize) -> Result<T> {
    serde_json::from_str(&s(r, i)?).map_err(|e| corrupt(i, e))
}
pub(crate) fn typed<T>(
    r: &PgRow,
    i: usize,
    parse: fn(&str) -> std::result::Result<T, remit_core::DomainError>,
) -> Result<T> {
    parse(&s(r, i)?).map_err(|e| corrupt(i, e))
}
pub(crate) fn typed_opt<T>(
    r: &PgRow,
    i: usize,
    parse: fn(&str) -> std::result::Result<T, remit_core::DomainError>,
) -> Result<Option<T>> {
    so(r, i)?.map(|v| parse(&v).map_err(|e| corrupt(i, e))).transpose()
}

/// Whether the (left-joined) entity starting at column `o` is present.
pub fn present(r: &PgRow, o: usize) -> Result<bool> {
    Ok(so(r, o)?.is_some())
}

pub fn workflow(r: &PgRow, o: usize) -> Result<Workflow> {
    Ok(Workflow {
        name: typed(r, o, WorkflowName::parse)?,
        purpose: s(r, o + 1)?,
        owner: s(r, o + 2)?,
        ceiling: parsed(r, o + 3)?,
        allowed_tools: json(r, o + 4)?,
        max_task_ttl_secs: unsigned(r, o + 5)?,
        max_delegation_depth: unsigned(r, o + 6)?,
        state: parsed(r, o + 7)?,
        created_at: ms(r, o + 8)?,
        updated_at: ms(r, o + 9)?,
        owner_id: typed_opt(r, o + 10, HumanId::parse)?,
        orphaned_at: ms_opt(r, o + 11)?,
        trust: json(r, o + 12)?,
    })
}

pub fn agent(r: &PgRow, o: usize) -> Result<Agent> {
    Ok(Agent {
        name: typed(r, o, AgentName::parse)?,
        owner: s(r, o + 1)?,
        workflows: json(r, o + 2)?,
        state: parsed(r, o + 3)?,
        created_at: ms(r, o + 4)?,
        updated_at: ms(r, o + 5)?,
        kill_generation: unsigned(r, o + 6)?,
        owner_id: typed_opt(r, o + 7, HumanId::parse)?,
        orphaned_at: ms_opt(r, o + 8)?,
    })
}

pub fn join_token(r: &PgRow, o: usize) -> Result<JoinToken> {
    Ok(JoinToken {
        id: typed(r, o, JoinTokenId::parse)?,
        agent: typed(r, o + 1, AgentName::parse)?,
        secret_hash: s(r, o + 2)?,
        created_at: ms(r, o + 3)?,
        expires_at: ms(r, o + 4)?,
        used_at: ms_opt(r, o + 5)?,
        used_by: typed_opt(r, o + 6, InstanceId::parse)?,
        agent_generation: unsigned(r, o + 7)?,
        revoked_at: ms_opt(r, o + 8)?,
    })
}

pub fn instance(r: &PgRow, o: usize) -> Result<Instance> {
    Ok(Instance {
        id: typed(r, o, InstanceId::parse)?,
        agent: typed(r, o + 1, AgentName::parse)?,
        state: parsed(r, o + 2)?,
        created_at: ms(r, o + 3)?,
        expires_at: ms(r, o + 4)?,
        revoked_at: ms_opt(r, o + 5)?,
        revoke_reason: so(r, o + 6)?,
        workflow: so(r, o + 7)?.map(|w| WorkflowName::parse(&w)).transpose().map_err(|e| corrupt(o + 7, e))?,
        renew_until: ms_opt(r, o + 8)?,
    })
}

pub fn task(r: &PgRow, o: usize) -> Result<Task> {
    Ok(Task {
        id: typed(r, o, TaskId::parse)?,
        workflow: typed(r, o + 1, WorkflowName::parse)?,
        agent: typed(r, o + 2, AgentName::parse)?,
        instance: typed_opt(r, o + 3, InstanceId::parse)?,
        parent: typed_opt(r, o + 4, TaskId::parse)?,
        intent: s(r, o + 5)?,
        intent_hash: s(r, o + 6)?,
        sensitivity: parsed(r, o + 7)?,
        audience: json(r, o + 8)?,
        state: parsed(r, o + 9)?,
        started_by: s(r, o + 10)?,
        created_at: ms(r, o + 11)?,
        expires_at: ms(r, o + 12)?,
        ended_at: ms_opt(r, o + 13)?,
        end_reason: so(r, o + 14)?,
        delegation: json(r, o + 15)?,
    })
}

/// Maps a PostgreSQL / driver error to the store's error kinds, in one place. Messages
/// carry the server's message only: never the connection string or bound values.
pub fn map_err(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &e {
        E::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let msg = format!("{} (SQLSTATE {code})", d.message());
            match code.as_str() {
                // unique, foreign key, check, not-null violations
                "23505" | "23503" | "23514" | "23502" => StoreError::Conflict(msg),
                // serialization failure, deadlock: safe to retry
                "40001" | "40P01" => StoreError::Unavailable(format!("{msg}; retry")),
                // connection exceptions, operator intervention (shutdown), insufficient resources
                c if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") => StoreError::Unavailable(msg),
                _ => StoreError::Internal(msg),
            }
        }
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => {
            StoreError::Unavailable(format!("postgres: {e}"))
        }
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::ColumnIndexOutOfBounds { .. } => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Adds a bound argument, mapping an encode failure into the store's error; returns its
/// position (for `$n`).
pub(crate) fn arg<'q, T>(args: &mut sqlx::postgres::PgArguments, v: T) -> Result<usize>
where
    T: 'q + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    use sqlx::Arguments;
    args.add(v).map_err(|e| StoreError::Internal(format!("cannot bind argument: {e}")))?;
    Ok(args.len())
}
