//! Humans sign in to the real server through the real OpenID provider (npm `oidc-provider`,
//! `tests/oidc`) over loopback HTTP: the browser's code flow (PKCE, `state`, `nonce`) ends in
//! a Remit session (an HttpOnly cookie), and `remit login`'s loopback hand-off ends in Remit's
//! own tokens for the holder of the CLI's PKCE verifier. Sessions refresh once per refresh
//! token (a replay revokes the session), expire, sign out, and die with their human's
//! deactivation, which also orphans what the human owned. Bad sign-ins are refused, each
//! audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use common::oidc::{Interact, query};
use common::signin::{SECRET, browser_sign_in, cli_sign_in, corp, provider, remit};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn humans_sign_in_through_the_real_provider_and_their_sessions_live_and_die() {
    let op = provider().await;
    let (s, _dir) = remit(&op, |_| {}).await;
    let (st, p) = s.call("GET", "/v1/auth/providers", None, None).await;
    assert_eq!((st, p[0]["name"].clone(), p[0]["issuer"].clone()), (200, json!("corp"), json!(op.issuer)));

    // An owner named before she ever signed in is an unverified human.
    s.setup().await;
    let (_, hs) = s.admin_get("/v1/humans").await;
    let placeholder = hs.as_array().unwrap().iter().find(|h| h["email"] == "alice@example.com").unwrap().clone();
    assert_eq!(placeholder["state"], "unverified");

    // The browser's sign-in: a session cookie, and a page naming her.
    let b = op.browser();
    let r = browser_sign_in(&s, &b, "alice").await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session_cookie = cookies.iter().find(|c| c.starts_with("remit_session=remit_s.")).expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"), "{session_cookie}");
    assert!(r.text().await.unwrap().contains("alice@example.com"));
    let me = b.get(&format!("{}/v1/auth/session", s.url)).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["human"]["id"], placeholder["id"], "her sign-in claimed the owner record: {me}");
    assert_eq!(me["human"]["state"], "active");
    assert_eq!(me["human"]["roles"], json!(["admin", "operator"]), "groups mapped to roles: {me}");
    assert_eq!(me["human"]["groups"], json!(["engineering", "remit-admins"]));
    assert_eq!(me["session"]["method"], "oidc:corp");
    // A cookie never carries a state change.
    let r = b.post_form(&format!("{}/v1/auth/logout", s.url), &[]).await;
    assert_eq!(r.status(), 401);

    // `remit login`: the hand-off code goes to the loopback listener; the verifier redeems it.
    let t = cli_sign_in(&s, &op, "bob").await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("remit_s.") && refresh.starts_with("remit_r."), "{t}");
    let (st, me) = s.call("GET", "/v1/auth/session", Some(&access), None).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(
        (me["human"]["email"].clone(), me["human"]["roles"].clone()),
        (json!("bob@example.com"), json!(["operator"]))
    );
    // His role (operator, from his group) reads but does not create (tests/human_roles.rs).
    assert_eq!(s.call("GET", "/v1/workflows", Some(&access), None).await.0, 200);
    let wf = json!({"name": "w2", "purpose": "p", "owner": "bob@example.com"});
    assert_eq!(s.call("POST", "/v1/workflows", Some(&access), Some(wf)).await.0, 403);

    // Refresh: both tokens rotate; the old access token stops; a refresh token works once,
    // and its replay revokes the session.
    let (st, t2) = s
        .call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "refresh_token", "refresh_token": refresh})))
        .await;
    assert_eq!(st, 200, "{t2}");
    let access2 = t2["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.call("GET", "/v1/auth/session", Some(&access), None).await.0, 401);
    assert_eq!(s.call("GET", "/v1/auth/session", Some(&access2), None).await.0, 200);
    let (st, e) = s
        .call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "refresh_token", "refresh_token": refresh})))
        .await;
    assert_eq!(st, 401, "{e}");
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    assert_eq!(s.call("GET", "/v1/auth/session", Some(&access2), None).await.0, 401, "the replay revoked the session");

    // Access tokens expire; a refresh renews them; the session ends at its max age.
    let t3 = cli_sign_in(&s, &op, "bob").await;
    s.clock.advance_secs(16 * 60);
    assert_eq!(s.call("GET", "/v1/auth/session", Some(t3["access_token"].as_str().unwrap()), None).await.0, 401);
    let (st, t4) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"grant_type": "refresh_token", "refresh_token": t3["refresh_token"]})),
        )
        .await;
    assert_eq!(st, 200, "{t4}");
    assert_eq!(s.call("GET", "/v1/auth/session", Some(t4["access_token"].as_str().unwrap()), None).await.0, 200);
    s.clock.advance_secs(12 * 3600);
    let (st, _) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"grant_type": "refresh_token", "refresh_token": t4["refresh_token"]})),
        )
        .await;
    assert_eq!(st, 401, "past the session's max age");
    s.clock.advance_secs(-(12 * 3600 + 16 * 60));

    // Signing out ends the session.
    let t5 = cli_sign_in(&s, &op, "bob").await;
    let a5 = t5["access_token"].as_str().unwrap();
    let (st, out) = s.call("POST", "/v1/auth/logout", Some(a5), None).await;
    assert_eq!((st, out["revoke_reason"].clone()), (200, json!("signed out")));
    assert_eq!(s.call("GET", "/v1/auth/session", Some(a5), None).await.0, 401);

    // Deactivating alice revokes her sessions and orphans her workflow, in one step.
    let alice = placeholder["id"].as_str().unwrap();
    let (st, d) = s.admin_post(&format!("/v1/humans/{alice}/deactivate"), json!({"reason": "left the company"})).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["workflows_orphaned"], json!(["deploy"]));
    assert_eq!(d["sessions_revoked"].as_array().unwrap().len(), 1);
    assert_eq!(b.get(&format!("{}/v1/auth/session", s.url)).await.status(), 401, "her browser session is gone");
    let (_, wf) = s.admin_get("/v1/workflows/deploy").await;
    assert!(wf["orphaned_at"].is_string(), "{wf}");
    let (_, detail) = s.admin_get(&format!("/v1/humans/{alice}")).await;
    assert_eq!(detail["human"]["state"], "deactivated");
    assert_eq!(detail["sessions"][0]["revoke_reason"], "left the company");
    // She cannot sign in again.
    let r = browser_sign_in(&s, &op.browser(), "alice").await;
    assert_eq!(r.status(), 403);

    // The log names each human and session, and holds no token or secret.
    let (_, recs) = s.admin_get("/v1/audit?action=session.create&limit=100").await;
    let recs = recs.as_array().unwrap();
    assert!(
        recs.iter().any(|r| r["outcome"] == "success"
            && r["actor"].as_str().unwrap().starts_with(&format!("human:{alice}/session:s-")))
    );
    assert!(recs.iter().any(|r| r["outcome"] == "denied"), "the refused sign-in is recorded");
    let export = s.http.get(format!("{}/v1/audit/export", s.url)).bearer_auth(&s.admin).send().await.unwrap();
    let text = export.text().await.unwrap();
    for secret in [&access, &refresh, &access2, SECRET] {
        let tail = &secret[secret.len() - 20..];
        assert!(!text.contains(tail), "a secret leaked into the audit log");
    }
    s.stop().await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sign_ins_are_refused_and_recorded() {
    let op = provider().await;
    let (s, _dir) = remit(&op, |_| {}).await;
    let login = format!("{}/v1/auth/oidc/corp/login", s.url);
    let head = s.audit_head().await;

    // An unverified email never signs in.
    let r = browser_sign_in(&s, &op.browser(), "mallory").await;
    assert_eq!(r.status(), 403);
    // The human says no at the provider.
    let b = op.browser();
    let back = b.try_authorize(&login, Interact::Abort).await.unwrap();
    let r = b.get(back.as_str()).await;
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    // A wrong nonce or an expired ID token, from the real provider.
    for spec in [json!({"claims": {"nonce": "from-another-sign-in"}}), json!({"claims": {"exp": 1}})] {
        op.tamper(spec).await;
        let r = browser_sign_in(&s, &op.browser(), "alice").await;
        assert_eq!(r.status(), 401, "{}", r.text().await.unwrap());
        op.clear_tamper().await;
    }
    let (_, recs) = s.admin_get(&format!("/v1/audit?after={head}&action=session.create")).await;
    let denied: Vec<&Value> = recs.as_array().unwrap().iter().filter(|r| r["outcome"] == "denied").collect();
    assert_eq!(denied.len(), 4, "{recs}");
    assert!(denied.iter().all(|r| r["actor"] == "oidc:corp"));

    // A state that was altered, or comes back to another browser, or no state at all.
    let b = op.browser();
    let back = b.authorize(&login, "alice").await;
    let q = query(&back);
    let (state, code) = (q["state"].as_str().unwrap(), q["code"].as_str().unwrap());
    let mut altered = state.to_owned();
    altered.replace_range(10..11, if &state[10..11] == "A" { "B" } else { "A" });
    let r = b.get(&format!("{}/v1/auth/oidc/callback?code={code}&state={altered}", s.url)).await;
    assert_eq!(r.status(), 400);
    let other = op.browser();
    let r = other.get(back.as_str()).await;
    assert_eq!(r.status(), 400, "another browser cannot finish this sign-in");
    assert!(r.text().await.unwrap().contains("not started in this browser"));
    let r = b.get(&format!("{}/v1/auth/oidc/callback?code={code}", s.url)).await;
    assert_eq!(r.status(), 400);
    // The right browser still can (the code was never used).
    assert_eq!(b.get(back.as_str()).await.status(), 200);

    // `remit login` may only hand off to a loopback IP with a port, with an S256 challenge.
    for q in [
        "redirect_uri=http://evil.example:9/cb&code_challenge=x&state=s",
        "redirect_uri=http://localhost:9/cb&code_challenge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&state=s",
        "redirect_uri=http://127.0.0.1:9/cb&code_challenge=short&state=s",
        "redirect_uri=http://127.0.0.1:9/cb&state=s",
        "redirect_uri=http://127.0.0.1:9/cb&code_challenge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&code_challenge_method=plain&state=s",
    ] {
        let (st, e) = s.call("GET", &format!("/v1/auth/oidc/corp/login?{q}"), None, None).await;
        assert_eq!(st, 400, "{q}: {e}");
    }
    assert_eq!(s.call("GET", "/v1/auth/oidc/nope/login", None, None).await.0, 404);
    let (st, _) = s.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "password"}))).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(
                json!({"grant_type": "refresh_token", "refresh_token": "remit_r.s-00000000000000000000000000000000.x"}),
            ),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s.call("GET", "/v1/auth/session", Some("remit_s.s-00000000000000000000000000000000.x"), None).await;
    assert_eq!(st, 401);
    s.stop().await;

    // Only allowed email domains sign in.
    let (s, _dir) = remit(&op, |p| p.allowed_domains = vec!["example.org".into()]).await;
    assert_eq!(browser_sign_in(&s, &op.browser(), "alice").await.status(), 403);
    s.stop().await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_delays_nothing_but_its_own_sign_ins() {
    // Nothing listens on the provider's port: Remit still starts and serves; only a sign-in
    // through that provider fails (503), and a kill switch still works.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("oidc-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let dead = corp("http://127.0.0.1:9", &secret);
    let s = TestServer::start_with(move |c| c.oidc = vec![dead]).await;
    s.setup().await;
    let (st, e) = s.call("GET", "/v1/auth/oidc/corp/login", None, None).await;
    assert_eq!(st, 503, "{e}");
    let (st, _) = s.admin_post("/v1/workflows/deploy/suspend", json!({"reason": "incident"})).await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_at_the_provider_deactivates_the_human() {
    let op = provider().await;
    let (s, _dir) = remit(&op, |p| p.scopes.push("offline_access".into())).await;
    s.setup().await; // `deploy`, owned by alice
    let t = cli_sign_in(&s, &op, "alice").await;
    let bob = cli_sign_in(&s, &op, "bob").await;
    // While the provider vouches for her, a refresh renews the sign-in there first.
    let refresh = |rt: Value| {
        let s = &s;
        async move {
            s.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "refresh_token", "refresh_token": rt})))
                .await
        }
    };
    let (st, t2) = refresh(t["refresh_token"].clone()).await;
    assert_eq!(st, 200, "{t2}\n{}", op.logs());
    // She leaves the organisation: the provider refuses the next renewal (invalid_grant) …
    let gone = op.http.delete(op.url("/_harness/accounts/alice")).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    let (st, e) = refresh(t2["refresh_token"].clone()).await;
    assert_eq!(st, 401, "{e}");
    assert!(e["message"].as_str().unwrap().contains("invalid_grant"), "{e}");
    // … and Remit deactivates her: sessions revoked, her workflow orphaned, recorded.
    let (_, me) = s.call("GET", "/v1/auth/session", Some(t2["access_token"].as_str().unwrap()), None).await;
    assert_eq!(me["error"], "unauthenticated", "{me}");
    let (_, wf) = s.admin_get("/v1/workflows/deploy").await;
    assert!(wf["orphaned_at"].is_string(), "{wf}");
    let (_, recs) = s.admin_get("/v1/audit?action=human.deactivate").await;
    assert_eq!(recs[0]["actor"], "oidc:corp", "{recs}");
    // Bob is still vouched for.
    assert_eq!(refresh(bob["refresh_token"].clone()).await.0, 200);
    s.stop().await;
    op.stop().await;
}

/// The periodic reconciliation (`[sessions] reconcile_interval`) finds who left without them
/// refreshing anything: the sweep the server runs on its timer, run here directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_deactivates_whom_the_provider_no_longer_vouches_for() {
    let op = provider().await;
    let (s, _dir) = remit(&op, |p| p.scopes.push("offline_access".into())).await;
    let alice = cli_sign_in(&s, &op, "alice").await;
    cli_sign_in(&s, &op, "alice").await; // a second session: still one check for her
    let bob = cli_sign_in(&s, &op, "bob").await;
    assert_eq!(s.app.reconcile_providers().await.unwrap(), (2, 0), "both still vouched for");
    assert_eq!(op.http.delete(op.url("/_harness/accounts/alice")).send().await.unwrap().status(), 204);
    assert_eq!(s.app.reconcile_providers().await.unwrap(), (2, 1));
    assert_eq!(s.call("GET", "/v1/auth/session", Some(alice["access_token"].as_str().unwrap()), None).await.0, 401);
    assert_eq!(s.call("GET", "/v1/auth/session", Some(bob["access_token"].as_str().unwrap()), None).await.0, 200);
    // Her sessions are gone, so the next sweep has only bob to ask.
    assert_eq!(s.app.reconcile_providers().await.unwrap(), (1, 0));
    s.stop().await;
    op.stop().await;
}
