//! Native TLS on the real server: `remit init --tls-self-signed`, the CLI over HTTPS, a
//! certificate replaced on disk and picked up without a restart, the SPIFFE bundle over
//! HTTPS, and mutual TLS with an X.509-SVID (fetched by py-spiffe from the Workload API) as an
//! agent instance's credential — refused once the instance is revoked, and a certificate from
//! another CA refused in the handshake. Clients are reqwest on rustls, the server rustls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{BIN, python, repo, tls_client as client};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn cli(url: &str, data: &Path, args: &[&str], ca: Option<&Path>) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--json").args(args).env("REMIT_URL", url).env("REMIT_DATA_DIR", data).env_remove("REMIT_TLS_CA");
    if let Some(ca) = ca {
        c.env("REMIT_TLS_CA", ca);
    }
    c.output().unwrap()
}

async fn start_task(c: &reqwest::Client, url: &str) -> Result<(u16, Value), reqwest::Error> {
    let r = c
        .post(format!("{url}/v1/tasks"))
        .json(&json!({"workflow": "deploy", "intent": "deploy over mTLS", "audience": ["https://api.example"]}))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[test]
fn remit_speaks_tls_reloads_its_certificate_and_takes_an_svid_as_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = Command::new(BIN).args(["init", "--tls-self-signed"]).env("REMIT_DATA_DIR", &data).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let ca_path = data.join("tls.crt");
    assert!(std::fs::read_to_string(data.join("remit.toml")).unwrap().contains("[tls]"));
    let s = common::serve(&data, &[], &[]);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    // The CLI over HTTPS, trusting the self-signed certificate; not without it.
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null)
    };
    let wf = ["workflow", "create", "deploy", "--purpose", "deploys", "--owner", "alice@example.com"];
    let refused = cli(&s.url, &data, &wf, None);
    assert_eq!(refused.status.code(), Some(5), "an untrusted certificate: {}", text(&refused));
    ok(cli(&s.url, &data, &wf, Some(&ca_path)));
    let agent = ["agent", "create", "deploy-bot", "--workflow", "deploy", "--owner", "alice@example.com"];
    ok(cli(&s.url, &data, &agent, Some(&ca_path)));
    // The issuer sealed at init is the HTTPS one.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca = std::fs::read(&ca_path).unwrap();
    let discovery: Value = rt.block_on(async {
        let c = client(&ca, None);
        c.get(format!("{}/.well-known/openid-configuration", s.url)).send().await.unwrap().json().await.unwrap()
    });
    assert!(discovery["issuer"].as_str().unwrap().starts_with("https://"), "{discovery}");
    // The SPIFFE bundle endpoint over HTTPS (https_web), with the X.509 CA.
    let bundle: Value = rt.block_on(async {
        let c = client(&ca, None);
        c.get(format!("{}/.well-known/spiffe-bundle", s.url)).send().await.unwrap().json().await.unwrap()
    });
    assert!(bundle["keys"].as_array().unwrap().iter().any(|k| k["use"] == "x509-svid"), "{bundle}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = rt.block_on(reqwest::get(s.url.replacen("https://", "http://", 1)));
    assert!(plain.is_err(), "{plain:?}");

    // A process registered with the Workload API writes its X.509-SVID (as spiffe-helper does)
    // and keeps running; its certificate authenticates it as the agent instance.
    let [uid_sel, hash_sel] = common::python_selectors();
    let entry = ["entry", "create", "--agent", "deploy-bot", "--selector", &uid_sel, "--selector", &hash_sel];
    ok(cli(&s.url, &data, &entry, Some(&ca_path)));
    let svid_dir = dir.path().join("svid");
    std::fs::create_dir_all(&svid_dir).unwrap();
    let mut holder = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["--timeout", "120", "write-svid", "--dir", svid_dir.to_str().unwrap()])
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{}", data.join("workload.sock").display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let written: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let spiffe_id = written["spiffe_id"].as_str().expect("an SVID was written").to_owned();
    let mut identity = std::fs::read(svid_dir.join("key.pem")).unwrap();
    identity.extend(std::fs::read(svid_dir.join("svid.pem")).unwrap());

    rt.block_on(async {
        let with_svid = client(&ca, Some(identity.clone()));
        let (st, v) = start_task(&with_svid, &s.url).await.unwrap();
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["task"]["agent"], "deploy-bot");
        assert!(spiffe_id.ends_with(v["task"]["instance"].as_str().unwrap()), "{v} {spiffe_id}");
        // The same certificate from a second place (127.0.0.2): one instance identity used by
        // two processes — a sharing event naming the agent, the certificate by its serial.
        let elsewhere = reqwest::Client::builder()
            .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .build()
            .unwrap();
        let (st, v) = start_task(&elsewhere, &s.url).await.unwrap();
        assert_eq!(st, 201, "{v}");
        // No certificate and no token: unauthenticated.
        let (st, _) = start_task(&client(&ca, None), &s.url).await.unwrap();
        assert_eq!(st, 401);
        // A certificate from another CA fails the handshake.
        let stranger = remit_server::tls::self_signed(&[]).unwrap();
        let foreign = client(&ca, Some(format!("{}{}", stranger.1, stranger.0).into_bytes()));
        assert!(start_task(&foreign, &s.url).await.is_err());
    });

    let shared = cli(&s.url, &data, &["audit", "list", "--action", "security.token_sharing"], Some(&ca_path));
    let shared: Value = serde_json::from_slice(&shared.stdout).unwrap();
    let ev = shared.as_array().unwrap().iter().find(|r| r["agent"] == "deploy-bot").expect("a sharing event");
    let d: Value = serde_json::from_str(ev["detail"].as_str().unwrap()).unwrap();
    assert_eq!((d["via"].as_str(), d["now"]["addr"].as_str()), (Some("mtls"), Some("127.0.0.2")), "{d}");
    assert!(d["jti"].as_str().unwrap().starts_with("x509:"), "{d}");

    // Disabling the agent revokes the instance: its certificate, still unexpired, is refused.
    ok(cli(&s.url, &data, &["agent", "disable", "deploy-bot", "--reason", "rotated out"], Some(&ca_path)));
    rt.block_on(async {
        let (st, v) = start_task(&client(&ca, Some(identity)), &s.url).await.unwrap();
        assert_eq!(st, 401, "{v}");
    });
    drop(holder.stdin.take());
    let _ = holder.wait();

    // A new certificate on disk is served without a restart.
    let fresh = remit_server::tls::self_signed(&["reloaded.example".to_owned()]).unwrap();
    std::fs::write(data.join("tls.key"), &fresh.1).unwrap();
    std::fs::write(&ca_path, &fresh.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reloaded_at = Instant::now();
    loop {
        let ok = rt.block_on(async {
            client(fresh.0.as_bytes(), None).get(format!("{}/healthz", s.url)).send().await.is_ok()
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("new certificate served {:?} after it was written", reloaded_at.elapsed());
    // The old one is no longer trusted by a client that knows only it.
    let stale = rt.block_on(async { client(&ca, None).get(format!("{}/healthz", s.url)).send().await });
    assert!(stale.is_err());
}
