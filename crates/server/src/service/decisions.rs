//! Decisions for an agent's task. The task is named by its token: the bearer itself (a task
//! asking about its own actions) or a `token` in the request (a tool or gateway asking on
//! the task's behalf). A token in the request is verified here (signature, issuer, expiry,
//! trust domain, and that it is a task token naming its task); the task is read through the
//! liveness cache, and the decision service decides.

use remit_core::ids::Subject;
use remit_token::SvidKind;

use super::Error;
use crate::app::App;
use crate::caller::Caller;
use crate::pdp::{TaskAnswer, TaskCall};

impl App {
    /// Decides an action of the task `token` names (or, without one, of the calling task). A
    /// token that is not a valid task token is a deny (with the reason in `errors`), never an
    /// error, so a PEP fails closed.
    pub async fn decide_task(&self, caller: &Caller, token: Option<&str>, call: TaskCall) -> Result<TaskAnswer, Error> {
        call.check(self.cfg.limits.max_entity_id_bytes)?;
        let Some(token) = token else {
            return match caller {
                // Authenticated (and found live) moments ago with this very token.
                Caller::Task { snapshot, spiffe_id, .. } => {
                    self.pdp.decide_task(caller, call, Some(((**snapshot).clone(), spiffe_id.clone()))).await
                }
                _ => Err(Error::Invalid(
                    "`token` is required: the task token of the call being decided (a task asking about its own \
                     action sends none and authenticates with its token)"
                        .into(),
                )),
            };
        };
        let verified = self
            .verify_jwt(token, None, Some(SvidKind::Task))
            .await
            .ok()
            .and_then(|c| self.subject_of(&c).map(|s| (c, s)));
        let snap = match verified {
            // A sender-constrained token is accepted only from its holder, with its proof (as
            // the bearer, through `Auth`); a copy handed over in a body is not enough.
            Some((claims, Subject::Task { .. })) if claims.cnf.is_some() => {
                return Err(Error::Denied(
                    "a DPoP-bound task token is accepted only from its holder, with a proof, as the bearer".into(),
                ));
            }
            Some((claims, Subject::Task { task, .. })) if claims.remit.task.as_deref() == Some(task.as_str()) => {
                if let Caller::Task { id, .. } = caller
                    && *id != task
                {
                    return Err(Error::Denied("a task may only ask about its own actions".into()));
                }
                self.store.identity().task_snapshot(&task).await?.map(|s| (s, claims.sub))
            }
            _ => None,
        };
        self.pdp.decide_task(caller, call, snap).await
    }
}
