//! SPIFFE federation between real servers: Remit B federates with trust domain
//! `partner.test` (Remit A, serving its SPIFFE bundle over HTTPS, `https_web`) and not with
//! `stranger.test` (Remit C). Through B's Workload API (py-spiffe), a JWT-SVID A issued
//! validates and C's does not; B hands out A's X.509 and JWT bundles as federated bundles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{BIN, python, register_python_agent, repo};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn init(data: &Path, td: &str, tls: bool) {
    let mut c = Command::new(BIN);
    c.args(["init", "--trust-domain", td]).env("REMIT_DATA_DIR", data);
    if tls {
        c.arg("--tls-self-signed");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn client(data: &Path, args: &[&str]) -> (i32, Value) {
    let o = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", data.join("workload.sock").display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap_or_else(|_| panic!("{}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn a_federated_domains_jwt_svid_validates_and_an_unfederated_ones_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    init(&a, "partner.test", true);
    init(&c, "stranger.test", false);
    let sa = common::serve(&a, &[], &[]);
    let sc = common::serve(&c, &[], &[]);
    std::fs::create_dir_all(&b).unwrap();
    let federation = format!(
        "[[federation]]\ntrust_domain = \"partner.test\"\nbundle_endpoint = \"{}/.well-known/spiffe-bundle\"\nca_file = \"{}\"\n",
        sa.url,
        a.join("tls.crt").display()
    );
    std::fs::write(b.join("remit.toml"), federation).unwrap();
    init(&b, "remit.local", false);
    let sb = common::serve(&b, &[], &[]);
    register_python_agent(&sa.url, &a, Some(&a.join("tls.crt")));
    register_python_agent(&sb.url, &b, None);
    register_python_agent(&sc.url, &c, None);

    let (code, ta) = client(&a, &["jwt", "--audience", "b-service"]);
    assert_eq!(code, 0, "{ta}");
    assert!(ta["spiffe_id"].as_str().unwrap().starts_with("spiffe://partner.test/"), "{ta}");
    let (code, tc) = client(&c, &["jwt", "--audience", "b-service"]);
    assert_eq!(code, 0, "{tc}");

    // B validates the partner's JWT-SVID (once it has fetched the partner's bundle).
    let deadline = Instant::now() + Duration::from_secs(30);
    let validated = loop {
        let (code, v) = client(&b, &["validate", "--audience", "b-service", "--token", ta["token"].as_str().unwrap()]);
        if code == 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "the partner's JWT-SVID never validated: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(validated["spiffe_id"], ta["spiffe_id"], "{validated}");
    // Not for another audience; and never the stranger's.
    let (code, v) = client(&b, &["validate", "--audience", "other", "--token", ta["token"].as_str().unwrap()]);
    assert_eq!((code, v["error"].as_str()), (3, Some("INVALID_ARGUMENT")), "{v}");
    let (code, v) = client(&b, &["validate", "--audience", "b-service", "--token", tc["token"].as_str().unwrap()]);
    assert_eq!((code, v["error"].as_str()), (3, Some("INVALID_ARGUMENT")), "{v}");

    // B's workloads get the partner's bundles as federated bundles.
    let (code, f) = client(&b, &["fetch", "--audience", "remit"]);
    assert_eq!(code, 0, "{f}");
    assert_eq!(f["raw_federated_bundle_keys"], serde_json::json!(["spiffe://partner.test"]), "{f}");
    let tds = f["x509_bundles_rpc_trust_domains"].as_array().unwrap();
    assert!(tds.contains(&"partner.test".into()) && tds.contains(&"remit.local".into()), "{f}");
    assert!(f["jwt_bundle_trust_domains"].as_array().unwrap().contains(&"partner.test".into()), "{f}");
    drop((sa, sb, sc));
}
