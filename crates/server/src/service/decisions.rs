//! Decisions for an agent's task: the token is verified here (signature, issuer, expiry,
//! trust domain, and that it is a task token naming its task), the task is read through the
//! liveness cache, and the decision service decides.

use remit_core::ids::Subject;
use remit_token::SvidKind;

use super::Error;
use crate::app::App;
use crate::caller::Caller;
use crate::pdp::{TaskAnswer, TaskCall};

impl App {
    /// Decides an action of the task `token` names. A token that is not a valid task token
    /// is a deny (with the reason in `errors`), never an error, so a PEP fails closed.
    pub async fn decide_task(&self, caller: &Caller, token: &str, call: TaskCall) -> Result<TaskAnswer, Error> {
        call.check(self.cfg.limits.max_entity_id_bytes)?;
        let verified = self
            .verify_jwt(token, None, Some(SvidKind::Task))
            .await
            .ok()
            .and_then(|c| self.subject_of(&c).map(|s| (c, s)));
        let snap = match verified {
            Some((claims, Subject::Task { task, .. })) if claims.remit.task.as_deref() == Some(task.as_str()) => {
                self.store.identity().task_snapshot(&task).await?.map(|s| (s, claims.sub))
            }
            _ => None,
        };
        self.pdp.decide_task(caller, call, snap).await
    }
}
