//! Waiting for a human: one stream per waiter that says, at once, where an approval request
//! stands, and says so again the moment a human decides it (or it expires), then ends.
//!
//! Fed by the store's change feed like the task watch ([`super::watch`]): a decision on any
//! replica reaches a waiter on any other within the feed's latency. While the feed is down
//! it re-reads the request every second; it also wakes at the request's expiry.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use remit_core::approval::{Approval, ApprovalState};
use remit_core::ids::ApprovalId;
use remit_core::time::UnixMillis;
use remit_store::Change;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::Caller;
use crate::app::App;
use crate::error::Error;

/// How often a waiter re-reads its request while the change feed is down.
const FEED_DOWN_POLL: Duration = Duration::from_secs(1);

/// One state of an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApprovalWatchEvent {
    pub id: String,
    /// `pending`, `approved`, `denied`, `used`, `expired` (pending past its expiry) or
    /// `withdrawn` (the task whose call it is ended or was killed: nobody can use it).
    pub state: String,
    /// When the request expires (an approved one must be used before then).
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: String,
    /// The human who decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Their reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a request stands at `now`: its state, or `expired` if it is pending past expiry.
fn effective(a: &Approval, now: UnixMillis) -> &'static str {
    match a.state {
        ApprovalState::Pending if now >= a.expires_at => "expired",
        s => s.as_str(),
    }
}

struct Wait {
    app: Arc<App>,
    approval: Approval,
    changes: tokio::sync::broadcast::Receiver<Change>,
    stopping: tokio::sync::watch::Receiver<bool>,
    first: bool,
    done: bool,
    polling: bool,
}

impl Wait {
    fn event(&self) -> ApprovalWatchEvent {
        let a = &self.approval;
        ApprovalWatchEvent {
            id: a.id.to_string(),
            state: effective(a, self.app.clock.now()).to_owned(),
            expires_at: a.expires_at.to_rfc3339(),
            decided_by: a.decided_by.clone(),
            reason: a.decision_reason.clone(),
        }
    }

    async fn reread(&mut self) -> Option<()> {
        match self.app.store.approvals().get(&self.approval.id).await {
            Ok(Some(a)) => {
                self.approval = a;
                Some(())
            }
            _ => None,
        }
    }

    /// `withdrawn` instead of `pending`/`approved` once the request's task cannot act.
    async fn with_task(&self, mut e: ApprovalWatchEvent) -> Option<ApprovalWatchEvent> {
        if let (Some(t), "pending" | "approved") = (&self.approval.task, e.state.as_str()) {
            match self.app.pdp.task_gone(t, self.app.clock.now()).await {
                Ok(Some(why)) => {
                    e.state = "withdrawn".into();
                    e.reason = Some(why);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        Some(e)
    }

    /// Whether `c` may end the request's task.
    fn touches_task(&self, c: &Change) -> bool {
        match c {
            Change::Task(t) => self.approval.task.as_ref() == Some(t),
            Change::Workflow(w) => self.approval.workflow.as_ref() == Some(w),
            Change::Agent(_) | Change::Instance(_) => self.approval.task.is_some(),
            _ => false,
        }
    }

    async fn next(&mut self) -> Option<ApprovalWatchEvent> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            let e = self.with_task(self.event()).await?;
            self.done = e.state != "pending";
            return Some(e);
        }
        loop {
            let left_ms = (self.approval.expires_at.0 - self.app.clock.now().0).max(0);
            let deadline = tokio::time::sleep(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
            let poll = tokio::time::sleep(FEED_DOWN_POLL);
            let wake = tokio::select! {
                c = self.changes.recv() => match c {
                    Ok(Change::FeedLost) => { self.polling = true; false }
                    Ok(Change::Resync) => { self.polling = false; true }
                    Ok(Change::Approval(id)) => id == self.approval.id,
                    Ok(c) => self.touches_task(&c),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return None,
                },
                _ = deadline => true,
                _ = poll, if self.polling => true,
                _ = self.stopping.changed() => return None,
            };
            if !wake {
                continue;
            }
            self.reread().await?;
            let e = self.with_task(self.event()).await?;
            if e.state != "pending" {
                self.done = true;
                return Some(e);
            }
        }
    }
}

impl App {
    /// Waits for a human's decision on an approval request the caller may see (see
    /// [`crate::pdp::Pdp::approval`]): a stream of its states, the current one first, ending
    /// after the first that is not `pending`, or when the server shuts down.
    pub async fn watch_approval(
        self: &Arc<Self>,
        caller: &Caller,
        id: &ApprovalId,
    ) -> Result<impl Stream<Item = ApprovalWatchEvent> + Send + use<>, Error> {
        // Subscribe before reading, so a decision between the read and the subscription is seen.
        let changes = self.store.subscribe();
        let approval = self.pdp.approval(caller, id).await?;
        let w = Wait {
            app: self.clone(),
            approval,
            changes,
            stopping: self.stopping.subscribe(),
            first: true,
            done: false,
            polling: false,
        };
        Ok(futures_util::stream::unfold(w, |mut w| async move { w.next().await.map(|e| (e, w)) }))
    }
}
