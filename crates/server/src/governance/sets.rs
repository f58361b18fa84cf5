//! The Security Event Tokens Remit transmits: the events an audit record gives receivers
//! (`signals_of`: CAEP `session-revoked` and `credential-change`, RISC `account-disabled` and
//! `account-enabled`, with RFC 9493 subjects), which streams hear of each (`in_scope`), and
//! how a SET waits in the outbox — its claims MACed under the KEK for its stream and `jti` —
//! and is signed with the current JWT key only when delivered (`set_for`, `signed`). Also the
//! stream-updated notice Remit queues when it changes a stream's status itself (SSF 1.0
//! §8.1.5).

use remit_core::audit::AuditRecord;
use remit_core::ids::{AgentName, InstanceId, SpiffeId, TaskId, WorkflowName};
use remit_store::{OutboxRow, Stream};
use serde_json::{Value, json};

use super::detail;
use super::ssf::{
    ACCOUNT_DISABLED, ACCOUNT_ENABLED, CREDENTIAL_CHANGE, SESSION_REVOKED, STREAM_UPDATED, StreamConfig, parse_stored,
};
use crate::app::App;
use crate::error::Error;

/// One event derived from an audit record, and who may hear of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub event: &'static str,
    pub sub_id: Value,
    pub payload: Value,
    pub workflow: Option<WorkflowName>,
    pub agent: Option<AgentName>,
    pub tool: Option<String>,
    /// Only administrators' streams hear of it (humans).
    pub admin_only: bool,
}

/// Who started an event, in CAEP's terms.
fn initiating_entity(actor: &str) -> &'static str {
    if actor.starts_with("governance:") {
        "policy"
    } else if actor.starts_with("break-glass") || actor.starts_with("human:") || actor == "admin" {
        "admin"
    } else if actor.starts_with("spiffe://") {
        "user"
    } else {
        "system"
    }
}

/// The events an audit record gives receivers (none for most records). `human_email` names a
/// deactivated human (looked up by the caller).
pub fn signals_of(
    rec: &AuditRecord,
    td: &remit_core::ids::TrustDomain,
    issuer: &str,
    human_email: Option<&str>,
) -> Vec<Signal> {
    let e = &rec.event;
    if e.outcome != remit_core::audit::Outcome::Success {
        return vec![];
    }
    let d = detail(rec);
    let mut payload = json!({
        "event_timestamp": e.time.0 / 1000,
        "initiating_entity": initiating_entity(&e.actor),
    });
    let reason = e.reason.clone().unwrap_or_else(|| e.action.clone());
    payload["reason_admin"] = json!({ "en": reason });
    let wf = e.workflow.as_deref().and_then(|w| WorkflowName::parse(w).ok());
    let agent = e.agent.as_deref().and_then(|a| AgentName::parse(a).ok());
    let base = |event, sub_id| Signal {
        event,
        sub_id,
        payload: payload.clone(),
        workflow: wf.clone(),
        agent: agent.clone(),
        tool: None,
        admin_only: false,
    };
    match e.action.as_str() {
        "task.revoke" | "task.complete" => {
            let (Some(w), Some(t)) = (&wf, e.task.as_deref().and_then(|t| TaskId::parse(t).ok())) else {
                return vec![];
            };
            let uri = SpiffeId::task(td, w, &t).to_string();
            vec![base(SESSION_REVOKED, json!({"format": "uri", "uri": uri}))]
        }
        "instance.revoke" => {
            let (Some(a), Some(i)) = (&agent, d["instance"].as_str().and_then(|i| InstanceId::parse(i).ok())) else {
                return vec![];
            };
            let uri = SpiffeId::instance(td, a, &i).to_string();
            vec![base(SESSION_REVOKED, json!({"format": "uri", "uri": uri}))]
        }
        "grant.revoke" => {
            let Some(g) = d["grant"].as_str() else { return vec![] };
            vec![base(SESSION_REVOKED, json!({"format": "opaque", "id": g}))]
        }
        "token.revoke" => {
            let Some(jti) = d["jti"].as_str() else { return vec![] };
            let mut s = base(CREDENTIAL_CHANGE, json!({"format": "jwt_id", "iss": issuer, "jti": jti}));
            s.payload["credential_type"] = json!("app");
            s.payload["change_type"] = json!("revoke");
            s.tool = d["tool"].as_str().map(str::to_owned);
            vec![s]
        }
        "agent.disable" | "agent.enable" => {
            let Some(a) = &agent else { return vec![] };
            let uri = format!("spiffe://{td}/agent/{a}");
            let event = if e.action == "agent.disable" { ACCOUNT_DISABLED } else { ACCOUNT_ENABLED };
            vec![base(event, json!({"format": "uri", "uri": uri}))]
        }
        "human.deactivate" => {
            let Some(email) = human_email else { return vec![] };
            let mut s = base(ACCOUNT_DISABLED, json!({"format": "email", "email": email}));
            s.admin_only = true;
            vec![s]
        }
        _ => vec![],
    }
}

/// The MAC domain of a queued SET's claims.
const OUTBOX_MAC_DOMAIN: &str = "remit/ssf-outbox/v1";

/// A SET for one stream as the outbox keeps it: its claims (JSON) and, after a newline, a MAC
/// under the KEK binding them to the stream and `jti` — signed only when delivered
/// ([`signed`]), so a key rotated while a receiver is away never leaves it a SET it cannot
/// verify, and a row written into the database by anyone but Remit is never signed. Returns
/// its `jti` and the stored form.
pub fn set_for(
    app: &App,
    cfg: &StreamConfig,
    event: &str,
    sub_id: &Value,
    payload: &Value,
    txn: &str,
) -> (String, String) {
    let jti = hex::encode(app.random.bytes16());
    let claims = json!({
        "iss": app.issuer,
        "iat": app.clock.now().secs(),
        "jti": jti,
        "aud": cfg.aud,
        "txn": txn,
        "sub_id": sub_id,
        "events": { event: payload },
    })
    .to_string();
    let tag = app.kek().mac(OUTBOX_MAC_DOMAIN, &[cfg.stream_id.as_bytes(), jti.as_bytes(), claims.as_bytes()]);
    (jti, format!("{claims}\n{}", hex::encode(tag)))
}

/// The SET to deliver for a queued row: its claims, checked against their MAC, signed now with
/// the current JWT key. `Err` says why a row is unusable (it is then dropped, never signed).
pub fn signed(app: &App, row: &OutboxRow) -> Result<String, &'static str> {
    let (claims, tag) = row.set.rsplit_once('\n').ok_or("no MAC")?;
    let tag = hex::decode(tag).map_err(|_| "a malformed MAC")?;
    let fields = [row.stream.as_bytes(), row.jti.as_bytes(), claims.as_bytes()];
    if !app.kek().verify_mac(OUTBOX_MAC_DOMAIN, &fields, &tag) {
        return Err("its MAC does not match");
    }
    let claims: Value = serde_json::from_str(claims).map_err(|_| "unreadable claims")?;
    Ok(remit_token::jwt::mint_set(app.keyring().signer(), &claims))
}

/// Whether a queued row is a stream-updated notice: the one thing a disabled stream still
/// delivers (SSF 1.0 §8.1.5: sent before the transmitter stops the stream).
pub fn is_stream_update(row: &OutboxRow) -> bool {
    row.set
        .split_once('\n')
        .and_then(|(claims, _)| serde_json::from_str::<Value>(claims).ok())
        .is_some_and(|c| c["events"].get(STREAM_UPDATED).is_some())
}

/// The stream-updated notice telling a stream's receiver that Remit changed its status itself
/// (SSF 1.0 §8.1.5), to queue with the change.
pub async fn status_notice(app: &App, s: &Stream, status: &str, reason: &str) -> Result<OutboxRow, Error> {
    let cfg = parse_stored(s)?;
    let sub = json!({"format": "opaque", "id": s.id});
    let payload = json!({"status": status, "reason": reason});
    let (jti, set) = set_for(app, &cfg, STREAM_UPDATED, &sub, &payload, &format!("stream-updated:{}", s.id));
    let (seq, _) = app.store.audit().head().await?;
    let now = app.clock.now();
    Ok(OutboxRow { stream: s.id.clone(), jti, seq, set, created_at: now, attempts: 0, next_at: now, last_error: None })
}

/// Whether a stream hears of `s` at all (its owner's scope), given the workflows' tool lists.
pub fn in_scope(
    owner: &str,
    s: &Signal,
    tools_of: &dyn Fn(&WorkflowName) -> Vec<String>,
    agent_workflows: &[WorkflowName],
) -> bool {
    let Some(tool) = owner.strip_prefix("tool:") else { return owner == "admin" };
    if s.admin_only {
        return false;
    }
    if let Some(t) = &s.tool {
        return t == tool;
    }
    if let Some(w) = &s.workflow {
        return tools_of(w).iter().any(|t| t == tool);
    }
    s.agent.is_some() && agent_workflows.iter().any(|w| tools_of(w).iter().any(|t| t == tool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use remit_core::audit::{AuditAction, AuditEvent, Outcome};
    use remit_core::ids::TrustDomain;
    use remit_core::time::UnixMillis;

    fn rec(e: AuditEvent) -> AuditRecord {
        AuditRecord { seq: 1, event: e, prev_hash: String::new(), hash: String::new() }
    }

    #[test]
    fn revocations_become_caep_and_risc_events_with_rfc9493_subjects() {
        let td = TrustDomain::parse("remit.test").unwrap();
        let t = TaskId::from_random([7; 16]);
        let r = rec(AuditEvent::new(UnixMillis(5_000), "break-glass", AuditAction::TaskRevoke)
            .task(&t)
            .workflow("triage")
            .agent("bot")
            .reason("killed"));
        let s = signals_of(&r, &td, "https://remit.test", None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].event, SESSION_REVOKED);
        assert_eq!(
            s[0].sub_id,
            json!({"format": "uri", "uri": format!("spiffe://remit.test/workflow/triage/task/{t}")})
        );
        assert_eq!(
            s[0].payload,
            json!({"event_timestamp": 5, "initiating_entity": "admin", "reason_admin": {"en": "killed"}})
        );

        let tok = rec(AuditEvent::new(UnixMillis(5_000), "spiffe://remit.test/x", AuditAction::TokenRevoke)
            .detail([("jti", "c-1".into()), ("tool", "jira".into())]));
        let s = signals_of(&tok, &td, "https://remit.test", None);
        assert_eq!(s[0].event, CREDENTIAL_CHANGE);
        assert_eq!(s[0].sub_id, json!({"format": "jwt_id", "iss": "https://remit.test", "jti": "c-1"}));
        assert_eq!((s[0].payload["change_type"].as_str(), s[0].tool.as_deref()), (Some("revoke"), Some("jira")));

        let dis =
            rec(AuditEvent::new(UnixMillis(1), "governance:recertification", AuditAction::AgentDisable).agent("bot"));
        let s = signals_of(&dis, &td, "https://remit.test", None);
        assert_eq!((s[0].event, s[0].payload["initiating_entity"].as_str()), (ACCOUNT_DISABLED, Some("policy")));

        // Refused attempts and other records say nothing.
        let denied = rec(AuditEvent::new(UnixMillis(1), "x", AuditAction::TaskRevoke).outcome(Outcome::Denied));
        assert!(signals_of(&denied, &td, "i", None).is_empty());
        assert!(
            signals_of(&rec(AuditEvent::new(UnixMillis(1), "x", AuditAction::TaskStart)), &td, "i", None).is_empty()
        );
    }

    #[test]
    fn tool_streams_hear_only_of_their_workflows() {
        let s = Signal {
            event: SESSION_REVOKED,
            sub_id: json!({}),
            payload: json!({}),
            workflow: Some(WorkflowName::parse("triage").unwrap()),
            agent: None,
            tool: None,
            admin_only: false,
        };
        let tools = |w: &WorkflowName| if w.as_str() == "triage" { vec!["jira".to_owned()] } else { vec![] };
        assert!(in_scope("tool:jira", &s, &tools, &[]));
        assert!(!in_scope("tool:github", &s, &tools, &[]));
        assert!(in_scope("admin", &s, &tools, &[]));
        let human = Signal { admin_only: true, workflow: None, ..s };
        assert!(!in_scope("tool:jira", &human, &tools, &[]));
    }
}
