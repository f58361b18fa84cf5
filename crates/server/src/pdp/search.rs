//! AuthZEN search: which subjects, resources or actions the rest of a request allows.
//! Subjects and resources are the attribute store's entities of the mapped type, scanned in
//! id order; actions are the schema's. Paged with an opaque token (the last scanned id).

use remit_core::audit::{AuditAction, AuditEvent};
use serde_json::{Value, json};

use super::{ActionRef, Evaluation, Party, Pdp};
use crate::caller::Caller;
use crate::error::Error;

/// What an AuthZEN search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Subject,
    Resource,
    Action,
}

impl SearchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

/// Most candidates one search request evaluates (the rest is reached by paging).
const MAX_SCANNED: usize = 100_000;
/// Candidates read from the store at a time.
const SCAN_PAGE: u32 = 500;

impl Pdp {
    /// AuthZEN search: the subjects, resources or actions for which the rest of the request
    /// is allowed. Subjects and resources are the attribute store's entities of the mapped
    /// type, scanned in id order from `token`; actions are the schema's. Returns the results
    /// (at most `limit`) and the next page token (`""` on the last page). One audit record
    /// per search.
    pub async fn search(
        &self,
        caller: &Caller,
        kind: SearchKind,
        template: Evaluation,
        token: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Value>, String), Error> {
        let engine = self.engine();
        self.check_caller_facts(caller, &engine, std::slice::from_ref(&template))?;
        let mut results = Vec::new();
        let mut next = String::new();
        let mut scanned = 0usize;
        match kind {
            SearchKind::Action => {
                let names: Vec<String> = engine
                    .schema()
                    .actions()
                    .map(|a| a.id().unescaped().to_owned())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for name in names {
                    let mut ev = template.clone();
                    ev.action = ActionRef { name: Some(name.clone()), properties: None };
                    scanned += 1;
                    if self.decide_one(&engine, &ev, None).await?.allowed() {
                        results.push(json!({"name": name}));
                    }
                }
            }
            SearchKind::Subject | SearchKind::Resource => {
                let searched = if kind == SearchKind::Subject { &template.subject } else { &template.resource };
                let authzen_type = searched.etype.clone().unwrap_or_default();
                let cedar_type = if kind == SearchKind::Subject {
                    engine.subject_type(&authzen_type)
                } else {
                    engine.resource_type(&authzen_type)
                };
                let mut cursor = token.filter(|t| !t.is_empty());
                'scan: loop {
                    let page = self.store.policy().list_entities(&cedar_type, cursor.clone(), SCAN_PAGE).await?;
                    let Some(last) = page.last().map(|e| e.id.clone()) else { break };
                    for cand in &page {
                        scanned += 1;
                        let mut ev = template.clone();
                        let e = Party {
                            etype: Some(authzen_type.clone()),
                            id: Some(cand.id.clone()),
                            ..Default::default()
                        };
                        if kind == SearchKind::Subject {
                            ev.subject = Party { properties: ev.subject.properties.clone(), ..e };
                        } else {
                            ev.resource = Party { properties: ev.resource.properties.clone(), ..e };
                        }
                        if self.decide_one(&engine, &ev, None).await?.allowed() {
                            results.push(json!({"type": authzen_type, "id": cand.id}));
                            if results.len() >= limit {
                                next = cand.id.clone();
                                break 'scan;
                            }
                        }
                        if scanned >= MAX_SCANNED {
                            next = cand.id.clone();
                            break 'scan;
                        }
                    }
                    cursor = Some(last);
                }
                // A full last page that ended exactly at the limit may have nothing after it;
                // the caller's next request then simply returns an empty last page.
            }
        }
        let audit = AuditEvent::new(self.clock.now(), caller.actor(), AuditAction::AccessSearch).detail([
            ("kind", kind.as_str().into()),
            ("policy_version", engine.version().into()),
            ("scanned", scanned.into()),
            ("results", results.len().into()),
            ("subject", json!({"type": template.subject.etype, "id": template.subject.id})),
            ("action", template.action.name.clone().into()),
            ("resource", json!({"type": template.resource.etype, "id": template.resource.id})),
        ]);
        self.store.audit().append(vec![audit]).await?;
        Ok((results, next))
    }
}
