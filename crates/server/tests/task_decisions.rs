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

const GATED: &str = r#"
// Any tool but prod: a plain permit for prod would allow it without approval (any permit).
@id("deploy.tools")
permit (principal is Task, action == Action::"call_tool", resource is Tool)
when { principal in Workflow::"deploy" && resource != Tool::"prod" && principal.parent has allowed_tools };

@id("read-before-write")
forbid (principal is Task, action == Action::"call_tool", resource == Tool::"db-write")
unless { context.tools_used.contains("db-read") };

@id("prod.approval")
@approval("deploying to prod needs the workflow owner's approval")
permit (principal is Task, action == Action::"call_tool", resource == Tool::"prod")
when { principal in Workflow::"deploy" };
"#;

async fn call(s: &TestServer, token: &str, tool: &str, ctx: Value, approval: Option<&str>) -> Value {
    let mut body = json!({"token": token, "action": {"name": "call_tool"}, "resource": {"type": "Tool", "id": tool},
                          "context": ctx});
    if let Some(a) = approval {
        body["approval"] = json!(a);
    }
    let (st, v) = s.call("POST", "/v1/decisions", Some(&s.admin.clone()), Some(body)).await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn decide_as(s: &TestServer, id: &str, verb: &str, operator: &str) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/v1/approvals/{id}/{verb}", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", operator)
        .json(&json!({"reason": "checked the change ticket"}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_used_and_approvals_bound_to_the_task() {
    let s = TestServer::start_with(|c| {
        c.approvals.workflow_approvers.insert("deploy".into(), vec!["carol@example.com".into()]);
    })
    .await;
    s.setup().await;
    // `principal.parent` is not an attribute: strict validation rejects it with Cedar's words.
    let bad = json!({"policies": [{"name": "p.cedar", "source": GATED}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bad)).await;
    assert_eq!(st, 400, "{v}");
    let fixed = GATED.replace("principal.parent has allowed_tools", "true");
    let bundle = json!({"policies": [{"name": "p.cedar", "source": fixed}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let inst = s.join().await;
    let (task, token) = s.start_task(&inst).await;
    let (_, other) = s.start_task(&inst).await;

    // Writing before reading is refused; after an allowed read, the write is allowed.
    let v = call(&s, &token, "db-write", json!({}), None).await;
    assert_eq!((v["decision"].as_bool(), &v["reasons"]), (Some(false), &json!(["read-before-write"])), "{v}");
    let v = call(&s, &token, "db-read", json!({}), None).await;
    assert_eq!((v["decision"].as_bool(), v["tool"].as_str()), (Some(true), Some("db-read")), "{v}");
    assert_eq!(call(&s, &token, "db-write", json!({}), None).await["decision"], true);
    // Tools are per task: the other task has read nothing.
    assert_eq!(call(&s, &other, "db-write", json!({}), None).await["decision"], false);
    let used = s.app.store.identity().tools_used(&remit_core::ids::TaskId::parse(&task).unwrap()).await.unwrap();
    assert_eq!(used, vec!["db-read".to_string(), "db-write".to_string()]);

    // Prod needs approval: the request is bound to this task and call.
    let ctx = json!({"change": "CHG-42", "target": "cluster-eu-1"});
    let v = call(&s, &token, "prod", ctx.clone(), None).await;
    assert_eq!((v["decision"].as_bool(), v["outcome"].as_str()), (Some(false), Some("approval_required")), "{v}");
    let id = v["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["approval"]["reasons"], json!(["deploying to prod needs the workflow owner's approval"]));
    let (_, a) = s.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!((a["task"].as_str(), a["workflow"].as_str()), (Some(task.as_str()), Some("deploy")), "{a}");
    assert!(a["requested_by"].as_str().unwrap().starts_with("spiffe://"), "{a}");
    // Presenting it before anyone decided: not allowed, `pending`, and it stays pending.
    let v = call(&s, &token, "prod", ctx.clone(), Some(&id)).await;
    assert_eq!((v["decision"].as_bool(), v["outcome"].as_str()), (Some(false), Some("pending")), "{v}");
    // Only humans with rights over the workflow decide: not dave, who is neither owner nor approver.
    let (st, v) = decide_as(&s, &id, "approve", "dave@example.com").await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("owner"), "{v}");
    // The owner approves (the configured approver carol could have too).
    let (st, v) = decide_as(&s, &id, "approve", "ALICE@example.com").await;
    assert_eq!(st, 200, "{v}");
    // Another task presenting the same approval for the same call: denied.
    assert_eq!(call(&s, &other, "prod", ctx.clone(), Some(&id)).await["decision"], false);
    // A changed argument: denied.
    assert_eq!(
        call(&s, &token, "prod", json!({"change": "CHG-43", "target": "cluster-eu-1"}), Some(&id)).await["decision"],
        false
    );
    // The exact retry succeeds once; the second is denied.
    let v = call(&s, &token, "prod", ctx.clone(), Some(&id)).await;
    assert_eq!((v["decision"].as_bool(), v["outcome"].as_str()), (Some(true), Some("allow")), "{v}");
    assert_eq!(v["approval"]["id"], json!(id));
    let v = call(&s, &token, "prod", ctx.clone(), Some(&id)).await;
    assert_eq!(v["decision"], false, "{v}");
    assert!(v["errors"].to_string().contains("not usable"), "{v}");
    // The configured workflow approver may deny the next request.
    let v = call(&s, &token, "prod", ctx.clone(), None).await;
    let id2 = v["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(decide_as(&s, &id2, "deny", "carol@example.com").await.0, 200);
    assert_eq!(call(&s, &token, "prod", ctx.clone(), Some(&id2)).await["decision"], false);
    assert!(
        s.app
            .store
            .identity()
            .tools_used(&remit_core::ids::TaskId::parse(&task).unwrap())
            .await
            .unwrap()
            .contains(&"prod".to_string())
    );

    // Every step is in the audit log against the task.
    let (_, recs) = s.admin_get(&format!("/v1/audit?task={task}&limit=1000")).await;
    let actions: Vec<&str> = recs.as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    for a in ["approval.request", "approval.approve", "approval.use", "approval.deny", "access.evaluate"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_request() {
    let s = TestServer::start().await;
    let source = r#"@id("gated") @approval("always") permit (principal, action, resource);"#;
    let bundle = json!({"policies": [{"name": "p.cedar", "source": source}],
                        "schema": "entity User; entity Doc; action read appliesTo { principal: [User], resource: [Doc] };"});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");
    let ev = json!({"subject": {"type": "User", "id": "u1"}, "action": {"name": "read"}, "resource": {"type": "Doc", "id": "d1"}});
    let r = s
        .http
        .post(format!("{}/access/v1/evaluation", s.url))
        .bearer_auth(&s.admin)
        .header("x-remit-operator", "mallory@example.com")
        .json(&ev)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let id = v["context"]["approval_id"].as_str().unwrap().to_owned();
    let (st, v) = decide_as(&s, &id, "approve", "mallory@example.com").await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(decide_as(&s, &id, "approve", "bob@example.com").await.0, 200);
    s.stop().await;
}

/// A task holds at most 256 distinct tools: the 257th new tool is refused, not left out of
/// `tools_used` (a policy such as "nothing after `db.export`" must never miss a use), while
/// the tools it already used stay usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_past_the_per_task_cap_is_refused_not_forgotten() {
    let s = TestServer::start().await;
    s.setup().await;
    let any_tool = r#"@id("any-tool") permit (principal is Task, action == Action::"call_tool", resource is Tool);"#;
    let bundle = json!({"policies": [{"name": "any.cedar", "source": any_tool}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (_task, token) = s.start_task(&inst).await;
    let cap = usize::try_from(remit_store::MAX_TOOLS_PER_TASK).unwrap();
    for i in 0..cap {
        assert_eq!(decide(&s, &token, &format!("tool-{i}")).await["decision"], true, "tool {i}");
    }
    let v = decide(&s, &token, "db.export").await;
    assert_eq!(v["decision"], false, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("256 distinct tools"), "{v}");
    assert_eq!(decide(&s, &token, "tool-7").await["decision"], true, "a tool already used stays usable");
    s.stop().await;
}

/// A workflow's allowed tools can be replaced; a live task's very next decision uses the new
/// list (narrowing takes effect at once), and the change is audited with the old list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_workflows_tools_reaches_live_tasks_at_once() {
    let s = TestServer::start().await;
    s.setup().await;
    let any_tool = r#"@id("any-tool") permit (principal is Task, action == Action::"call_tool", resource is Tool);"#;
    let bundle = json!({"policies": [{"name": "any.cedar", "source": any_tool}]});
    let admin = s.admin.clone();
    assert_eq!(s.call("PUT", "/v1/policies", Some(&admin), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (_task, token) = s.start_task(&inst).await;
    assert_eq!(decide(&s, &token, "git").await["decision"], true);

    let body = json!({"tools": ["prod"], "reason": "git moved to its own workflow"});
    let (st, w) = s.call("PUT", "/v1/workflows/deploy/tools", Some(&admin), Some(body)).await;
    assert_eq!((st, w["allowed_tools"].clone()), (200, json!(["prod"])), "{w}");
    let v = decide(&s, &token, "git").await;
    assert_eq!(v["decision"], false, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("not among workflow"), "{v}");
    assert_eq!(decide(&s, &token, "prod").await["decision"], true);

    let (_, recs) = s.admin_get("/v1/audit?action=workflow.update").await;
    let detail: Value = serde_json::from_str(recs[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!((detail["allowed_tools"].clone(), detail["was"].clone()), (json!(["prod"]), json!([])), "{recs}");
    // Bad input changes nothing.
    let (st, _) = s.call("PUT", "/v1/workflows/deploy/tools", Some(&admin), Some(json!({"tools": ["x"]}))).await;
    assert_eq!(st, 400);
    let (st, _) =
        s.call("PUT", "/v1/workflows/nope/tools", Some(&admin), Some(json!({"tools": [], "reason": "r"}))).await;
    assert_eq!(st, 404);
    let (st, _) =
        s.call("PUT", "/v1/workflows/deploy/tools", Some(&inst), Some(json!({"tools": [], "reason": "r"}))).await;
    assert_eq!(st, 403, "an agent cannot widen its own workflow");
    s.stop().await;
}
