//! Decisions whose principal is a live task, from its JWT-SVID, with Remit's request-time
//! context: a policy can allow a tool for one workflow, require an intent tag for prod,
//! and every kill switch turns the answer into a deny at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("deploy.git")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"git")
when { principal in Workflow::"deploy" && context.data_sensitivity_rank <= context.workflow_ceiling_rank };

@id("deploy.prod")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"prod")
when { principal in Workflow::"deploy" };

@id("prod.needs-change-ticket")
forbid (principal is Task, action == Action::"call_tool", resource == Tool::"prod")
unless { context.intent like "*change-ticket*" };
"#;

async fn decide(s: &TestServer, token: &str, tool: &str) -> Value {
    let body = json!({"token": token, "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool},
                      "context": {"target": "cluster-eu-1", "data_sensitivity": "public"}});
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_token_decisions_use_the_request_time_context() {
    let s = TestServer::start().await;
    s.setup().await;
    let bundle = json!({"policies": [{"name": "tasks.cedar", "source": POLICIES}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let inst = s.join().await;
    let (task, token) = s.start_task(&inst).await;

    let v = decide(&s, &token, "git").await;
    assert_eq!((v["decision"].as_bool(), v["task"].as_str()), (Some(true), Some(task.as_str())), "{v}");
    assert_eq!(v["reasons"], json!(["deploy.git"]));
    // The intent ("deploy v1.2 to prod") carries no change-ticket tag: prod is refused.
    let v = decide(&s, &token, "prod").await;
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["reasons"], json!(["prod.needs-change-ticket"]));
    // A task tagged with a ticket may call prod.
    let (st, t2) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(&inst),
            Some(json!({"workflow": "deploy", "intent": "hotfix change-ticket CHG-1", "audience": ["tools"]})),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(decide(&s, t2["token"].as_str().unwrap(), "prod").await["decision"], true);
    // A forged token or an unrelated string is a deny, not an error.
    assert_eq!(decide(&s, "not-a-token", "git").await["decision"], false);
    assert_eq!(decide(&s, &inst, "git").await["decision"], false, "an instance token is not a task token");
    // Kill switches apply at once.
    let (st, _) = s.admin_post(&format!("/v1/tasks/{task}/revoke"), json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    let v = decide(&s, &token, "git").await;
    assert_eq!(v["decision"], false);
    assert!(v["errors"][0].as_str().unwrap().contains("revoked"), "{v}");
    // Decisions are audited against the task, and no token is in the log.
    let (_, recs) = s.admin_get(&format!("/v1/audit?action=access.evaluate&task={task}&limit=100")).await;
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 3, "git, prod, git after the revocation: {recs:?}");
    let (_, all) = s.admin_get("/v1/audit?limit=10000").await;
    assert!(!all.to_string().contains(&token), "a token leaked into the audit log");
    s.stop().await;
}
