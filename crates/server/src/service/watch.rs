//! Watching a task: one stream per watcher that says, at once, whether the task is live, and
//! says so again the moment it stops being live (revoked, completed, expired, or killed with
//! its instance, agent or workflow), then ends.
//!
//! It is fed by the store's change feed (in-process on SQLite, LISTEN/NOTIFY on PostgreSQL),
//! so a kill on any replica reaches a watcher on any other within the feed's latency, with no
//! polling. While the feed is down (`Change::FeedLost`) it re-reads the task every second
//! until the feed is back; it also wakes at the task's own deadline. `remit exec` uses it to
//! stop its command when the task is killed; later streams (approvals) can reuse it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use remit_core::ids::TaskId;
use remit_core::rules::{self, Liveness};
use remit_store::{Change, TaskSnapshot};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::Caller;
use crate::app::App;
use crate::error::Error;

/// How often a watcher re-reads its task while the change feed is down.
const FEED_DOWN_POLL: Duration = Duration::from_secs(1);

/// One state of a watched task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaskWatchEvent {
    pub task: String,
    /// Whether the task's token is honoured right now.
    pub live: bool,
    /// The task's state (`active`, `completed`, `revoked`, `expired`).
    pub state: String,
    /// Why it is not live, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

struct Watch {
    app: Arc<App>,
    id: TaskId,
    /// The task's workflow, agent and instance: changes to any of them may end it.
    snap: TaskSnapshot,
    changes: tokio::sync::broadcast::Receiver<Change>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The first event (the current state) is still to be sent.
    first: bool,
    done: bool,
    /// The feed is down: re-read on a timer until it is back.
    polling: bool,
}

impl Watch {
    fn event(&self) -> TaskWatchEvent {
        let s = &self.snap;
        let now = self.app.clock.now();
        let live = rules::task_liveness(&s.task, &s.workflow, &s.agent, s.instance.as_ref(), now);
        TaskWatchEvent {
            task: self.id.to_string(),
            live: live == Liveness::Active,
            state: rules::effective_state(&s.task, now).to_string(),
            reason: match live {
                Liveness::Active => None,
                Liveness::Inactive(why) => Some(why.to_owned()),
            },
        }
    }

    fn concerns(&self, c: &Change) -> bool {
        let t = &self.snap.task;
        match c {
            Change::Task(id) => *id == self.id,
            Change::Instance(i) => t.instance.as_ref() == Some(i),
            Change::Agent(a) => *a == t.agent,
            Change::Workflow(w) => *w == t.workflow,
            Change::Resync => true,
            _ => false,
        }
    }

    /// Re-reads the task; `None` when the stream must end without another event.
    async fn reread(&mut self) -> Option<()> {
        match self.app.store.identity().task_snapshot(&self.id).await {
            Ok(Some(s)) => {
                self.snap = s;
                Some(())
            }
            // Gone or unreadable: end the stream; a watcher reconnects and learns more.
            _ => None,
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<TaskWatchEvent> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            let e = self.event();
            self.done = !e.live;
            return Some(e);
        }
        loop {
            let left_ms = (self.snap.task.expires_at.0 - self.app.clock.now().0).max(0);
            let deadline = tokio::time::sleep(Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)));
            let poll = tokio::time::sleep(FEED_DOWN_POLL);
            let wake = tokio::select! {
                c = self.changes.recv() => match c {
                    Ok(Change::FeedLost) => { self.polling = true; false }
                    Ok(Change::Resync) => { self.polling = false; true }
                    Ok(c) => self.concerns(&c),
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
            let e = self.event();
            if !e.live {
                self.done = true;
                return Some(e);
            }
        }
    }
}

impl App {
    /// Watches a task the caller may see (admin, or the instance that started it): a stream
    /// of its states, the current one first, ending after the one that says it is no longer
    /// live, or when the server shuts down.
    pub async fn watch_task(
        self: &Arc<Self>,
        caller: &Caller,
        id: TaskId,
    ) -> Result<impl Stream<Item = TaskWatchEvent> + Send + use<>, Error> {
        // Subscribe before reading, so a kill between the read and the subscription is seen.
        let changes = self.store.subscribe();
        self.task(caller, &id).await?;
        let snap = self
            .store
            .identity()
            .task_snapshot(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task `{id}` not found")))?;
        let w = Watch {
            app: self.clone(),
            id,
            snap,
            changes,
            stopping: self.stopping.subscribe(),
            first: true,
            done: false,
            polling: false,
        };
        Ok(futures_util::stream::unfold(w, |mut w| async move { w.next().await.map(|e| (e, w)) }))
    }
}
