//! Separate trust domains for model, tool and data access, over real sockets: tools classed
//! `model` and `data` get credentials signed by their class's own keys, published only at
//! their trust domain's JWKS; PyJWT, as a tool server would use it, accepts each credential
//! with its own path's keys and with no other (nor the installation's); introspection refuses
//! a credential signed in the wrong class's domain; policies see `context.trust_domain`; a
//! class key rotates on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use remit_core::tool::ToolClass;
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const MODELS: &str = "models.remit.local";
const DATA: &str = "data.remit.local";

const SCHEMA: &str = "action read, write appliesTo { principal: [Task], resource: [Tool], context: TaskContext };";
const POLICIES: &str = r#"
permit (principal, action, resource);
forbid (principal, action == Action::"write", resource)
  when { context has trust_domain && context.trust_domain == "data.remit.local" };
"#;

async fn exchange(s: &TestServer, subject: &str, audience: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", JWT),
        ("audience", audience),
        ("scope", scope),
    ];
    let resp = s.http.post(format!("{}/oauth2/token", s.url)).form(&form).send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

async fn introspect_as(s: &TestServer, bearer: &str, tok: &str) -> Value {
    let resp = s
        .http
        .post(format!("{}/oauth2/introspect", s.url))
        .bearer_auth(bearer)
        .form(&[("token", tok)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn claims(tok: &str) -> Value {
    let p = tok.split('.').nth(1).unwrap();
    serde_json::from_slice(&remit_token::b64d(p).unwrap()).unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// PyJWT's verdict on `token` with each JWKS URL: "ok" or the refusal.
async fn verdicts(s: &TestServer, token: &str, audience: &str, urls: &[String]) -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oauth/verify_jwks.py");
    let out = tokio::process::Command::new(common::python())
        .arg(&script)
        .args([token, s.app.issuer.as_str(), audience])
        .args(urls)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    urls.iter().map(|u| report[u].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tool_class_has_its_own_trust_domain() {
    let s = TestServer::start_with(|c| {
        c.trust_domains.model = Some(MODELS.into());
        c.trust_domains.data = Some(DATA.into());
    })
    .await;
    s.setup().await;
    let mut secrets = std::collections::HashMap::new();
    for (name, aud, class) in [
        ("llm", "https://llm.example/v1", Some("model")),
        ("warehouse", "https://warehouse.example", Some("data")),
        ("tickets", "https://tickets.example", None),
    ] {
        let (st, t) = s
            .admin_post(
                "/v1/tools",
                json!({"name": name, "audience": aud, "scopes": ["read", "write"], "owner": "carol@example.com",
                       "class": class}),
            )
            .await;
        assert_eq!(st, 201, "{t}");
        secrets.insert(name, t["introspection_secret"].as_str().unwrap().to_owned());
    }
    let (st, v) = s.admin_get("/v1/tools/warehouse").await;
    assert_eq!((st, v["class"].as_str(), v["trust_domain"].as_str()), (200, Some("data"), Some(DATA)), "{v}");
    let (st, v) = s
        .admin_post(
            "/v1/tools",
            json!({"name": "x", "audience": "https://x.example", "scopes": ["read"],
                                                 "owner": "carol@example.com", "class": "weights"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let bundle = json!({"schema": SCHEMA, "policies": [{"name": "p.cedar", "source": POLICIES}]});
    let (st, v) = s.call("PUT", "/v1/policies", Some(&s.admin.clone()), Some(bundle)).await;
    assert_eq!(st, 201, "{v}");

    let inst = s.join().await;
    let (st, t) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(&inst),
            Some(json!({"workflow": "deploy", "intent": "summarise sales", "audience": ["remit"], "ttl_seconds": 300})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let task = t["token"].as_str().unwrap().to_owned();
    let mut tokens = std::collections::HashMap::new();
    for (name, aud) in [
        ("llm", "https://llm.example/v1"),
        ("warehouse", "https://warehouse.example"),
        ("tickets", "https://tickets.example"),
    ] {
        let (st, v) = exchange(&s, &task, aud, "read").await;
        assert_eq!(st, 200, "{name}: {v}");
        tokens.insert(name, v["access_token"].as_str().unwrap().to_owned());
    }
    // Policies see the trust domain: writing is refused on the data path only.
    let (st, v) = exchange(&s, &task, "https://warehouse.example", "write").await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")), "{v}");
    let (st, v) = exchange(&s, &task, "https://llm.example/v1", "write").await;
    assert_eq!(st, 200, "{v}");

    // Each credential names its trust domain.
    assert_eq!(claims(&tokens["llm"])["https://remit.dev/claims"]["trust_domain"], MODELS);
    assert_eq!(claims(&tokens["warehouse"])["https://remit.dev/claims"]["trust_domain"], DATA);
    assert_eq!(claims(&tokens["tickets"])["https://remit.dev/claims"]["trust_domain"], "remit.local");

    // Three disjoint key sets; an unknown trust domain is a 404.
    let url = |td: &str| format!("{}/trust-domains/{td}/jwks.json", s.url);
    let main_url = format!("{}/.well-known/jwks.json", s.url);
    let get = |u: String| {
        let http = s.http.clone();
        async move {
            let r = http.get(u).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (_, models_jwks) = get(url(MODELS)).await;
    let (_, data_jwks) = get(url(DATA)).await;
    let (_, main_jwks) = get(main_url.clone()).await;
    let (_, main_again) = get(url("remit.local")).await;
    assert_eq!(main_jwks, main_again);
    let (m, d, mk) = (kids(&models_jwks), kids(&data_jwks), kids(&main_jwks));
    assert!(m.len() == 1 && d.len() == 1 && m != d && !mk.contains(&m[0]) && !mk.contains(&d[0]), "{m:?} {d:?} {mk:?}");
    let (st, v) = get(url("elsewhere.example")).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")), "{v}");
    let (st, b) = get(format!("{}/trust-domains/{DATA}/spiffe-bundle", s.url)).await;
    assert_eq!((st, kids(&b)), (200, d.clone()), "{b}");
    assert!(b["keys"][0]["use"] == "jwt-svid" && b["spiffe_refresh_hint"].is_u64(), "{b}");

    // A relying party holding one path's keys accepts that path's credentials only.
    let urls = [url(MODELS), url(DATA), main_url.clone()];
    for (name, aud, ok_at) in [
        ("llm", "https://llm.example/v1", 0),
        ("warehouse", "https://warehouse.example", 1),
        ("tickets", "https://tickets.example", 2),
    ] {
        let v = verdicts(&s, &tokens[name], aud, &urls).await;
        for (i, verdict) in v.iter().enumerate() {
            assert_eq!(verdict == "ok", i == ok_at, "{name} at {}: {verdict}", urls[i]);
        }
    }
    // Nor a task token on any class's path.
    let v = verdicts(&s, &task, "remit", &urls).await;
    assert_eq!(v.iter().map(|x| x == "ok").collect::<Vec<_>>(), [false, false, true], "{v:?}");

    // Introspection: each tool sees its own credential active, with its trust domain.
    let i = introspect_as(&s, &secrets["warehouse"], &tokens["warehouse"]).await;
    assert_eq!(
        (i["active"].as_bool(), i["https://remit.dev/claims"]["trust_domain"].as_str()),
        (Some(true), Some(DATA)),
        "{i}"
    );
    assert_eq!(introspect_as(&s, &secrets["llm"], &tokens["llm"]).await["active"], true);
    // A warehouse credential signed with the model path's key is refused though its claims
    // are genuine (as is a task token signed by a class key).
    let ring = s.app.credential_keyring(ToolClass::Model).unwrap();
    let forged_claims: remit_token::Claims = serde_json::from_value(claims(&tokens["warehouse"])).unwrap();
    let forged = remit_token::jwt::mint(ring.signer(), &forged_claims);
    assert_eq!(introspect_as(&s, &secrets["warehouse"], &forged).await["active"], false);
    assert_eq!(s.introspect(&forged).await["active"], false);
    let task_claims: remit_token::Claims = serde_json::from_value(claims(&task)).unwrap();
    assert_eq!(s.introspect(&remit_token::jwt::mint(ring.signer(), &task_claims)).await["active"], false);
    // A class-signed token is no credential on Remit's own API: the genuine task token
    // works, the same claims signed by a class key do not.
    let task_path = format!("/v1/tasks/{}", task_claims.remit.task.clone().unwrap());
    let (st, v) = s.call("GET", &task_path, Some(&task), None).await;
    assert_ne!(st, 401, "{v}");
    let class_signed_task = remit_token::jwt::mint(ring.signer(), &task_claims);
    let (st, v) = s.call("GET", &task_path, Some(&class_signed_task), None).await;
    assert_eq!(st, 401, "{v}");

    // The data path's key rotates alone: the old one stays published (its credentials live
    // on), the other paths' keys do not change.
    let (st, r) = s.admin_post("/v1/keys/rotate?purpose=jwt-data", json!({})).await;
    assert_eq!(st, 200, "{r}");
    let (_, data_after) = get(url(DATA)).await;
    let d2 = kids(&data_after);
    assert!(d2.contains(&d[0]) && d2.contains(&r["kid"].as_str().unwrap().to_owned()) && d2.len() == 2, "{d2:?}");
    assert_eq!(kids(&get(url(MODELS)).await.1), m);
    assert_eq!(kids(&get(main_url.clone()).await.1), mk);
    assert_eq!(introspect_as(&s, &secrets["warehouse"], &tokens["warehouse"]).await["active"], true);
    let (_, fresh) = exchange(&s, &task, "https://warehouse.example", "read").await;
    let fresh = fresh["access_token"].as_str().unwrap();
    let v = verdicts(&s, fresh, "https://warehouse.example", &urls).await;
    assert_eq!(v.iter().map(|x| x == "ok").collect::<Vec<_>>(), [false, true, false], "{v:?}");
    let (st, v) = s.admin_post("/v1/keys/rotate?purpose=jwt-tool", json!({})).await;
    assert_eq!(st, 400, "the tool class has no trust domain of its own: {v}");
}
