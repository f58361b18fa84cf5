//! Rotating the trust domain's X.509 CA: the new CA is published at once (bundle endpoint,
//! X.509 bundle) but signs only after `CA_PREPARE`, so relying parties hold it before they meet
//! an SVID it signed; the old CA signs meanwhile and stays published until its last leaf
//! expires; a second rotation while one is under way is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestServer;
use remit_server::service::x509::CA_PREPARE;
use serde_json::json;

#[tokio::test]
async fn a_new_ca_is_published_before_it_signs() {
    let s = TestServer::start().await;
    let signer = |s: &TestServer| {
        let ca = s.app.x509_authority().unwrap();
        ca.signer(s.app.clock.now()).unwrap().key.kid().to_owned()
    };
    let old = signer(&s);
    let (st, r) = s.admin_post("/v1/keys/rotate?purpose=x509", json!({})).await;
    assert_eq!(st, 200, "{r}");
    let new = r["kid"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // Published at once, with the CA still signing.
    let (_, bundle) = s.call("GET", "/.well-known/spiffe-bundle", None, None).await;
    let kids: Vec<&str> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old.as_str()) && kids.contains(&new.as_str()), "{bundle}");
    assert_eq!(s.app.x509_authority().unwrap().roots.len(), 2);
    assert_eq!(signer(&s), old, "the new CA does not sign yet");
    let before =
        s.app.issue_x509_svid("spiffe://remit.local/agent/a/instance/i-1", s.app.clock.now().plus_secs(600)).unwrap();
    // One rotation at a time.
    let (st, _) = s.admin_post("/v1/keys/rotate?purpose=x509", json!({})).await;
    assert_eq!(st, 409);
    // Once the preparation time has passed, the new CA signs.
    s.clock.advance_secs(i64::try_from(CA_PREPARE.as_secs()).unwrap() + 1);
    assert_eq!(signer(&s), new);
    let after =
        s.app.issue_x509_svid("spiffe://remit.local/agent/a/instance/i-1", s.app.clock.now().plus_secs(600)).unwrap();
    assert_ne!(before.chain[1], after.chain[1], "signed by the new CA");
    assert_eq!(remit_token::x509::check_svid(&after.chain[0]).unwrap(), "spiffe://remit.local/agent/a/instance/i-1");
}
