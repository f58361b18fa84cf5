//! The SPIFFE Workload API against the real server, spoken by an independent client: the
//! PyPI `spiffe` package (py-spiffe, over gRPC's C core) and `spiffe-tls`, driven through
//! `tests/spiffe/workload_client.py` with the shared venv's Python.
//!
//! A process started from a registered executable gets its X.509-SVID, a JWT-SVID and both
//! bundles from the socket with no token in hand (and uses the JWT-SVID on Remit's API); an
//! unregistered one is refused; a call without `workload.spiffe.io` is `InvalidArgument`; the
//! SVID's fields are checked by Python's `cryptography`; SVIDs rotate before expiry and the
//! stream shows it; disabling the agent ends the stream with `PermissionDenied`; two
//! processes do mutual TLS with their SVIDs; every attestation is audited with its selectors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{BIN, python, python_exe, repo, uid};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn cli(url: &str, data: &Path, args: &[&str]) -> Value {
    let o = Command::new(BIN)
        .arg("--json")
        .args(args)
        .env("REMIT_URL", url)
        .env("REMIT_DATA_DIR", data)
        .env_remove("REMIT_TASK_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "remit {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// `workload_client.py <args>` with the socket in `SPIFFE_ENDPOINT_SOCKET`: its exit code and
/// its last JSON line.
fn client(socket: &str, args: &[&str]) -> (i32, Value) {
    let o = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", socket)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.lines().last().unwrap_or("null");
    let v = serde_json::from_str(last).unwrap_or_else(|_| panic!("no JSON from the client: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn a_registered_process_gets_its_svids_from_the_socket_with_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Short X.509-SVIDs, so a rotation (at half-life) happens while the test watches.
    // A data-access trust domain of its own: its JWT bundle is served on the socket too.
    std::fs::write(
        data.join("remit.toml"),
        "[workload]\nx509_svid_ttl = \"6s\"\n\n[trust_domains]\ndata = \"data.remit.local\"\n",
    )
    .unwrap();
    let s = common::serve(&data, &[], &[]);
    let socket = format!("unix://{}", data.join("workload.sock").display());

    // Nothing registered yet: refused, learning nothing else.
    let (code, v) = client(&socket, &["fetch", "--audience", "remit"]);
    assert_eq!((code, v["error"].as_str()), (3, Some("PERMISSION_DENIED")), "{v}");
    assert_eq!(v["detail"], "this workload is not entitled to an identity");
    // Without the security header: InvalidArgument, unary and streaming alike.
    for rpc in ["FetchJWTSVID", "FetchX509SVID", "FetchJWTBundles"] {
        let (code, v) = client(&socket, &["no-header", "--rpc", rpc]);
        assert_eq!((code, v["error"].as_str()), (3, Some("INVALID_ARGUMENT")), "{rpc}: {v}");
    }

    let run = |args: &[&str]| cli(&s.url, &data, args);
    run(&["workflow", "create", "deploy", "--purpose", "deploys", "--owner", "alice@example.com"]);
    run(&["agent", "create", "deploy-bot", "--workflow", "deploy", "--owner", "alice@example.com"]);
    let (path, hash) = python_exe();
    let entry = run(&[
        "entry",
        "create",
        "--agent",
        "deploy-bot",
        "--selector",
        &format!("unix:uid:{}", uid()),
        "--selector",
        &format!("unix:sha256:{hash}"),
        "--selector",
        &format!("unix:path:{path}"),
        "--hint",
        "internal",
    ]);
    assert!(entry["id"].as_str().unwrap().starts_with("re-"));
    // A selector of another kind of value is refused with a 4xx, not stored.
    let bad = Command::new(BIN)
        .args(["entry", "create", "--agent", "deploy-bot", "--selector", "unix:uid:-1"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!bad.status.success() && text(&bad).contains("selector"), "{}", text(&bad));

    // The registered executable: an X.509-SVID, a JWT-SVID and both bundles.
    let (code, v) = client(&socket, &["fetch", "--audience", "remit"]);
    assert_eq!(code, 0, "{v}");
    let id = v["spiffe_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("spiffe://remit.local/agent/deploy-bot/instance/i-"), "{id}");
    // The X509-SVID profile, as Python's `cryptography` reads the certificate.
    assert_eq!(v["uri_sans"], json!([id]));
    assert_eq!(v["basic_constraints_ca"], false);
    assert_eq!(v["key_usage_critical"], true);
    assert_eq!(
        (v["digital_signature"].as_bool(), v["key_cert_sign"].as_bool(), v["crl_sign"].as_bool()),
        (Some(true), Some(false), Some(false))
    );
    assert_eq!(v["eku"], json!(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]));
    assert_eq!(
        (v["chain_verifies_with_bundle"].as_bool(), v["private_key_matches"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(v["not_after"].as_i64().unwrap() - v["not_before"].as_i64().unwrap() <= 6 + 30);
    // Bundles are keyed by trust-domain ID; the hint comes from the entry.
    assert_eq!(v["raw_x509_bundles_keys"], json!(["spiffe://remit.local"]));
    assert_eq!(v["raw_jwt_bundle_keys"], json!(["spiffe://data.remit.local", "spiffe://remit.local"]));
    assert_eq!(v["raw_x509_svid_hints"], json!(["internal"]));
    // The JWT-SVID validates through the socket and against the bundle.
    assert_eq!(v["validated_spiffe_id"].as_str(), Some(v["jwt_spiffe_id"].as_str().unwrap()));
    assert_eq!(v["jwt_verifies_with_bundle"], true);
    assert_eq!(v["jwt_claims"]["aud"], json!(["remit"]));

    // A JWT-SVID for Remit's audience is an instance credential on Remit's API.
    let (code, started) = client(&socket, &["start-task", "--url", &s.url, "--workflow", "deploy"]);
    assert_eq!((code, started["status"].as_u64()), (0, Some(201)), "{started}");
    assert_eq!(started["body"]["task"]["agent"], "deploy-bot");
    // No JWT-SVID for a registered tool's audience: tools get credentials by token exchange.
    run(&[
        "tool",
        "create",
        "tickets",
        "--audience",
        "https://tickets.example/api",
        "--scope",
        "read",
        "--owner",
        "ops@example.com",
        "--class",
        "data",
    ]);
    let (code, v) = client(&socket, &["jwt", "--audience", "https://tickets.example/api"]);
    assert_eq!((code, v["error"].as_str()), (3, Some("INVALID_ARGUMENT")), "{v}");
    // The stream rotates the X.509-SVID before it expires: three SVIDs within one TTL and a half.
    let (code, w) = client(&socket, &["--timeout", "30", "watch", "--count", "3"]);
    assert_eq!(code, 0, "{w}");

    // Mutual TLS between two processes with their fetched SVIDs; each checks the other's ID.
    let port_file = dir.path().join("port");
    let server = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["mtls-server", "--port-file", port_file.to_str().unwrap()])
        .env("SPIFFE_ENDPOINT_SOCKET", &socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let port_line = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            break s;
        }
        assert!(Instant::now() < deadline, "the mTLS server never listened");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (port, server_id) = port_line.trim().split_once(' ').unwrap();
    let (code, c) = client(&socket, &["mtls-client", "--port", port, "--expect-id", server_id]);
    assert_eq!(code, 0, "{c}");
    assert_eq!(c["peer"], server_id);
    let out = server.wait_with_output().unwrap();
    let sv: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(sv["peer"], c["reply"]["peer"]);
    assert_ne!(sv["peer"], server_id, "two processes, two instances");

    // Disabling the agent ends a running stream with PermissionDenied, and the next call too.
    let mut watch = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["--timeout", "60", "watch", "--count", "1000"])
        .env("SPIFFE_ENDPOINT_SOCKET", &socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["update"], 1, "{first}");
    let disabled_at = Instant::now();
    run(&["agent", "disable", "deploy-bot", "--reason", "compromised"]);
    let end = lines.map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()).find(|v| v.get("error").is_some());
    let end = end.expect("the stream ended");
    assert_eq!(end["error"], "PERMISSION_DENIED", "{end}");
    eprintln!("stream ended {:?} after the agent was disabled", disabled_at.elapsed());
    assert_eq!(watch.wait().unwrap().code(), Some(3));
    let (code, v) = client(&socket, &["fetch", "--audience", "remit"]);
    assert_eq!((code, v["error"].as_str()), (3, Some("PERMISSION_DENIED")), "{v}");

    // Every attestation is audited with its selectors: the successes and the refusals.
    let audit = run(&["audit", "list", "--action", "workload.attest", "--limit", "1000"]);
    let records: Vec<(String, Value)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["outcome"].as_str().unwrap().to_owned(), serde_json::from_str(r["detail"].as_str().unwrap()).unwrap())
        })
        .collect();
    let selectors = |d: &Value| d["selectors"].as_array().cloned().unwrap_or_default();
    let uid_sel = json!(format!("unix:uid:{}", uid()));
    assert!(records.iter().any(|(o, d)| o == "denied" && selectors(d).contains(&uid_sel)), "{audit}");
    assert!(
        records.iter().any(|(o, d)| o == "success" && selectors(d).contains(&json!(format!("unix:sha256:{hash}")))),
        "{audit}"
    );
    // The processes that exited had their instances ended by the kill switch.
    let revoked = run(&["audit", "list", "--action", "instance.revoke", "--limit", "1000"]);
    assert!(revoked.to_string().contains("its process exited"), "{revoked}");
}
