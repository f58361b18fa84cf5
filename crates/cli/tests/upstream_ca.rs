//! The trust domain's CA as an intermediate under an operator's upstream CA, made with the
//! `openssl` command line (a P-384 root and an RSA issuing CA below it — not Remit's own
//! code): a bad upstream configuration stops `remit init`; leaves carry the chain up to (not
//! including) the root, which alone is the bundle; `openssl verify` and py-spiffe's
//! `cryptography` accept the chain; the SVID authenticates over mTLS on Remit's own API; a
//! rotation keeps the bundle unchanged; and removing the upstream from the configuration
//! makes the server replace the CA by itself at the next start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::{Value, json};

mod common;

use common::{BIN, python, repo, tls_client as client};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

/// A P-384 root and an RSA-2048 issuing CA signed by it (path length 1: room for Remit's CA).
fn make_upstream(dir: &Path) {
    std::fs::write(dir.join("root.cnf"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        .unwrap();
    std::fs::write(
        dir.join("issuing.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    #[rustfmt::skip]
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
        "-keyout", "root.key", "-out", "root.pem", "-days", "30", "-subj", "/O=Corp/CN=Corp Root",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    #[rustfmt::skip]
    openssl(dir, &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "issuing.key",
        "-out", "issuing.csr", "-subj", "/O=Corp/CN=Corp SPIFFE Issuing"]);
    #[rustfmt::skip]
    openssl(dir, &["x509", "-req", "-in", "issuing.csr", "-CA", "root.pem", "-CAkey", "root.key",
        "-set_serial", "2", "-days", "20", "-extfile", "issuing.cnf", "-out", "issuing.pem"]);
    let chain = [std::fs::read(dir.join("issuing.pem")).unwrap(), std::fs::read(dir.join("root.pem")).unwrap()];
    std::fs::write(dir.join("upstream.pem"), chain.concat()).unwrap();
    for k in ["root.key", "issuing.key"] {
        std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn config(cert: &Path, key: &Path) -> String {
    format!(
        "[workload]\nx509_svid_ttl = \"60s\"\n\n[workload.upstream_ca]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

fn init(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("init").args(args).env("REMIT_DATA_DIR", data).env_remove("REMIT_KEK").output().unwrap()
}

fn der_of_pem(path: &Path) -> Vec<Vec<u8>> {
    let pem = std::fs::read_to_string(path).unwrap();
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| {
            let body: String = b.split("-----END").next().unwrap().chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(body).unwrap()
        })
        .collect()
}

fn x509_entries(bundle: &Value) -> Vec<Value> {
    bundle["keys"].as_array().unwrap().iter().filter(|k| k["use"] == "x509-svid").cloned().collect()
}

#[test]
fn the_ca_is_an_intermediate_under_an_operators_upstream_ca() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("upstream");
    std::fs::create_dir_all(&up).unwrap();
    make_upstream(&up);
    let (chain_file, key_file) = (up.join("upstream.pem"), up.join("issuing.key"));

    // Refused configurations stop `remit init`, saying why, and leave no installation.
    let refused = |cert: &Path, key: &Path, why: &str| {
        let data = dir.path().join("refused");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("remit.toml"), config(cert, key)).unwrap();
        let o = init(&data, &[]);
        assert!(!o.status.success() && text(&o).contains(why), "{why}: {}", text(&o));
        assert!(!data.join("remit.db").exists() || !data.join("admin.token").exists());
    };
    refused(&chain_file, &up.join("root.key"), "its key is not the key of its certificate");
    refused(&up.join("issuing.pem"), &key_file, "must end with the self-signed root");
    std::fs::copy(&key_file, up.join("loose.key")).unwrap();
    std::fs::set_permissions(up.join("loose.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&chain_file, &up.join("loose.key"), "chmod 600");

    // A good one: the installation's CA is signed by the issuing CA.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("remit.toml"), config(&chain_file, &key_file)).unwrap();
    let o = init(&data, &["--tls-self-signed"]);
    assert!(o.status.success(), "{}", text(&o));
    let tls_ca = data.join("tls.crt");
    let s = common::serve(&data, &[], &[]);
    common::register_python_agent(&s.url, &data, Some(&tls_ca));
    let root_der = der_of_pem(&up.join("root.pem")).remove(0);
    let issuing_der = der_of_pem(&up.join("issuing.pem")).remove(0);

    // py-spiffe fetches the SVID: leaf, Remit's CA, the issuing CA; the bundle is the root.
    let socket = format!("unix://{}", data.join("workload.sock").display());
    let o = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["fetch", "--audience", "remit"])
        .env("SPIFFE_ENDPOINT_SOCKET", &socket)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(o.stdout.trim_ascii()).unwrap_or(Value::Null);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!((v["chain_len"].as_u64(), v["bundle_authority_count"].as_u64()), (Some(3), Some(1)), "{v}");
    assert_eq!(v["chain_verifies_with_bundle"], true, "{v}");
    assert_eq!((v["basic_constraints_ca"].as_bool(), v["key_cert_sign"].as_bool()), (Some(false), Some(false)));
    assert_eq!(v["jwt_verifies_with_bundle"], true, "JWT-SVIDs are unaffected: {v}");

    // The same written out as spiffe-helper does; `openssl verify` accepts the chain.
    let svid_dir = dir.path().join("svid");
    std::fs::create_dir_all(&svid_dir).unwrap();
    let mut holder = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["--timeout", "120", "write-svid", "--dir", svid_dir.to_str().unwrap()])
        .env("SPIFFE_ENDPOINT_SOCKET", &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let written: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(written["spiffe_id"].as_str().unwrap().starts_with("spiffe://remit.local/agent/bot/"), "{written}");
    let chain = der_of_pem(&svid_dir.join("svid.pem"));
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[2], issuing_der, "the upstream's issuing CA follows Remit's CA");
    assert!(!chain.contains(&root_der), "the root is never in the chain");
    assert_eq!(der_of_pem(&svid_dir.join("bundle.pem")), vec![root_der.clone()]);
    std::fs::write(svid_dir.join("leaf.pem"), {
        let pem = std::fs::read_to_string(svid_dir.join("svid.pem")).unwrap();
        let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
        pem[..end].to_owned()
    })
    .unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile", "bundle.pem", "-untrusted", "svid.pem", "leaf.pem"])
        .current_dir(&svid_dir)
        .output()
        .unwrap();
    assert!(verify.status.success() && text(&verify).contains("leaf.pem: OK"), "{}", text(&verify));

    // The SVID (with its intermediates) is an instance credential over mTLS on Remit's API.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls_pem = std::fs::read(&tls_ca).unwrap();
    let mut identity = std::fs::read(svid_dir.join("key.pem")).unwrap();
    identity.extend(std::fs::read(svid_dir.join("svid.pem")).unwrap());
    let bundle_of = |url: &str| {
        rt.block_on(async {
            let r = client(&tls_pem, None).get(format!("{url}/.well-known/spiffe-bundle")).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    rt.block_on(async {
        let r = client(&tls_pem, Some(identity))
            .post(format!("{}/v1/tasks", s.url))
            .json(&json!({"workflow": "w", "intent": "over mTLS", "audience": ["https://api.example"]}))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["task"]["agent"], "bot");
    });
    // A certificate your root signed directly for the same SPIFFE ID is no SVID of Remit's:
    // Remit's API trusts its own CA certificates, not everything under the upstream root.
    std::fs::write(
        up.join("foreign.cnf"),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\nsubjectAltName=URI:{}\n",
            written["spiffe_id"].as_str().unwrap()
        ),
    )
    .unwrap();
    #[rustfmt::skip]
    openssl(&up, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "foreign.key", "-out", "foreign.csr", "-subj", "/O=Corp/CN=foreign"]);
    #[rustfmt::skip]
    openssl(&up, &["x509", "-req", "-in", "foreign.csr", "-CA", "root.pem", "-CAkey", "root.key",
        "-set_serial", "9", "-days", "1", "-extfile", "foreign.cnf", "-out", "foreign.pem"]);
    let mut foreign = std::fs::read(up.join("foreign.key")).unwrap();
    foreign.extend(std::fs::read(up.join("foreign.pem")).unwrap());
    rt.block_on(async {
        let r = client(&tls_pem, Some(foreign))
            .post(format!("{}/v1/tasks", s.url))
            .json(&json!({"workflow": "w", "intent": "impostor", "audience": ["https://api.example"]}))
            .send()
            .await;
        assert!(r.is_err(), "refused in the handshake: {r:?}");
    });
    drop(holder.stdin.take());
    let _ = holder.wait();

    // The bundle endpoint publishes the root alone, its P-384 key as a JWK.
    let bundle = bundle_of(&s.url);
    let x = x509_entries(&bundle);
    assert_eq!(x.len(), 1, "{bundle}");
    assert_eq!((x[0]["kty"].as_str(), x[0]["crv"].as_str()), (Some("EC"), Some("P-384")), "{bundle}");
    assert_eq!(x[0]["x5c"][0], base64::engine::general_purpose::STANDARD.encode(&root_der));

    // A rotation makes a new intermediate under the same root: the bundle does not change.
    let admin = |url: &str, args: &[&str]| {
        let o = Command::new(BIN)
            .arg("--json")
            .args(args)
            .env("REMIT_URL", url)
            .env("REMIT_DATA_DIR", &data)
            .env("REMIT_TLS_CA", &tls_ca)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null)
    };
    admin(&s.url, &["keys", "rotate", "--x509"]);
    assert_eq!(x509_entries(&bundle_of(&s.url)), x, "one root, unchanged");
    drop(s);

    // Without the upstream in the configuration, the next start of an installation replaces
    // its CA by a self-signed one, published beside the root, and says why in the audit log.
    let data = dir.path().join("data2");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("remit.toml"), config(&chain_file, &key_file)).unwrap();
    let o = init(&data, &["--tls-self-signed"]);
    assert!(o.status.success(), "{}", text(&o));
    let tls_pem = std::fs::read(data.join("tls.crt")).unwrap();
    let bundle_of = |url: &str| {
        rt.block_on(async {
            let r = client(&tls_pem, None).get(format!("{url}/.well-known/spiffe-bundle")).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    let s = common::serve(&data, &[], &[]);
    assert_eq!(x509_entries(&bundle_of(&s.url)).len(), 1);
    drop(s);
    let conf = "[workload]\nx509_svid_ttl = \"60s\"\n\n[tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n";
    std::fs::write(data.join("remit.toml"), conf).unwrap();
    let s = common::serve(&data, &[], &[]);
    let x = x509_entries(&bundle_of(&s.url));
    assert_eq!(x.len(), 2, "{x:?}");
    assert!(x.iter().any(|k| k["crv"] == "P-256") && x.iter().any(|k| k["crv"] == "P-384"), "{x:?}");
    let o = Command::new(BIN)
        .args(["--json", "audit", "list", "--action", "keys.rotate", "--limit", "100"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .env("REMIT_TLS_CA", data.join("tls.crt"))
        .output()
        .unwrap();
    assert!(text(&o).contains("the upstream CA was removed from the configuration"), "{}", text(&o));
}
