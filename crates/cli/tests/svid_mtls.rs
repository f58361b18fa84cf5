//! Two processes do mutual TLS with rustls using X.509-SVIDs from Remit's Workload API, each
//! checking the other's SPIFFE ID — the spiffe-helper pattern: a registered workload (py-spiffe)
//! fetches its SVID, key and bundle into files, and a TLS endpoint uses them. The server
//! endpoint is this test binary re-run as a child process (`PEER_ROLE=server`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;

mod common;

use common::{python, repo};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn chain(dir: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(dir.join("svid.pem")).unwrap().map(Result::unwrap).collect()
}

fn key(dir: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap()
}

fn roots(dir: &Path) -> RootCertStore {
    let mut r = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("bundle.pem")).unwrap() {
        r.add(c.unwrap()).unwrap();
    }
    r
}

/// A SPIFFE server-certificate check: the chain to the bundle, then the peer's SPIFFE ID
/// (an SVID names no DNS host, so the usual hostname check does not apply).
#[derive(Debug)]
struct SpiffeServer {
    roots: RootCertStore,
    expect: String,
}

impl ServerCertVerifier for SpiffeServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let algs = provider().signature_verification_algorithms.all;
        rustls::client::verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algs)?;
        match remit_token::x509::check_svid(end_entity) {
            Ok(id) if id == self.expect => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General("not the expected SPIFFE ID".into())),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(dir: &Path, expect: &str) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServer { roots: roots(dir), expect: expect.to_owned() }))
        .with_client_auth_cert(chain(dir), key(dir))
        .unwrap()
}

/// The server role: one mutual-TLS connection with the SVID in `SVID_DIR`; the client's
/// certificate must chain to the bundle and name `EXPECT`; answers with both IDs.
#[test]
fn mtls_peer_role() {
    if std::env::var("PEER_ROLE").as_deref() != Ok("server") {
        return;
    }
    let dir = PathBuf::from(std::env::var("SVID_DIR").unwrap());
    let expect = std::env::var("EXPECT").unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&dir)), provider()).build().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&dir), key(&dir))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("port {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut hello = [0u8; 5];
    tls.read_exact(&mut hello).unwrap();
    let peer = tls.conn.peer_certificates().unwrap()[0].clone();
    let peer_id = remit_token::x509::check_svid(&peer).unwrap();
    assert_eq!(peer_id, expect, "the client is not who the server expects");
    let own = remit_token::x509::check_svid(&chain(&dir)[0]).unwrap();
    tls.write_all(format!("{own} saw {peer_id}\n").as_bytes()).unwrap();
    tls.flush().unwrap();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
}

/// Fetches an SVID into `dir` from a process that then holds the identity (until its stdin
/// closes).
fn holder(socket: &str, dir: &Path) -> (Child, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = Command::new(python())
        .arg(repo().join("tests/spiffe/workload_client.py"))
        .args(["--timeout", "30", "write-svid", "--dir", dir.to_str().unwrap()])
        .env("SPIFFE_ENDPOINT_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let v: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    (c, v["spiffe_id"].as_str().expect("an SVID").to_owned())
}

#[test]
fn two_processes_do_mutual_tls_with_their_svids_over_rustls() {
    if std::env::var("PEER_ROLE").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = common::serve(&data, &[], &[]);
    common::register_python_agent(&s.url, &data, None);
    let socket = format!("unix://{}", data.join("workload.sock").display());
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let (mut ha, id_a) = holder(&socket, &dir_a);
    let (mut hb, id_b) = holder(&socket, &dir_b);
    assert_ne!(id_a, id_b, "two processes, two identities");

    // The server: this test binary again, in its server role, with A's SVID, expecting B.
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mtls_peer_role", "--nocapture", "--test-threads", "1"])
        .env("PEER_ROLE", "server")
        .env("SVID_DIR", &dir_a)
        .env("EXPECT", &id_b)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let port: u16 = loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "the server role exited");
        // libtest prints "test mtls_peer_role ... " first, on the same line.
        if let Some(p) = l.split("port ").nth(1) {
            break p.trim().parse().unwrap();
        }
    };
    // The client: B's SVID, expecting A.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("svid.invalid").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config(&dir_b, &id_a)), name.clone()).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"hello").unwrap();
    let mut reply = String::new();
    let _ = tls.read_to_string(&mut reply);
    assert_eq!(reply.trim(), format!("{id_a} saw {id_b}"));
    assert!(server.wait().unwrap().success(), "the server role failed");

    // Expecting someone else, the client refuses the server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir_a2 = dir_a.clone();
    let t = std::thread::spawn(move || {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain(&dir_a2), key(&dir_a2))
            .unwrap();
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let _ = conn.complete_io(&mut tcp);
    });
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config(&dir_b, &id_b)), name).unwrap();
    assert!(conn.complete_io(&mut tcp).is_err(), "a server with another SPIFFE ID is refused");
    drop(tcp);
    let _ = t.join();
    for h in [&mut ha, &mut hb] {
        drop(h.stdin.take());
        let _ = h.wait();
    }
}
