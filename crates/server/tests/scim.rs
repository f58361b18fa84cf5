//! The SCIM 2.0 service provider (`/scim/v2`) on the real server: an identity provider
//! provisions, updates and deactivates humans; deactivating (by `active: false` or DELETE)
//! revokes a signed-in human's sessions and orphans what they own, in one transaction,
//! audited; DELETE keeps the record; and the pinned `scim2-tester` (PyPI) checks the whole
//! service provider against RFC 7643/7644, with its result written to the log of this test
//! (and recorded in the README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use common::signin::{access_token, provider, remit};
use serde_json::{Value, json};

const TOKEN: &str = "remit_scim_test-credential-0123456789abcdef";

async fn scim(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/scim/v2{path}", s.url);
    let mut r = s.http.request(method.parse().unwrap(), url).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.header("content-type", "application/scim+json").body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 204 {
        assert_eq!(resp.headers()["content-type"], "application/scim+json", "{method} {path}");
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn user(name: &str, email: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "externalId": format!("okta-{name}"),
           "name": {"givenName": "Alice", "familyName": "Admin"},
           "emails": [{"value": email, "type": "work", "primary": true}], "active": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_provisions_and_offboards_humans() {
    let op = provider().await;
    let (s, _dir) = remit(&op, |_| {}).await;
    s.app.set_scim_credential(TOKEN);
    s.setup().await; // `deploy`, owned by alice@example.com (an unverified human so far)
    let alice_session = access_token(&s, &op, "alice").await;

    // Only the SCIM credential: not anonymous, not the admin credential, not a session.
    for bearer in [None, Some(s.admin.clone()), Some(alice_session.clone())] {
        let mut r = s.http.get(format!("{}/scim/v2/Users", s.url));
        if let Some(b) = &bearer {
            r = r.bearer_auth(b);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }

    // Provisioning alice links her existing human (the owner who signed in).
    let (st, u) = scim(&s, "POST", "/Users", Some(user("alice", "alice@example.com"))).await;
    assert_eq!(st, 201, "{u}");
    let id = u["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("h-"));
    assert_eq!(u["meta"]["version"], "W/\"1\"");
    assert_eq!(u["externalId"], "okta-alice");
    let (_, me) = s.call("GET", "/v1/auth/session", Some(&alice_session), None).await;
    assert_eq!(me["human"]["id"], id.as_str(), "one human, whoever made her first");
    let (st, _) = scim(&s, "POST", "/Users", Some(user("ALICE", "other@example.com"))).await;
    assert_eq!(st, 409, "userName is unique, ignoring case");

    // The filter identity providers use to find a user.
    let (st, l) = scim(&s, "GET", "/Users?filter=userName%20eq%20%22Alice%22", None).await;
    assert_eq!((st, l["totalResults"].clone()), (200, json!(1)));
    let (st, e) = scim(&s, "GET", "/Users?filter=emails%20co%20%22x%22", None).await;
    assert_eq!((st, e["scimType"].clone()), (400, json!("invalidFilter")));

    // A PATCH renames her; a stale If-Match is refused.
    let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "displayName", "value": "Alice A."}]});
    let (st, u) = scim(&s, "PATCH", &format!("/Users/{id}"), Some(rename.clone())).await;
    assert_eq!((st, u["displayName"].clone()), (200, json!("Alice A.")));
    let stale = s
        .http
        .patch(format!("{}/scim/v2/Users/{id}", s.url))
        .bearer_auth(TOKEN)
        .header("if-match", "W/\"1\"")
        .body(rename.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);

    // `active: false` (how Okta and Entra offboard): her session is revoked and her workflow
    // orphaned, in one transaction, audited as the identity provider's.
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                     "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (st, u) = scim(&s, "PATCH", &format!("/Users/{id}"), Some(off)).await;
    assert_eq!((st, u["active"].clone()), (200, json!(false)));
    assert_eq!(s.call("GET", "/v1/auth/session", Some(&alice_session), None).await.0, 401);
    let (_, wf) = s.admin_get("/v1/workflows/deploy").await;
    assert!(wf["orphaned_at"].is_string(), "{wf}");
    let (_, recs) = s.admin_get("/v1/audit?action=human.deactivate").await;
    assert_eq!(recs[0]["actor"], "scim");
    let detail: Value = serde_json::from_str(recs[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["workflows_orphaned"], json!(["deploy"]));
    assert_eq!(detail["sessions_revoked"].as_array().unwrap().len(), 1);
    // Back again (the IdP re-enabled her): active, but her old session stays revoked.
    let on = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": true}]});
    assert_eq!(scim(&s, "PATCH", &format!("/Users/{id}"), Some(on)).await.0, 200);
    assert_eq!(s.call("GET", "/v1/auth/session", Some(&alice_session), None).await.0, 401);

    // Groups carry members into the humans' groups.
    let (st, g) = scim(
        &s,
        "POST",
        "/Groups",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "sre", "members": [{"value": id}]})),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let (_, h) = s.admin_get(&format!("/v1/humans/{id}")).await;
    assert_eq!(h["human"]["groups"], json!(["engineering", "remit-admins", "sre"]), "the provider's and SCIM's");
    let (st, e) = scim(
        &s,
        "POST",
        "/Groups",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "x", "members": [{"value": "h-00000000000000000000000000000000"}]})),
    )
    .await;
    assert_eq!((st, e["scimType"].clone()), (400, json!("invalidValue")));

    // DELETE deactivates and keeps the record for the audit trail; SCIM no longer shows it.
    assert_eq!(scim(&s, "DELETE", &format!("/Users/{id}"), None).await.0, 204);
    assert_eq!(scim(&s, "GET", &format!("/Users/{id}"), None).await.0, 404);
    let (_, h) = s.admin_get(&format!("/v1/humans/{id}")).await;
    assert_eq!(h["human"]["state"], "deactivated");
    assert_eq!(h["human"]["email"], "alice@example.com");

    // What she owned waits for someone to take it over.
    let (_, o) = s.admin_get("/v1/orphans").await;
    assert_eq!(o["workflows"][0]["name"], "deploy", "{o}");
    let (st, wf) = s
        .call(
            "PUT",
            "/v1/workflows/deploy/owner",
            Some(&s.admin.clone()),
            Some(json!({"owner": "bob@example.com", "reason": "alice left"})),
        )
        .await;
    assert_eq!((st, wf["owner"].clone()), (200, json!("bob@example.com")), "{wf}");
    assert!(wf["orphaned_at"].is_null());
    let (_, o) = s.admin_get("/v1/orphans").await;
    assert_eq!(o["workflows"], json!([]));

    // Discovery.
    for p in ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas", "/ResourceTypes/User"] {
        assert_eq!(scim(&s, "GET", p, None).await.0, 200, "{p}");
    }
    s.stop().await;
    op.stop().await;
}

/// scim2-tester's verdict on the whole service provider: discovery, create, read, replace,
/// PATCH add/remove/replace of every attribute, attribute selection, search and delete, for
/// Users and Groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_finds_nothing_wrong() {
    let s = TestServer::start().await;
    s.app.set_scim_credential(TOKEN);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scim/check.py");
    let py = common::python();
    let url = format!("{}/scim/v2", s.url);
    let out = tokio::process::Command::new(&py).arg(&script).arg(&url).arg(TOKEN).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("scim2-tester: {}", report["counts"]);
    for c in report["checks"].as_array().unwrap().iter().filter(|c| c["status"] == "SKIPPED") {
        println!("  skipped {}: {}", c["title"], c["reason"]);
    }
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "SUCCESS" && c["status"] != "SKIPPED")
        .collect();
    assert!(
        failed.is_empty(),
        "scim2-tester found {} problems:\n{}",
        failed.len(),
        serde_json::to_string_pretty(&failed).unwrap()
    );
    assert!(report["counts"]["SUCCESS"].as_u64().unwrap() > 20, "{}", report["counts"]);
    s.stop().await;
}
