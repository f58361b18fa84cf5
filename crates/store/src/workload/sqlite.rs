//! The workloads area on SQLite.

use async_trait::async_trait;
use remit_core::audit::AuditEvent;
use remit_core::ids::EntryId;
use remit_core::model::Instance;
use remit_core::workload::Entry;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{ENTRY_COLS, MAX_ENTRIES, WorkloadStore, selectors_hash, selectors_text};
use crate::identity::sqlite::insert_instance;
use crate::sqlite::rows::{id, id_opt, json, ms};
use crate::sqlite::{SqliteStore, map_err};
use crate::{Result, StoreError};

#[async_trait]
impl WorkloadStore for SqliteStore {
    async fn create_entry(&self, e: Entry, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            let count: u32 =
                c.conn.query_row("SELECT COUNT(*) FROM registration_entries", [], |r| r.get(0)).map_err(map_err)?;
            if count >= MAX_ENTRIES {
                return Err(StoreError::Conflict(format!("at most {MAX_ENTRIES} registration entries")));
            }
            let n = c
                .conn
                .execute(
                    "INSERT INTO registration_entries (id, selectors, selectors_hash, agent, workflow, hint, created_at, \
                     created_by) \
                     SELECT ?1,?2,?3,?4,?5,?6,?7,?8 WHERE EXISTS (SELECT 1 FROM agents WHERE name = ?4) \
                     AND (?5 IS NULL OR EXISTS (SELECT 1 FROM workflows WHERE name = ?5)) \
                     ON CONFLICT (selectors_hash) DO NOTHING",
                    params![
                        e.id.as_str(),
                        selectors_text(&e),
                        selectors_hash(&e),
                        e.agent.as_str(),
                        e.workflow.as_ref().map(|w| w.as_str()),
                        e.hint,
                        e.created_at.0,
                        e.created_by
                    ],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(
                    "an entry with these selectors exists, or its agent or workflow does not".into(),
                ));
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn entry(&self, eid: &EntryId) -> Result<Option<Entry>> {
        let eid = eid.clone();
        self.read(move |c| {
            let sql = format!("SELECT {ENTRY_COLS} FROM registration_entries WHERE id = ?1");
            c.prepare_cached(&sql).and_then(|mut s| s.query_row([eid.as_str()], row).optional()).map_err(map_err)
        })
        .await
    }

    async fn entries(&self) -> Result<Vec<Entry>> {
        self.read(|c| {
            let sql = format!("SELECT {ENTRY_COLS} FROM registration_entries ORDER BY created_at, id LIMIT ?1");
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = s.query_map([MAX_ENTRIES], row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn delete_entry(&self, eid: &EntryId, audit: AuditEvent) -> Result<()> {
        let eid = eid.clone();
        self.write(move |c| {
            let n =
                c.conn.execute("DELETE FROM registration_entries WHERE id = ?1", [eid.as_str()]).map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::not_found("registration entry", &eid));
            }
            c.audit(audit)?;
            Ok(())
        })
        .await
    }

    async fn attest_instance(&self, inst: Instance, audit: AuditEvent) -> Result<()> {
        self.write(move |c| {
            if !agent_enabled(c.conn, inst.agent.as_str())? {
                return Err(StoreError::Conflict(format!("agent `{}` is not enabled", inst.agent)));
            }
            insert_instance(c.conn, &inst)?;
            c.audit(audit)?;
            Ok(())
        })
        .await
    }
}

fn agent_enabled(c: &Connection, agent: &str) -> Result<bool> {
    c.query_row("SELECT EXISTS (SELECT 1 FROM agents WHERE name = ?1 AND state = 'enabled')", [agent], |r| r.get(0))
        .map_err(map_err)
}

fn row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: id(r, 0)?,
        selectors: json(r, 1)?,
        agent: id(r, 2)?,
        workflow: id_opt(r, 3)?,
        hint: r.get(4)?,
        created_at: ms(r, 5)?,
        created_by: r.get(6)?,
    })
}
