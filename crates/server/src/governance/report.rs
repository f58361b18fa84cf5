//! Least privilege from observed use, and the governance report that maps Remit's live state
//! to OWASP NHI Top 10 (2025), OWASP Top 10 for Agentic Applications (2026), CSA MAESTRO and
//! NIST AI RMF 1.0.
//!
//! Usage comes from the audit log over a window (bounded reads; an admin's question, never a
//! request's path): the tools a workflow's tasks were allowed to use versus those its decisions
//! actually named. The suggestion is the granted list narrowed to what was used (an
//! unrestricted workflow: exactly what was used); accepting it replaces the workflow's tool list
//! in one audited step. The report's controls each cite the frameworks' own identifiers, from
//! the tables shipped in `frameworks/` (read from the frameworks' texts; nothing is numbered
//! here), with evidence and gaps computed from the store.

use std::collections::BTreeSet;

use remit_core::ids::WorkflowName;
use remit_core::time::UnixMillis;
use remit_store::AuditFilter;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::caller::Caller;
use crate::error::Error;

/// The framework tables, as shipped.
pub const OWASP_NHI: &str = include_str!("frameworks/owasp-nhi-2025.json");
pub const OWASP_ASI: &str = include_str!("frameworks/owasp-asi-2026.json");
pub const MAESTRO: &str = include_str!("frameworks/csa-maestro.json");
pub const NIST_AI_RMF: &str = include_str!("frameworks/nist-ai-rmf-1.0.json");

const DAY_MS: i64 = 86_400_000;
/// Decisions read per workflow for usage.
const USAGE_RECORDS: u32 = remit_store::MAX_PAGE;

/// A workflow's granted versus used tools over a window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub workflow: String,
    pub window_days: u32,
    /// The workflow's tool list (empty: unrestricted).
    pub granted: Vec<String>,
    pub unrestricted: bool,
    /// Tools named by allowed decisions of its tasks in the window.
    pub used: Vec<String>,
    /// Granted and never used.
    pub unused: Vec<String>,
    /// The narrower list an owner can accept.
    pub suggested: Vec<String>,
    /// Decisions read (and denied among them).
    pub decisions: u64,
    pub denied: u64,
    /// Whether the suggestion narrows anything.
    pub narrows: bool,
}

impl App {
    async fn usage_of(&self, w: &remit_core::model::Workflow, window_days: u32) -> Result<Usage, Error> {
        let since = UnixMillis(self.clock.now().0 - i64::from(window_days) * DAY_MS);
        let f = AuditFilter {
            workflow: Some(w.name.clone()),
            action: Some("access.evaluate".into()),
            since: Some(since),
            limit: USAGE_RECORDS,
            // The most recent use counts when there is more than one page of it.
            newest_first: true,
            ..AuditFilter::default()
        };
        let recs = self.store.audit().list(f).await?;
        let mut used = BTreeSet::new();
        let mut denied = 0;
        for r in &recs {
            if r.event.outcome == remit_core::audit::Outcome::Denied {
                denied += 1;
                continue;
            }
            if let Some(t) = super::detail(r)["tool"].as_str() {
                used.insert(t.to_owned());
            }
        }
        let granted: Vec<String> = w.allowed_tools.clone();
        let unrestricted = granted.is_empty();
        let unused: Vec<String> = granted.iter().filter(|t| !used.contains(*t)).cloned().collect();
        let suggested: Vec<String> = if unrestricted {
            used.iter().cloned().collect()
        } else {
            granted.iter().filter(|t| used.contains(*t)).cloned().collect()
        };
        let narrows = !suggested.is_empty() && (unrestricted || suggested.len() < granted.len());
        Ok(Usage {
            workflow: w.name.to_string(),
            window_days,
            granted,
            unrestricted,
            used: used.into_iter().collect(),
            unused,
            suggested,
            decisions: recs.len() as u64,
            denied,
            narrows,
        })
    }

    /// A workflow's granted versus used tools. Needs `governance.read` on it.
    pub async fn usage(&self, caller: &Caller, name: &WorkflowName, window_days: u32) -> Result<Usage, Error> {
        caller.require_human_or_admin()?;
        self.allow_on_workflow(caller, remit_policy::admin::AdminAction::GovernanceRead, name).await?;
        if !(1..=365).contains(&window_days) {
            return Err(Error::Invalid("`window_days` is 1..=365".into()));
        }
        let w = self
            .store
            .identity()
            .workflow(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no workflow `{name}`")))?;
        self.usage_of(&w, window_days).await
    }

    /// Accepts the suggested narrower tool list in one step (recomputed here, so it is what
    /// observed use says now); recorded as the workflow's update with the evidence. Needs
    /// `workflow.update`.
    pub async fn accept_usage(
        &self,
        caller: &Caller,
        name: &WorkflowName,
        window_days: u32,
        reason: &str,
    ) -> Result<(Usage, remit_core::model::Workflow), Error> {
        let u = self.usage(caller, name, window_days).await?;
        if u.decisions >= u64::from(USAGE_RECORDS) {
            return Err(Error::Conflict(format!(
                "more than {USAGE_RECORDS} decisions in the window: use cannot be known in full; choose a shorter window"
            )));
        }
        if !u.narrows {
            return Err(Error::Conflict(
                "nothing to narrow: every granted tool was used in the window (or none was used at all)".into(),
            ));
        }
        let why = format!(
            "{reason} (least privilege: narrowed to the tools used in {window_days} days: {} of {})",
            u.suggested.len(),
            if u.unrestricted { "unrestricted".into() } else { u.granted.len().to_string() }
        );
        let w = self.set_workflow_tools(caller, name, u.suggested.clone(), &why).await?;
        Ok((u, w))
    }
}

/// One control of the report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Control {
    pub id: &'static str,
    pub title: &'static str,
    /// `met`, `partial` or `gap`.
    pub status: &'static str,
    /// Framework identifiers this control addresses, as the frameworks write them.
    pub owasp_nhi: Vec<&'static str>,
    pub owasp_asi: Vec<&'static str>,
    /// MAESTRO layer and threat (MAESTRO lists threats per layer).
    pub maestro: Vec<String>,
    pub nist_ai_rmf: Vec<&'static str>,
    #[schema(value_type = Object)]
    pub evidence: Value,
    pub gaps: Vec<String>,
}

/// The report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub generated_at: String,
    pub issuer: String,
    pub window_days: u32,
    pub controls: Vec<Control>,
    /// Every gap, one line each.
    pub findings: Vec<String>,
}

fn status(gaps: &[String], partial: bool) -> &'static str {
    if gaps.is_empty() { if partial { "partial" } else { "met" } } else { "gap" }
}

fn examples(v: &[String]) -> String {
    let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > 5 {
        s.push_str(&format!(" and {} more", v.len() - 5));
    }
    s
}

/// Checks every identifier a control cites against the shipped tables.
fn cited(table: &str, ids: &[&str]) -> Result<(), Error> {
    let t: Value = serde_json::from_str(table).map_err(|e| Error::Internal(e.to_string()))?;
    for id in ids {
        if !t["items"].as_array().is_some_and(|items| items.iter().any(|i| i["id"] == *id)) {
            return Err(Error::Internal(format!("the report cites `{id}`, which the framework table lacks")));
        }
    }
    Ok(())
}

fn maestro(layer: u64, threat: &str) -> Result<String, Error> {
    let t: Value = serde_json::from_str(MAESTRO).map_err(|e| Error::Internal(e.to_string()))?;
    let l = t["items"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["layer"] == layer))
        .ok_or_else(|| Error::Internal(format!("MAESTRO has no layer {layer}")))?;
    let known = l["threats"].as_array().is_some_and(|ts| ts.iter().any(|x| x == threat));
    if !known {
        return Err(Error::Internal(format!("MAESTRO layer {layer} lists no threat `{threat}`")));
    }
    Ok(format!("L{layer} {}: {threat}", l["name"].as_str().unwrap_or_default()))
}

impl App {
    /// The governance report from live state. Needs `governance.read` on the installation.
    pub async fn governance_report(&self, caller: &Caller, window_days: u32) -> Result<Report, Error> {
        caller.require_human_or_admin()?;
        self.allow(
            caller,
            remit_policy::admin::AdminAction::GovernanceRead,
            remit_policy::admin::AdminTarget::Installation,
        )
        .await?;
        if !(1..=365).contains(&window_days) {
            return Err(Error::Invalid("`window_days` is 1..=365".into()));
        }
        let now = self.clock.now();
        let since = UnixMillis(now.0 - i64::from(window_days) * DAY_MS);
        let workflows = self.store.identity().list_workflows().await?;
        let agents = self.store.identity().list_agents().await?;
        let standings = self.standings().await?;
        let settings = self.all_settings().await?;
        let count = |action: &str| {
            let f = AuditFilter {
                action: Some(action.into()),
                since: Some(since),
                limit: remit_store::MAX_PAGE,
                ..Default::default()
            };
            async move { self.store.audit().list(f).await.map(|r| r.len()) }
        };
        let mut controls = Vec::new();
        let mut control = |id,
                           title,
                           nhi: &[&'static str],
                           asi: &[&'static str],
                           mae: Vec<String>,
                           nist: &[&'static str],
                           evidence: Value,
                           gaps: Vec<String>,
                           partial: bool|
         -> Result<(), Error> {
            cited(OWASP_NHI, nhi)?;
            cited(OWASP_ASI, asi)?;
            cited(NIST_AI_RMF, nist)?;
            controls.push(Control {
                id,
                title,
                status: status(&gaps, partial),
                owasp_nhi: nhi.to_vec(),
                owasp_asi: asi.to_vec(),
                maestro: mae,
                nist_ai_rmf: nist.to_vec(),
                evidence,
                gaps,
            });
            Ok(())
        };

        // Offboarding: orphans.
        let orphan_agents: Vec<String> = agents
            .iter()
            .filter(|a| a.orphaned_at.is_some() && a.state == remit_core::model::AgentState::Enabled)
            .map(|a| a.name.to_string())
            .collect();
        let orphan_wfs: Vec<String> = workflows
            .iter()
            .filter(|w| w.orphaned_at.is_some() && w.state == remit_core::model::WorkflowState::Active)
            .map(|w| w.name.to_string())
            .collect();
        let mut gaps = Vec::new();
        if !orphan_agents.is_empty() {
            gaps.push(format!("{} orphaned agents still enabled: {}", orphan_agents.len(), examples(&orphan_agents)));
        }
        if !orphan_wfs.is_empty() {
            gaps.push(format!("{} orphaned workflows still active: {}", orphan_wfs.len(), examples(&orphan_wfs)));
        }
        control(
            "offboarding",
            "Identities whose owner left are found and suspended",
            &["NHI1:2025"],
            &["ASI03"],
            vec![maestro(7, "Agent Identity Attack")?],
            &["GOVERN 1.7", "MANAGE 2.4"],
            json!({"orphaned_agents": orphan_agents, "orphaned_workflows": orphan_wfs,
                   "enforced_by": "humans area: deactivation orphans what they own; recertification makes orphans due at once"}),
            gaps,
            false,
        )?;

        // Recertification.
        let overdue: Vec<String> = standings
            .iter()
            .filter(|d| d.live && d.standing == remit_core::recert::Standing::Overdue)
            .map(|d| format!("{} {}", d.kind, d.id))
            .collect();
        let due: Vec<String> = standings
            .iter()
            .filter(|d| d.live && d.standing == remit_core::recert::Standing::Due)
            .map(|d| format!("{} {}", d.kind, d.id))
            .collect();
        let mut gaps = Vec::new();
        if !overdue.is_empty() {
            gaps.push(format!("{} objects overdue for recertification: {}", overdue.len(), examples(&overdue)));
        }
        if !due.is_empty() {
            gaps.push(format!("{} objects due for recertification: {}", due.len(), examples(&due)));
        }
        control(
            "recertification",
            "Standing access is recertified by a human every period",
            &["NHI1:2025", "NHI5:2025"],
            &["ASI03"],
            vec![],
            &["GOVERN 1.5"],
            json!({"objects": standings.len(), "due": due.len(), "overdue": overdue.len(),
                   "default_period_days": self.cfg.governance.recert_period_days,
                   "grace_days": self.cfg.governance.recert_grace_days,
                   "enforced_by": "the governance.recert job suspends overdue objects through their kill switch"}),
            gaps,
            false,
        )?;

        // Reuse: one identity per purpose (unless equivalent workflows and accepted).
        let reuses = self.reuses().await?;
        let accepted: Vec<String> = reuses
            .iter()
            .filter(|r| !r.flagged)
            .map(|r| {
                format!(
                    "{} ({}) until {}",
                    r.agent,
                    r.workflows.join(", "),
                    r.accepted_until.clone().unwrap_or_default()
                )
            })
            .collect();
        let reused: Vec<String> =
            reuses.iter().filter(|r| r.flagged).map(|r| format!("{} ({})", r.agent, r.workflows.join(", "))).collect();
        let gaps = if reused.is_empty() {
            vec![]
        } else {
            vec![format!("{} agents reused across workflows: {}", reused.len(), examples(&reused))]
        };
        control(
            "identity_per_purpose",
            "One identity per purpose: agents are not reused across workflows",
            &["NHI9:2025"],
            &["ASI03"],
            vec![maestro(7, "Agent Impersonation")?],
            &["GOVERN 1.6"],
            json!({"agents": agents.len(), "reused": reused, "accepted_reuse": accepted,
                   "enforced_by": "every task gets its own SPIFFE ID under its workflow; an agent lists its workflows"}),
            gaps,
            false,
        )?;

        // Least privilege.
        let mut unrestricted = Vec::new();
        let mut unused = Vec::new();
        let mut usage = Vec::new();
        for w in workflows.iter().filter(|w| w.state == remit_core::model::WorkflowState::Active) {
            let u = self.usage_of(w, window_days).await?;
            if u.unrestricted {
                unrestricted.push(w.name.to_string());
            }
            for t in &u.unused {
                unused.push(format!("{}: {t}", w.name));
            }
            usage.push(json!({"workflow": u.workflow, "granted": u.granted, "used": u.used, "suggested": u.suggested}));
        }
        let mut idle = Vec::new();
        for a in agents.iter().filter(|a| a.state == remit_core::model::AgentState::Enabled) {
            let f = AuditFilter {
                agent: Some(a.name.clone()),
                action: Some("task.start".into()),
                since: Some(since),
                limit: 1,
                ..Default::default()
            };
            if self.store.audit().list(f).await?.is_empty() && a.created_at < since {
                idle.push(a.name.to_string());
            }
        }
        let mut gaps = Vec::new();
        if !unrestricted.is_empty() {
            gaps.push(format!(
                "{} workflows with no tool list (any tool): {}",
                unrestricted.len(),
                examples(&unrestricted)
            ));
        }
        if !unused.is_empty() {
            gaps.push(format!(
                "{} grants of a tool unused for {window_days} days: {}",
                unused.len(),
                examples(&unused)
            ));
        }
        if !idle.is_empty() {
            gaps.push(format!("{} agents with no task in {window_days} days: {}", idle.len(), examples(&idle)));
        }
        // Grants never exercised: active, confirmed over an hour ago, and no task started under
        // them since (task starts under a grant name it in their record).
        let mut unexercised = Vec::new();
        let hour_ago = UnixMillis(now.0 - 3_600_000);
        for g in self.store.grants().list(None, remit_store::MAX_PAGE).await? {
            let confirmed = g.confirmed_at.unwrap_or(g.created_at);
            if g.state != remit_core::grant::GrantState::Active || confirmed > hour_ago || g.expires_at <= now {
                continue;
            }
            let f = AuditFilter {
                workflow: Some(g.workflow.clone()),
                agent: Some(g.agent.clone()),
                action: Some("task.start".into()),
                since: Some(confirmed),
                limit: remit_store::MAX_PAGE,
                newest_first: true,
                ..Default::default()
            };
            let used = self.store.audit().list(f).await?.iter().any(|r| super::detail(r)["grant"] == g.id.as_str());
            if !used {
                unexercised.push(format!("{} ({} → {} in {})", g.id, g.human_email, g.agent, g.workflow));
            }
        }
        if !unexercised.is_empty() {
            gaps.push(format!(
                "{} grants never exercised (confirmed over an hour ago, no task under them): {}",
                unexercised.len(),
                examples(&unexercised)
            ));
        }
        control(
            "least_privilege",
            "Granted tools match observed use; no standing privilege",
            &["NHI5:2025"],
            &["ASI02", "ASI03"],
            vec![maestro(7, "Agent Tool Misuse")?],
            &["MANAGE 1.3"],
            json!({"usage": usage, "idle_agents": idle, "unexercised_grants": unexercised,
                   "enforced_by": "workflow tool lists; `remit governance usage` suggests and accepts the narrower list"}),
            gaps,
            false,
        )?;

        // Short-lived credentials.
        let long: Vec<String> = workflows
            .iter()
            .filter(|w| w.max_task_ttl_secs > 3_600)
            .map(|w| format!("{} ({} s)", w.name, w.max_task_ttl_secs))
            .collect();
        let gaps = if long.is_empty() {
            vec![]
        } else {
            vec![format!("{} workflows allow tasks longer than an hour: {}", long.len(), examples(&long))]
        };
        control(
            "short_lived_credentials",
            "Credentials are per task, short-lived and revoked with it",
            &["NHI7:2025", "NHI4:2025"],
            &["ASI03"],
            vec![],
            &["MEASURE 2.7"],
            json!({"hard_max_task_ttl_secs": self.cfg.limits.hard_max_task_ttl.as_secs(), "long_lived": long,
                   "enforced_by": "task JWT-SVIDs capped by the workflow; per-tool credentials capped by their task"}),
            gaps,
            false,
        )?;

        // Secrets brokered, leaks watched.
        let leaks = count("leak.found").await?;
        let tools = self.store.tools().list_tools().await?;
        let proxied = tools.iter().filter(|t| t.proxy.is_some()).count();
        control(
            "secrets_brokered",
            "Upstream secrets are brokered, never handed to agents; leaks are looked for",
            &["NHI2:2025", "NHI7:2025"],
            &["ASI02"],
            vec![maestro(2, "Data Exfiltration")?],
            &["MEASURE 2.7"],
            json!({"tools": tools.len(), "proxied_tools": proxied, "leak_scans_in_window": leaks,
                   "enforced_by": "sealed write-only secrets injected at the proxy; the leak guard"}),
            vec![],
            proxied == 0,
        )?;

        // Human oversight.
        let policy = self.store.policy().active_set().await?;
        let gated = policy.as_ref().is_some_and(|p| p.bundle.contains("@approval"));
        let gaps = if gated {
            vec![]
        } else {
            vec!["the active policy has no approval gate (`@approval`) on any action".into()]
        };
        control(
            "human_oversight",
            "Sensitive actions wait for a human's approval of that call",
            &[],
            &["ASI09", "ASI02"],
            vec![],
            &["MAP 3.5"],
            json!({"policy_version": policy.as_ref().map(|p| p.version), "approval_gates": gated,
                   "approvals_in_window": count("approval.approve").await?}),
            gaps,
            false,
        )?;

        // Containment and kill switches.
        let declared: Vec<String> =
            settings.iter().filter(|(_, s)| s.containment.is_some()).map(|(w, _)| w.clone()).collect();
        let trips = count("containment.trip").await?;
        control(
            "containment",
            "Misbehaving agents are contained automatically; every kill switch cascades",
            &[],
            &["ASI08", "ASI10"],
            vec![maestro(7, "Compromised Agents")?],
            &["MANAGE 2.4", "MANAGE 4.1"],
            json!({"workflows_with_own_rules": declared, "workflows": workflows.len(), "trips_in_window": trips,
                   "default_rules": serde_json::to_value(remit_core::containment::default_rules()).unwrap_or_default()}),
            vec![],
            declared.len() < workflows.len(),
        )?;

        // Sharing.
        let shared = count("security.token_sharing").await?;
        let gaps = if shared == 0 {
            vec![]
        } else {
            vec![format!("{shared} credential-sharing events in {window_days} days")]
        };
        control(
            "credential_binding",
            "Credentials stay with their holder (sharing is detected)",
            &["NHI4:2025", "NHI10:2025"],
            &["ASI03"],
            vec![maestro(7, "Agent Impersonation")?],
            &["MEASURE 2.4"],
            json!({"sharing_events_in_window": shared,
                   "enforced_by": "first presenter per token; DPoP binding where used"}),
            gaps,
            false,
        )?;

        // Continuous evaluation.
        let streams = self.store.governance().streams(None).await?;
        let gaps = if streams.is_empty() {
            vec!["no Shared Signals receiver: relying parties learn of revocations only by introspecting".into()]
        } else {
            vec![]
        };
        control(
            "revocation_signals",
            "Relying parties hear of revocations at once (Shared Signals)",
            &["NHI4:2025"],
            &["ASI07"],
            vec![],
            &["MANAGE 4.1"],
            json!({"streams": streams.len()}),
            gaps,
            false,
        )?;

        // Attribution.
        let (head, _) = self.store.audit().head().await?;
        let cp = self.store.audit().latest_checkpoint().await?;
        control(
            "attribution",
            "Every step is attributed to a task and kept in a tamper-evident log",
            &[],
            &["ASI10"],
            vec![maestro(5, "Evasion of Detection")?],
            &["GOVERN 1.5", "MEASURE 3.1"],
            json!({"audit_records": head, "latest_checkpoint_seq": cp.map(|c| c.seq)}),
            vec![],
            false,
        )?;

        let findings = controls.iter().flat_map(|c| c.gaps.iter().cloned()).collect();
        Ok(Report { generated_at: now.to_rfc3339(), issuer: self.issuer.clone(), window_days, controls, findings })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report for people: Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = format!(
        "# Remit governance report\n\nGenerated {} for `{}` (window: {} days).\n\n## Findings\n\n",
        r.generated_at, r.issuer, r.window_days
    );
    if r.findings.is_empty() {
        out.push_str("None.\n");
    }
    for f in &r.findings {
        out.push_str(&format!("- {f}\n"));
    }
    out.push_str("\n## Controls\n\n| Control | Status | OWASP NHI 2025 | OWASP Agentic 2026 | CSA MAESTRO | NIST AI RMF 1.0 |\n|---|---|---|---|---|---|\n");
    for c in &r.controls {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.title,
            c.status,
            c.owasp_nhi.join(", "),
            c.owasp_asi.join(", "),
            c.maestro.join("; "),
            c.nist_ai_rmf.join(", ")
        ));
    }
    for c in &r.controls {
        out.push_str(&format!("\n### {} — {}\n\nEvidence: `{}`\n", c.title, c.status, c.evidence));
        for g in &c.gaps {
            out.push_str(&format!("- gap: {g}\n"));
        }
    }
    out
}

/// The report for people: a self-contained HTML page (every value escaped).
pub fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Remit governance report</title></head><body>\
         <h1>Remit governance report</h1><p>Generated {} for <code>{}</code> (window: {} days).</p><h2>Findings</h2><ul>",
        esc(&r.generated_at),
        esc(&r.issuer),
        r.window_days
    );
    for f in &r.findings {
        out.push_str(&format!("<li>{}</li>", esc(f)));
    }
    out.push_str("</ul><h2>Controls</h2><table><tr><th>Control</th><th>Status</th><th>OWASP NHI 2025</th><th>OWASP Agentic 2026</th><th>CSA MAESTRO</th><th>NIST AI RMF 1.0</th><th>Gaps</th></tr>");
    for c in &r.controls {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(c.title),
            esc(c.status),
            esc(&c.owasp_nhi.join(", ")),
            esc(&c.owasp_asi.join(", ")),
            esc(&c.maestro.join("; ")),
            esc(&c.nist_ai_rmf.join(", ")),
            esc(&c.gaps.join("; "))
        ));
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_hold_what_the_frameworks_number() {
        let nhi: Value = serde_json::from_str(OWASP_NHI).unwrap();
        let ids: Vec<&str> = nhi["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, (1..=10).map(|n| format!("NHI{n}:2025")).collect::<Vec<_>>());
        let asi: Value = serde_json::from_str(OWASP_ASI).unwrap();
        let ids: Vec<&str> = asi["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, (1..=10).map(|n| format!("ASI{n:02}")).collect::<Vec<_>>());
        let m: Value = serde_json::from_str(MAESTRO).unwrap();
        assert_eq!(m["items"].as_array().unwrap().len(), 7);
        let nist: Value = serde_json::from_str(NIST_AI_RMF).unwrap();
        assert_eq!(nist["items"].as_array().unwrap().len(), 72);
        assert!(cited(NIST_AI_RMF, &["MANAGE 2.4"]).is_ok());
        assert!(cited(NIST_AI_RMF, &["MANAGE 9.9"]).is_err());
        assert!(maestro(7, "Agent Impersonation").is_ok());
        assert!(maestro(7, "Made Up").is_err());
    }
}
