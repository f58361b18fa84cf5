//! The governance report and least privilege, through the CLI against the real server: a seeded
//! installation (an agent reused across workflows, an orphan, a workflow with tools it never
//! used, one with no tool list, no approval gate, no Shared Signals receiver) reports exactly
//! those findings, each control citing the frameworks' own identifiers; the suggested narrower
//! tool list is what the tasks' decisions used, and accepting it narrows the workflow in one
//! audited step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{Value, json};

#[test]
fn a_seeded_installation_reports_its_findings_and_the_suggestion_matches_observed_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = common::serve(&data, &[], &[]);
    let run = |args: &[&str]| common::remit_json(&s.url, &data, args, None);
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Alice can sign in (she owns workflows and agents below).
    let alice = rt.block_on(async {
        let body = json!({"email": "alice@example.com", "roles": [], "password": "correct horse battery staple"});
        let r = http.post(format!("{}/v1/humans", s.url)).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let creds = json!({"email": "alice@example.com", "password": "correct horse battery staple"});
        let t: Value =
            http.post(format!("{}/v1/auth/local", s.url)).json(&creds).send().await.unwrap().json().await.unwrap();
        t["access_token"].as_str().unwrap().to_owned()
    });
    for t in ["tickets", "wiki", "deploy"] {
        #[rustfmt::skip]
        run(&["tool", "create", t, "--audience", &format!("https://{t}.example"), "--scope", "read", "--owner", "o@example.com"]);
    }
    #[rustfmt::skip]
    run(&["workflow", "create", "triage", "--purpose", "p", "--owner", "alice@example.com",
          "--tool", "tickets", "--tool", "wiki", "--tool", "deploy"]);
    run(&["workflow", "create", "open", "--purpose", "p", "--owner", "alice@example.com"]);
    run(&["workflow", "create", "legacy", "--purpose", "p", "--owner", "bob@example.com", "--tool", "wiki"]);
    run(&["agent", "create", "bot", "--workflow", "triage", "--workflow", "open", "--owner", "alice@example.com"]);
    run(&["agent", "create", "old-bot", "--workflow", "legacy", "--owner", "bob@example.com"]);
    run(&["agent", "create", "mixed", "--workflow", "triage", "--workflow", "legacy", "--owner", "alice@example.com"]);
    let jt = run(&["agent", "join-token", "bot"]);
    rt.block_on(async {
        let schema = "action read appliesTo { principal: [Task], resource: [Tool], context: TaskContext };";
        let policies = json!({"schema": schema, "policies": [{"name": "p.cedar", "source": "permit (principal, action, resource);"}]});
        let r = http.put(format!("{}/v1/policies", s.url)).bearer_auth(&admin).json(&policies).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r = http.post(format!("{}/v1/join", s.url)).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
        let inst = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        // The triage tasks read tickets and the wiki; deploy is never used.
        let b = json!({"workflow": "triage", "intent": "triage", "audience": ["remit"], "ttl_seconds": 300});
        let t: Value = http.post(format!("{}/v1/tasks", s.url)).bearer_auth(&inst).json(&b).send().await.unwrap().json().await.unwrap();
        let tok = t["token"].as_str().unwrap();
        for tool in ["tickets", "wiki", "tickets"] {
            let body = json!({"action": {"name": "read"}, "resource": {"type": "Tool", "id": tool}});
            let r = http.post(format!("{}/v1/decisions", s.url)).bearer_auth(tok).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    // Bob leaves: his workflow and agent are orphans.
    let bob = run(&["human", "list"]);
    let bob = bob.as_array().unwrap().iter().find(|h| h["email"] == "bob@example.com").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&["human", "deactivate", &bob, "--reason", "left"]);

    // Least privilege: what the decisions used, and accepting it.
    let u = run(&["governance", "usage", "triage"]);
    assert_eq!(u["granted"], json!(["tickets", "wiki", "deploy"]));
    assert_eq!(u["used"], json!(["tickets", "wiki"]));
    assert_eq!(u["unused"], json!(["deploy"]));
    assert_eq!(u["suggested"], json!(["tickets", "wiki"]));
    let report = run(&["governance", "report", "--format", "json"]);
    let findings: Vec<String> =
        report["findings"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    let has = |needle: &str| findings.iter().any(|f| f.contains(needle));
    assert!(has("2 agents reused across workflows: bot (open, triage), mixed (legacy, triage)"), "{findings:#?}");
    assert!(has("orphaned agents still enabled: old-bot"), "{findings:#?}");
    assert!(has("orphaned workflows still active: legacy"), "{findings:#?}");
    assert!(has("workflows with no tool list (any tool): open"), "{findings:#?}");
    assert!(has("triage: deploy"), "unused grant: {findings:#?}");
    assert!(has("no approval gate"), "{findings:#?}");
    assert!(has("no Shared Signals receiver"), "{findings:#?}");
    // Controls cite the frameworks' identifiers.
    let control = |id: &str| report["controls"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone();
    assert_eq!(control("offboarding")["owasp_nhi"], json!(["NHI1:2025"]));
    assert_eq!(control("offboarding")["status"], "gap");
    assert_eq!(control("identity_per_purpose")["owasp_nhi"], json!(["NHI9:2025"]));
    assert_eq!(control("least_privilege")["owasp_asi"], json!(["ASI02", "ASI03"]));
    assert_eq!(control("containment")["nist_ai_rmf"], json!(["MANAGE 2.4", "MANAGE 4.1"]));
    assert_eq!(control("containment")["maestro"], json!(["L7 Agent Ecosystem: Compromised Agents"]));
    assert_eq!(control("attribution")["status"], "met");
    // For people: Markdown and HTML.
    let md = std::process::Command::new(common::BIN)
        .args(["governance", "report", "--format", "markdown"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.starts_with("# Remit governance report"), "{md}");
    assert!(md.contains("| NHI1:2025 |"), "{md}");
    let html = rt.block_on(async {
        let r =
            http.get(format!("{}/v1/governance/report?format=html", s.url)).bearer_auth(&admin).send().await.unwrap();
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        r.text().await.unwrap()
    });
    assert!(html.contains("<td>NHI9:2025</td>") && !html.contains("<script"), "{html}");

    // Alice accepts bot's reuse (equivalent workflows: same owner and ceiling, hers); mixed's
    // cannot be accepted (its workflows have different owners); the report then flags mixed only.
    rt.block_on(async {
        let body = json!({"reason": "one team, one purpose", "days": 90});
        let r =
            http.post(format!("{}/v1/agents/bot/reuse", s.url)).bearer_auth(&alice).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let r =
            http.post(format!("{}/v1/agents/mixed/reuse", s.url)).bearer_auth(&alice).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("different owners"));
        let r =
            http.post(format!("{}/v1/agents/bot/reuse", s.url)).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403, "a signed-in human's action");
    });
    let report = run(&["governance", "report", "--format", "json"]);
    let findings: Vec<String> =
        report["findings"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect();
    assert!(
        findings.iter().any(|f| f.contains("1 agents reused across workflows: mixed (legacy, triage)")),
        "{findings:#?}"
    );
    let reuse = run(&["governance", "reuse"]);
    let bot = reuse.as_array().unwrap().iter().find(|r| r["agent"] == "bot").unwrap();
    assert_eq!((bot["flagged"].as_bool(), bot["accepted_by"].as_str()), (Some(false), Some("alice@example.com")));

    // Accepting the suggestion narrows the workflow; the audit log says why.
    let a = run(&["governance", "accept", "triage", "--reason", "quarterly review"]);
    assert_eq!(a["allowed_tools"], json!(["tickets", "wiki"]));
    let w = run(&["workflow", "show", "triage"]);
    assert_eq!(w["allowed_tools"], json!(["tickets", "wiki"]));
    let audit = run(&["audit", "list", "--workflow", "triage", "--action", "workflow.update"]);
    let rec = audit.as_array().unwrap().last().unwrap();
    assert!(rec["reason"].as_str().unwrap().contains("least privilege"), "{rec}");
    // Nothing more to narrow.
    let again = std::process::Command::new(common::BIN)
        .args(["governance", "accept", "triage", "--reason", "again"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
