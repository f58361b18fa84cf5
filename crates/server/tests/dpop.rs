//! RFC 9449 DPoP end to end over real sockets, with proofs signed by PyJWT (`tests/oauth/dpop.py`):
//! a task token and an exchanged credential are bound to the caller's key; Remit's API refuses
//! the bound token without a proof, with the Bearer scheme, with a replayed proof, another key's
//! proof, a proof for another token, URL or time; the token endpoint refuses a bound subject
//! token without its key's proof; introspection reports `cnf.jkt`; a presentation with another
//! key is a security event in the audit log; a workflow can require DPoP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_need_their_key_and_a_fresh_proof() {
    let s = TestServer::start().await;
    s.setup().await;
    let tool = json!({"name": "tickets", "audience": "https://tickets.example", "scopes": ["read"], "owner": "carol@example.com"});
    let (_, t) = s.admin_post("/v1/tools", tool).await;
    let secret = t["introspection_secret"].as_str().unwrap().to_owned();
    let bundle = json!({"schema": "action read appliesTo { principal: [Task], resource: [Tool], context: TaskContext };",
                        "policies": [{"name": "p.cedar", "source": "permit (principal, action, resource);"}]});
    assert_eq!(s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await.0, 201);
    let inst = s.join().await;
    let (_, meta) = s.call("GET", "/.well-known/oauth-authorization-server", None, None).await;
    assert!(meta["dpop_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES256")));

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth/dpop.py");
    let out = tokio::process::Command::new(common::python())
        .arg(&script)
        .args([&s.url, &inst, &secret])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jkt = r["jkt"].clone();
    assert_eq!(r["start"], 201, "{r}");
    assert_eq!(r["task_cnf"]["jkt"], jkt, "the task token is bound to the key: {r}");
    assert_eq!(r["with_proof"], 200, "{r}");
    assert_eq!(r["no_proof"][0], 401);
    assert!(r["no_proof"][1].as_str().unwrap().starts_with("DPoP"), "{r}");
    assert_eq!(r["bearer_scheme"], 401, "a bound token is not a bearer token");
    assert_eq!((r["first_use"].as_i64(), r["replayed"].as_i64()), (Some(200), Some(401)), "a proof works once: {r}");
    for k in ["other_key", "wrong_ath", "wrong_url", "stale"] {
        assert_eq!(r[k], 401, "{k}: {r}");
    }
    assert_eq!(r["body_token"], 403, "a bound token in a body: {r}");
    assert_eq!(r["unbound_child"], json!([403, true]), "{r}");
    assert_eq!(r["exchange_no_proof"], json!([400, "invalid_dpop_proof"]));
    assert_eq!(r["exchange_other_key"], json!([400, "invalid_dpop_proof"]));
    assert_eq!(r["exchange"], json!([200, "DPoP"]), "{r}");
    assert_eq!(r["cred_cnf"]["jkt"], jkt);
    assert_eq!(r["introspection"]["active"], true);
    assert_eq!(r["introspection"]["cnf"]["jkt"], jkt);
    assert_eq!(r["introspection"]["token_type"], "DPoP");

    // Presentations are recorded; the other key's attempts are security events.
    let (_, misuse) = s.admin_get("/v1/audit?action=security.token_misuse").await;
    let misuse = misuse.as_array().unwrap();
    assert!(misuse.len() >= 2, "the API and the token endpoint: {misuse:?}");
    assert!(misuse.iter().all(|m| m["outcome"] == "denied"));
    let (_, seen) = s.admin_get("/v1/audit?action=token.present").await;
    assert!(!seen.as_array().unwrap().is_empty());

    // A workflow can require DPoP for all its tasks.
    let trust = json!({"trust": {"require_dpop": true}, "reason": "sender-constrained only"});
    assert_eq!(s.call("PUT", "/v1/workflows/deploy/trust", Some(&s.admin.clone()), Some(trust)).await.0, 200);
    let body = json!({"workflow": "deploy", "intent": "x", "audience": ["remit"]});
    let (st, v) = s.call("POST", "/v1/tasks", Some(&inst), Some(body)).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("requires DPoP"), "{v}");
}
