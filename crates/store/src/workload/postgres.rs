//! The workloads area on PostgreSQL.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::{AgentName, EntryId, WorkflowName};
use remit_core::model::Instance;
use remit_core::workload::Entry;
use sqlx::postgres::PgRow;

use super::{ENTRY_COLS, MAX_ENTRIES, WorkloadStore, selectors_hash, selectors_text};
use crate::identity::postgres::insert_instance;
use crate::postgres::rows::{corrupt, json, ms, s, so, typed};
use crate::postgres::{PgStore, map_err, pg_read};
use crate::{Result, StoreError};

#[async_trait]
impl WorkloadStore for PgStore {
    async fn create_entry(&self, e: Entry, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                // Serialises entry creation so the count limit holds across replicas.
                sqlx::query("LOCK TABLE registration_entries IN SHARE ROW EXCLUSIVE MODE")
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?;
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM registration_entries")
                    .fetch_one(c.conn())
                    .await
                    .map_err(map_err)?;
                if count >= i64::from(MAX_ENTRIES) {
                    return Err(StoreError::Conflict(format!("at most {MAX_ENTRIES} registration entries")));
                }
                let n = sqlx::query(
                    "INSERT INTO registration_entries (id, selectors, selectors_hash, agent, workflow, hint, created_at, \
                     created_by) \
                     SELECT $1,$2,$3,$4,$5,$6,$7,$8 WHERE EXISTS (SELECT 1 FROM agents WHERE name = $4) \
                     AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM workflows WHERE name = $5)) \
                     ON CONFLICT (selectors_hash) DO NOTHING",
                )
                .bind(e.id.as_str())
                .bind(selectors_text(&e))
                .bind(selectors_hash(&e))
                .bind(e.agent.as_str())
                .bind(e.workflow.as_ref().map(|w| w.as_str()))
                .bind(&e.hint)
                .bind(e.created_at.0)
                .bind(&e.created_by)
                .execute(c.conn())
                .await
                .map_err(map_err)?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Conflict(
                        "an entry with these selectors exists, or its agent or workflow does not".into(),
                    ));
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn entry(&self, id: &EntryId) -> Result<Option<Entry>> {
        let sql = format!("SELECT {ENTRY_COLS} FROM registration_entries WHERE id = $1");
        pg_read!(self, |c| async {
            let r = sqlx::query(&sql).bind(id.as_str()).fetch_optional(c).await.map_err(map_err)?;
            r.map(|r| row(&r)).transpose()
        })
    }

    async fn entries(&self) -> Result<Vec<Entry>> {
        let sql = format!("SELECT {ENTRY_COLS} FROM registration_entries ORDER BY created_at, id LIMIT $1");
        pg_read!(self, |c| async {
            let rs = sqlx::query(&sql).bind(i64::from(MAX_ENTRIES)).fetch_all(c).await.map_err(map_err)?;
            rs.iter().map(row).collect()
        })
    }

    async fn delete_entry(&self, id: &EntryId, audit: AuditEvent) -> Result<()> {
        let id = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM registration_entries WHERE id = $1")
                    .bind(id.as_str())
                    .execute(c.conn())
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::not_found("registration entry", &id));
                }
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }

    async fn attest_instance(&self, inst: Instance, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                // Locks the agent row: a concurrent disable either precedes this insert (and
                // the agent is not enabled) or follows it (and revokes the new instance).
                let enabled: Option<String> = sqlx::query_scalar("SELECT state FROM agents WHERE name = $1 FOR SHARE")
                    .bind(inst.agent.as_str())
                    .fetch_optional(c.conn())
                    .await
                    .map_err(map_err)?;
                if enabled.as_deref() != Some("enabled") {
                    return Err(StoreError::Conflict(format!("agent `{}` is not enabled", inst.agent)));
                }
                insert_instance(c.conn(), &inst).await?;
                c.audit(audit)?;
                Ok(())
            })
        })
        .await
    }
}

fn row(r: &PgRow) -> Result<Entry> {
    Ok(Entry {
        id: typed(r, 0, EntryId::parse)?,
        selectors: json(r, 1)?,
        agent: typed(r, 2, AgentName::parse)?,
        workflow: so(r, 3)?.map(|w| WorkflowName::parse(&w)).transpose().map_err(|e| corrupt(3, e))?,
        hint: so(r, 4)?,
        created_at: ms(r, 5)?,
        created_by: s(r, 6)?,
    })
}
