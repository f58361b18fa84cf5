//! Receiving Shared Signals end to end: an identity provider (an independent transmitter,
//! `tests/ssf/transmitter.py`, PyJWT with an RSA key served as a JWKS) pushes SETs to the real
//! server's `POST /ssf/receive`: CAEP `session-revoked` ends a human's sessions, RISC
//! `credential-compromise` deactivates a human (and the grant-less agent they own becomes an
//! orphan); a replay, a wrong audience, an unknown issuer or a forged key are refused with
//! RFC 8935 errors; an unknown subject is accepted and changes nothing; a SET Remit cannot act on
//! for now (its transmitter's keys unreachable) is a 503 and acted on when sent again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const COMPROMISE: &str = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
const ISSUER: &str = "https://idp.example.com";
const ISSUER2: &str = "https://idp2.example.com";

struct Jwks(Child);

impl Drop for Jwks {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_identity_providers_signals_end_sessions_and_deactivate_humans() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("idp");
    std::fs::create_dir_all(&keys).unwrap();
    let script = common::repo().join("tests/ssf/transmitter.py");
    let mut child = Command::new(common::python())
        .arg(&script)
        .args(["serve", keys.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let _jwks = Jwks(child);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A second transmitter whose key set is not served yet (a port nothing listens on).
    let keys2 = dir.path().join("idp2");
    std::fs::create_dir_all(&keys2).unwrap();
    let port2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = format!(
        "[[ssf_transmitters]]\nissuer = \"{ISSUER}\"\njwks_uri = \"http://127.0.0.1:{}/jwks\"\naudience = \"https://remit.example\"\n\
         [[ssf_transmitters]]\nissuer = \"{ISSUER2}\"\njwks_uri = \"http://127.0.0.1:{port2}/jwks\"\naudience = \"https://remit.example\"\n",
        port.trim()
    );
    std::fs::write(data.join("remit.toml"), conf).unwrap();
    let s = common::serve(&data, &[], &[]);
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Two local humans, signed in; Carol owns an agent.
    let sign_in = |email: &str| -> (String, String) {
        rt.block_on(async {
            let body = json!({"email": email, "roles": ["auditor"], "password": "correct horse battery staple"});
            let h: Value = http
                .post(format!("{}/v1/humans", s.url))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let creds = json!({"email": email, "password": "correct horse battery staple"});
            let t: Value =
                http.post(format!("{}/v1/auth/local", s.url)).json(&creds).send().await.unwrap().json().await.unwrap();
            (h["id"].as_str().unwrap().to_owned(), t["access_token"].as_str().unwrap().to_owned())
        })
    };
    let (_, dana) = sign_in("dana@example.com");
    let (carol_id, carol) = sign_in("carol@example.com");
    common::remit_json(
        &s.url,
        &data,
        &["workflow", "create", "w", "--purpose", "p", "--owner", "carol@example.com"],
        None,
    );
    common::remit_json(
        &s.url,
        &data,
        &["agent", "create", "bot", "--workflow", "w", "--owner", "carol@example.com"],
        None,
    );
    let session_ok = |token: &str| -> u16 {
        rt.block_on(async {
            http.get(format!("{}/v1/auth/session", s.url)).bearer_auth(token).send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(session_ok(&dana), 200);

    let url = format!("{}/ssf/receive", s.url);
    let send = |issuer: &str, aud: &str, event: &str, subject: Value, payload: Value, jti: Option<&str>| -> Value {
        let mut c = Command::new(common::python());
        c.arg(&script).args(["send", keys.to_str().unwrap(), &url, issuer, aud, event]);
        c.args([subject.to_string(), payload.to_string()]);
        if let Some(j) = jti {
            c.arg(j);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let aud = "https://remit.example";
    let email = |e: &str| json!({"format": "email", "email": e});

    // session-revoked for Dana: her session ends; a replay of the same SET is refused.
    let r = send(
        ISSUER,
        aud,
        SESSION_REVOKED,
        email("dana@example.com"),
        json!({"initiating_entity": "admin"}),
        Some("set-1"),
    );
    assert_eq!(r["status"], 202, "{r}");
    assert_eq!(session_ok(&dana), 401);
    let r = send(ISSUER, aud, SESSION_REVOKED, email("dana@example.com"), json!({}), Some("set-1"));
    assert_eq!((r["status"].as_u64(), r["body"]["err"].as_str()), (Some(400), Some("invalid_request")), "{r}");

    // Refusals: another audience, an unknown transmitter.
    let r = send(ISSUER, "https://elsewhere.example", SESSION_REVOKED, email("carol@example.com"), json!({}), None);
    assert_eq!(r["body"]["err"], "invalid_audience", "{r}");
    let r = send(
        "https://rogue.example",
        aud,
        COMPROMISE,
        email("carol@example.com"),
        json!({"credential_type": "password"}),
        None,
    );
    assert_eq!(r["body"]["err"], "invalid_issuer", "{r}");
    assert_eq!(session_ok(&carol), 200, "refused signals change nothing");
    // An unknown subject is accepted (no probing) and changes nothing.
    let r = send(ISSUER, aud, SESSION_REVOKED, email("nobody@example.com"), json!({}), None);
    assert_eq!(r["status"], 202);

    // Carol's credentials are compromised (subject as a complex subject's user): deactivated.
    let complex = json!({"format": "complex", "user": email("carol@example.com")});
    let r = send(ISSUER, aud, COMPROMISE, complex, json!({"credential_type": "password"}), None);
    assert_eq!(r["status"], 202, "{r}");
    assert_eq!(session_ok(&carol), 401);
    let h = rt.block_on(async {
        let r = http.get(format!("{}/v1/humans/{carol_id}", s.url)).bearer_auth(&admin).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    });
    assert_eq!(h["human"]["state"], "deactivated");
    let orphans = rt.block_on(async {
        let r = http.get(format!("{}/v1/orphans", s.url)).bearer_auth(&admin).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    });
    assert!(orphans["agents"].as_array().unwrap().iter().any(|a| a["name"] == "bot"), "{orphans}");

    // A SET signed by another key (the same kid) is refused.
    let forged = dir.path().join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    let o = Command::new(common::python())
        .arg(&script)
        .args(["send", forged.to_str().unwrap(), &url, ISSUER, aud, SESSION_REVOKED])
        .args([email("dana@example.com").to_string(), "{}".into()])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["body"]["err"], "invalid_key", "{r}");

    // The second transmitter's keys cannot be fetched: Remit's trouble, not the SET's — a 503
    // with Retry-After, nothing done, the SET not spent. Once its keys are served, the same SET
    // (same jti) is acted on.
    let (_, erin) = sign_in("erin@example.com");
    let send2 = || -> Value {
        let o = Command::new(common::python())
            .arg(&script)
            .args(["send", keys2.to_str().unwrap(), &url, ISSUER2, aud, SESSION_REVOKED])
            .args([email("erin@example.com").to_string(), "{}".into(), "idp2-set-1".into()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let r = send2();
    assert_eq!((r["status"].as_u64(), r["body"]["err"].as_str()), (Some(503), Some("temporarily_unavailable")), "{r}");
    assert_eq!(session_ok(&erin), 200, "nothing done");
    let mut child2 = Command::new(common::python())
        .arg(&script)
        .args(["serve", keys2.to_str().unwrap(), &port2.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child2.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _jwks2 = Jwks(child2);
    let r = send2();
    assert_eq!(r["status"], 202, "the retried SET is acted on: {r}");
    assert_eq!(session_ok(&erin), 401);
    let r = send2();
    assert_eq!(
        (r["status"].as_u64(), r["body"]["err"].as_str()),
        (Some(400), Some("invalid_request")),
        "now spent: {r}"
    );

    // Every SET received is in the audit log, the token never.
    let audit = common::remit_json(&s.url, &data, &["audit", "list", "--action", "ssf.receive"], None);
    let recs = audit.as_array().unwrap();
    assert_eq!(recs.len(), 4, "the accepted ones: {audit}");
    assert!(recs.iter().all(|r| !r.to_string().contains("eyJ")), "no SET in a record");
    assert!(recs.iter().any(|r| r["actor"] == format!("ssf:{ISSUER}")));
}
