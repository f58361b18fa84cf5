//! The governance tail: reads the audit log from its cursor, once per cluster, and turns
//! records into what governance acts on — today the Shared Signals outbox.
//!
//! It wakes on every committed change (a kill on any replica reaches it through the change
//! feed) and otherwise every [`super::TAIL_INTERVAL`]. Each step reads at most [`PAGE`]
//! records, builds the SETs every stream should get, and moves the cursor with them in one
//! transaction (a compare-and-set on the cursor it read): a replica that lost the job between
//! reading and writing writes nothing, and the next holder starts where the last one stopped.
//! A new job starts at the log's head (history before the first start is not replayed).

use std::collections::HashMap;
use std::sync::Arc;

use remit_core::audit::{AuditAction, AuditEvent, AuditRecord};
use remit_core::ids::{AgentName, HumanId, WorkflowName};
use remit_store::{AuditFilter, Change, OutboxRow, StoreError};
use tokio::sync::broadcast::error::RecvError;

use super::sets;
use super::ssf::{self, StreamConfig};
use super::{Held, TAIL_INTERVAL};
use crate::app::App;
use crate::error::Error;

pub const JOB: &str = "governance.tail";
/// Records read per step.
pub const PAGE: u32 = 500;

/// Runs until `stop` flips.
pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut held = Held::new(JOB);
    let mut changes = app.store.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let more = match held.hold(&app).await {
            Ok(true) => match step(&app, &mut held).await {
                Ok(more) => more,
                Err(Error::Conflict(_)) => {
                    held.lost();
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "governance tail step failed; retrying");
                    false
                }
            },
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "governance tail: the job could not be taken");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            c = changes.recv() => match c {
                Err(RecvError::Closed) => break,
                // Queued SETs are the tail's own doing: nothing new to read.
                Ok(Change::Outbox) => {}
                _ => {}
            },
            _ = tokio::time::sleep(TAIL_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
    held.release(&app).await;
}

/// One step from the job's cursor. Returns whether a full page was read (more may be waiting).
async fn step(app: &App, held: &mut Held) -> Result<bool, Error> {
    let g = app.store.governance();
    let holder = &app.governance.holder;
    let cursor = held.cursor;
    if cursor == 0 {
        let (head, _) = app.store.audit().head().await?;
        if head == 0 {
            return Ok(false);
        }
        g.advance_job(JOB, holder, 0, head, vec![], vec![]).await.map_err(conflict)?;
        held.cursor = head;
        return Ok(true);
    }
    // Taken over (or started): the containment counters are rebuilt up to the cursor first.
    if !super::containment::fed_to(app, cursor) {
        super::containment::warm(app, cursor, held).await?;
    }
    let recs = app.store.audit().list(AuditFilter { after_seq: cursor, limit: PAGE, ..AuditFilter::default() }).await?;
    let Some(last) = recs.last().map(|r| r.seq) else { return Ok(false) };
    let rows = outbox_rows(app, &recs).await?;
    // Containment acts before the cursor moves: a crash in between re-reads these records
    // (a second kill of what is already stopped is a no-op), never skips them.
    let trips = super::containment::evaluate(app, &recs).await?;
    // Humans hear of approvals waiting for them (from whichever replica opened them).
    for r in recs.iter().filter(|r| r.event.action == "approval.request") {
        let d = super::detail(r);
        let approval = d["approval_id"].as_str().or(d["id"].as_str()).unwrap_or_default().to_owned();
        app.notify(super::notify::Notice::ApprovalWaiting {
            approval,
            workflow: r.event.workflow.clone(),
            task: r.event.task.clone(),
            reason: r.event.reason.clone().unwrap_or_default(),
        });
    }
    // Kills only on a current hold (a long rebuild or a slow store may have outlasted it), and
    // only if nobody moved the cursor meanwhile.
    if !held.hold(app).await? || held.cursor != cursor {
        return Err(Error::Conflict("the job was taken over".into()));
    }
    let records = super::containment::act(app, trips).await;
    g.advance_job(JOB, holder, cursor, last, rows, records).await.map_err(conflict)?;
    held.cursor = last;
    Ok(recs.len() == PAGE as usize)
}

fn conflict(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(m) => Error::Conflict(m),
        other => other.into(),
    }
}

/// The SETs `recs` give every stream that hears of them.
async fn outbox_rows(app: &App, recs: &[AuditRecord]) -> Result<Vec<OutboxRow>, Error> {
    let streams: Vec<(String, String, StreamConfig)> = app
        .store
        .governance()
        .streams(None)
        .await?
        .into_iter()
        .filter(|s| s.status != "disabled")
        .filter_map(|s| match ssf::parse_stored(&s) {
            Ok(c) => Some((s.id, s.owner, c)),
            Err(e) => {
                tracing::error!(error = %e, "a stream's configuration is unreadable; it gets nothing");
                None
            }
        })
        .collect();
    let mut live = Vec::with_capacity(streams.len());
    for s in streams {
        // A disabled tool's streams hear nothing more.
        if ssf::receiver_active(app, &s.1).await? {
            live.push(s);
        }
    }
    let streams = live;
    if streams.is_empty() {
        return Ok(vec![]);
    }
    let now = app.clock.now();
    let mut tools: HashMap<WorkflowName, Vec<String>> = HashMap::new();
    let mut agents: HashMap<AgentName, Vec<WorkflowName>> = HashMap::new();
    let mut rows = Vec::new();
    for rec in recs {
        let email = match rec.event.action.as_str() {
            "human.deactivate" => human_email(app, rec).await,
            _ => None,
        };
        for sig in sets::signals_of(rec, &app.trust_domain, &app.issuer, email.as_deref()) {
            // What the scope check needs, read once per step.
            if let Some(w) = &sig.workflow
                && !tools.contains_key(w)
            {
                let t = app.store.identity().workflow(w).await?.map(|w| w.allowed_tools).unwrap_or_default();
                tools.insert(w.clone(), t);
            }
            if let Some(a) = &sig.agent
                && !agents.contains_key(a)
            {
                let ws = app.store.identity().agent(a).await?.map(|a| a.workflows).unwrap_or_default();
                for w in &ws {
                    if !tools.contains_key(w) {
                        let t = app.store.identity().workflow(w).await?.map(|w| w.allowed_tools).unwrap_or_default();
                        tools.insert(w.clone(), t);
                    }
                }
                agents.insert(a.clone(), ws);
            }
            let tools_of = |w: &WorkflowName| tools.get(w).cloned().unwrap_or_default();
            let agent_wfs = sig.agent.as_ref().and_then(|a| agents.get(a)).cloned().unwrap_or_default();
            for (id, owner, cfg) in &streams {
                if !cfg.events_delivered.iter().any(|e| e == sig.event)
                    || !sets::in_scope(owner, &sig, &tools_of, &agent_wfs)
                {
                    continue;
                }
                let txn = format!("remit-audit:{}", rec.seq);
                let (jti, set) = sets::set_for(app, cfg, sig.event, &sig.sub_id, &sig.payload, &txn);
                rows.push(OutboxRow {
                    stream: id.clone(),
                    jti,
                    seq: rec.seq,
                    set,
                    created_at: now,
                    attempts: 0,
                    next_at: now,
                    last_error: None,
                });
            }
        }
    }
    cap_outboxes(app, rows).await
}

/// Keeps every stream's outbox within `[governance] max_outbox`: a stream whose receiver is not
/// taking its SETs (a dead push endpoint, a poll nobody makes) is disabled — audited, its queue
/// dropped — rather than growing without bound; the receiver re-enables it when it is back.
async fn cap_outboxes(app: &App, rows: Vec<OutboxRow>) -> Result<Vec<OutboxRow>, Error> {
    let max = app.cfg.governance.max_outbox;
    let mut per: HashMap<String, u64> = HashMap::new();
    for r in &rows {
        *per.entry(r.stream.clone()).or_default() += 1;
    }
    let g = app.store.governance();
    let mut full = Vec::new();
    for (stream, new) in per {
        let depth = g.outbox_depth(&stream).await?;
        if depth + new <= max {
            continue;
        }
        let reason = format!("outbox full: {depth} SETs not taken by the receiver; re-enable once it is back");
        tracing::warn!(stream = %stream, depth, "a stream's receiver is not taking its SETs; the stream is disabled");
        // Compare-and-set on the stream's version: a receiver's concurrent change is read again,
        // never overwritten. Stored disabled, its queue goes in the same transaction.
        let (mut tries, mut busy) = (0, false);
        loop {
            let Some(s) = g.stream(&stream).await? else { break };
            if s.status == "disabled" {
                break;
            }
            let audit = AuditEvent::new(app.clock.now(), "governance:signals", AuditAction::SsfStreamUpdate)
                .reason(&reason)
                .detail([
                    ("stream", stream.clone().into()),
                    ("owner", s.owner.clone().into()),
                    ("status", "disabled".into()),
                ]);
            let disabled = remit_store::Stream {
                status: "disabled".into(),
                reason: Some(reason.clone()),
                updated_at: app.clock.now(),
                ..s
            };
            // Its receiver hears of it, in the same transaction (SSF 1.0 §8.1.5).
            let notice = sets::status_notice(app, &disabled, "disabled", &reason).await?;
            match g.put_stream(disabled, vec![notice], Some(audit)).await {
                Ok(()) => break,
                Err(remit_store::StoreError::Conflict(_)) if tries < 5 => tries += 1,
                // Still changing under us: tried again at the next step.
                Err(remit_store::StoreError::Conflict(_)) => {
                    tracing::warn!(stream = %stream, "a full stream kept changing; disabling it again next round");
                    busy = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if busy {
            continue;
        }
        full.push(stream);
    }
    Ok(rows.into_iter().filter(|r| !full.contains(&r.stream)).collect())
}

async fn human_email(app: &App, rec: &AuditRecord) -> Option<String> {
    let d = super::detail(rec);
    let id = HumanId::parse(d["human"].as_str()?).ok()?;
    app.store.humans().get(&id).await.ok().flatten().map(|h| h.email)
}
