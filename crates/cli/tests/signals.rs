//! Shared Signals end to end: the real server, a tool registering a push stream, and an
//! independent receiver (`tests/ssf/receiver.py`, PyJWT against the JWKS) that must get a
//! signed CAEP `session-revoked` for every killed task — before and after a restart, and for a
//! kill made while it was down, after Remit itself was SIGKILLed in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const PUSH: &str = "urn:ietf:rfc:8935";

struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, config: &Path, issuer: &str, auth: &str) -> Receiver {
        let out = dir.join("received.jsonl");
        let script = common::repo().join("tests/ssf/receiver.py");
        let mut child = Command::new(common::python())
            .arg(script)
            .args(["push", out.to_str().unwrap(), config.to_str().unwrap(), issuer, auth])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Receiver { child, out, port: line.trim().parse().unwrap() }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (a hang guard, not a performance bound) for a verified SET matching `want`.
    fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.lines();
            assert!(got.iter().all(|l| l.get("error").is_none()), "the receiver refused a SET: {got:?}");
            if let Some(v) = got.into_iter().find(|l| want(l)) {
                return v;
            }
            assert!(Instant::now() < end, "no {what} reached the receiver: {:?}", self.lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn task_uri(td: &str, task: &str) -> String {
    format!("spiffe://{td}/workflow/w/task/{task}")
}

#[test]
fn a_receiver_gets_a_signed_session_revoked_for_every_kill_across_restarts() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Tools may push only to allowed hosts; this receiver is on loopback.
    std::fs::write(data.join("remit.toml"), "[governance]\npush_allow = [\"127.0.0.1\"]\n").unwrap();
    let mut s = common::serve(&data, &[], &[]);
    let run = |url: &str, args: &[&str]| common::remit_json(url, &data, args, None);
    #[rustfmt::skip]
    let tool = run(&s.url, &["tool", "create", "tickets", "--audience", "https://tickets.example", "--scope", "read",
                              "--owner", "o@example.com"]);
    run(&s.url, &["workflow", "create", "w", "--purpose", "p", "--owner", "alice@example.com", "--tool", "tickets"]);
    run(&s.url, &["agent", "create", "bot", "--workflow", "w", "--owner", "alice@example.com"]);
    let tool_secret = tool["introspection_secret"].as_str().unwrap().to_owned();
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let jt = run(&s.url, &["agent", "join-token", "bot"]);

    let meta: Value = rt.block_on(async {
        http.get(format!("{}/.well-known/ssf-configuration", s.url)).send().await.unwrap().json().await.unwrap()
    });
    let issuer = meta["issuer"].as_str().unwrap().to_owned();
    assert_eq!(meta["spec_version"], "1_0");
    assert_eq!(meta["delivery_methods_supported"], json!([PUSH, "urn:ietf:rfc:8936"]));
    let td = run(&s.url, &["status"])["trust_domain"].as_str().unwrap().to_owned();

    let config = dir.path().join("receiver.json");
    let rcv = Receiver::start(dir.path(), &config, &issuer, "Bearer rcv-secret");

    // The tool registers a push stream; unknown event types are ignored, the audience is its own.
    let stream: Value = rt.block_on(async {
        let body = json!({
            "delivery": {"method": PUSH, "endpoint_url": format!("http://127.0.0.1:{}/events", rcv.port),
                         "authorization_header": "Bearer rcv-secret"},
            "events_requested": [SESSION_REVOKED, CREDENTIAL_CHANGE, "urn:example:unknown"],
            "description": "tickets gateway",
        });
        let r = http.post(format!("{}/ssf/streams", s.url)).bearer_auth(&tool_secret).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    });
    let sid = stream["stream_id"].as_str().unwrap().to_owned();
    // The stream's own audience: never the tool's access-token audience.
    let aud = stream["aud"].as_str().unwrap().to_owned();
    assert!(aud.ends_with(&format!("/ssf/receivers/{sid}")), "{aud}");
    let configure = |url: &str| {
        let c = json!({"jwks": format!("{url}/.well-known/jwks.json"), "aud": aud});
        std::fs::write(&config, c.to_string()).unwrap();
    };
    configure(&s.url);
    assert_eq!(stream["iss"], issuer.as_str());
    assert_eq!(stream["events_delivered"], json!([SESSION_REVOKED, CREDENTIAL_CHANGE]));
    assert!(!stream.to_string().contains("rcv-secret"), "the push authorization is never shown again");
    rt.block_on(async {
        // A push endpoint on a host not in `push_allow` is refused for a tool.
        let body = json!({"delivery": {"method": PUSH, "endpoint_url": "https://169.254.169.254/latest"}});
        let r = http.post(format!("{}/ssf/streams", s.url)).bearer_auth(&tool_secret).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403);
    });
    rt.block_on(async {
        // Its own streams as an array; an administrator's receiver does not see it; another
        // receiver's id is a 404; a task token is no receiver.
        let mine: Value = http
            .get(format!("{}/ssf/streams", s.url))
            .bearer_auth(&tool_secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(mine.as_array().unwrap().len(), 1);
        let theirs: Value =
            http.get(format!("{}/ssf/streams", s.url)).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        assert_eq!(theirs, json!([]));
        let r = http.get(format!("{}/ssf/status?stream_id={sid}", s.url)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 404);
        // A verification event, then a second one too soon.
        let v = json!({"stream_id": sid, "state": "c3RhdGU"});
        let r = http.post(format!("{}/ssf/verify", s.url)).bearer_auth(&tool_secret).json(&v).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = http.post(format!("{}/ssf/verify", s.url)).bearer_auth(&tool_secret).json(&v).send().await.unwrap();
        assert_eq!(r.status(), 429);
    });
    let v = rcv.wait_for("verification", |l| l["event"] == VERIFICATION);
    assert_eq!(v["payload"], json!({"state": "c3RhdGU"}));
    assert_eq!(v["sub_id"], json!({"format": "opaque", "id": sid}));

    // An administrator's poll stream, to see the same revocations by RFC 8936.
    let poll_stream: Value = rt.block_on(async {
        let body = json!({"events_requested": [SESSION_REVOKED]});
        let r = http.post(format!("{}/ssf/streams", s.url)).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    });
    assert_eq!(poll_stream["delivery"]["method"], "urn:ietf:rfc:8936");
    // A tool no workflow of these tasks lists: its stream must hear nothing of them.
    #[rustfmt::skip]
    let other = run(&s.url, &["tool", "create", "other", "--audience", "https://other.example", "--scope", "read",
                               "--owner", "o@example.com"]);
    let other_secret = other["introspection_secret"].as_str().unwrap().to_owned();
    let other_stream: Value = rt.block_on(async {
        let body = json!({"events_requested": [SESSION_REVOKED]});
        let r =
            http.post(format!("{}/ssf/streams", s.url)).bearer_auth(&other_secret).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    });

    let join = |url: &str| -> String {
        rt.block_on(async {
            let r = http.post(format!("{url}/v1/join")).json(&json!({"join_token": jt["token"]})).send().await.unwrap();
            let inst: Value = r.json().await.unwrap();
            inst["token"].as_str().unwrap().to_owned()
        })
    };
    let inst = join(&s.url);
    let start = |url: &str| -> (String, String) {
        rt.block_on(async {
            let b = json!({"workflow": "w", "intent": "triage", "audience": ["remit"], "ttl_seconds": 300});
            let r = http.post(format!("{url}/v1/tasks")).bearer_auth(&inst).json(&b).send().await.unwrap();
            let t: Value = r.json().await.unwrap();
            (t["task"]["id"].as_str().unwrap().to_owned(), t["token"].as_str().unwrap().to_owned())
        })
    };
    let kill = |url: &str, task: &str| -> Instant {
        let at = Instant::now();
        rt.block_on(async {
            let r = http
                .post(format!("{url}/v1/tasks/{task}/revoke"))
                .bearer_auth(&admin)
                .json(&json!({"reason": "contained"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        });
        at
    };

    // 1. A kill reaches the receiver as a signed session-revoked naming the task's SPIFFE ID.
    let (t1, t1_token) = start(&s.url);
    let at = kill(&s.url, &t1);
    let got = rcv.wait_for("t1's session-revoked", |l| l["sub_id"]["uri"] == task_uri(&td, &t1).as_str());
    eprintln!("kill → SET received: {:?}", at.elapsed());
    assert_eq!(got["event"], SESSION_REVOKED);
    assert_eq!(got["sub_id"]["format"], "uri");
    assert_eq!(got["payload"]["initiating_entity"], "admin");
    assert_eq!(got["payload"]["reason_admin"]["en"], "contained");

    // The poll stream has it too; a SET is never a credential for Remit.
    rt.block_on(async {
        let url = poll_stream["delivery"]["endpoint_url"].as_str().unwrap();
        let r: Value = http
            .post(url)
            .bearer_auth(&admin)
            .json(&json!({"returnImmediately": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let set = r["sets"].as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned();
        let r = http.get(format!("{}/v1/tasks", s.url)).bearer_auth(&set).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .post(format!("{}/oauth2/introspect", s.url))
            .bearer_auth(&admin)
            .form(&[("token", set.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
        // The revoked task's token is refused as well.
        let r = http.get(format!("{}/v1/tasks/{t1}", s.url)).bearer_auth(&t1_token).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
    let polled = Command::new(common::python())
        .arg(common::repo().join("tests/ssf/receiver.py"))
        .args(["poll", poll_stream["delivery"]["endpoint_url"].as_str().unwrap(), &admin])
        .arg(format!("{}/.well-known/jwks.json", s.url))
        .args([&issuer, poll_stream["aud"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(polled.status.success(), "{}", String::from_utf8_lossy(&polled.stderr));
    let polled: Value = serde_json::from_slice(&polled.stdout).unwrap();
    assert!(polled.as_array().unwrap().iter().any(|l| l["sub_id"]["uri"] == task_uri(&td, &t1).as_str()), "{polled}");

    // 2. Restarted: the stream and its receiver carry on.
    drop(s);
    s = common::serve(&data, &[], &[]);
    configure(&s.url);
    let (t2, _) = start(&s.url);
    let at = kill(&s.url, &t2);
    rcv.wait_for("t2's session-revoked", |l| l["sub_id"]["uri"] == task_uri(&td, &t2).as_str());
    eprintln!("after a restart, kill → SET received: {:?}", at.elapsed());

    // 3. The receiver is down when a task is killed; Remit is SIGKILLed before it could deliver;
    //    after the restart, the SET still arrives (the outbox is in the store).
    std::fs::write(rcv.out.with_extension("jsonl.down"), "").unwrap();
    let (t3, _) = start(&s.url);
    kill(&s.url, &t3);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(!rcv.lines().iter().any(|l| l["sub_id"]["uri"] == task_uri(&td, &t3).as_str()));
    drop(s);
    std::fs::remove_file(rcv.out.with_extension("jsonl.down")).unwrap();
    let s = common::serve(&data, &[], &[]);
    configure(&s.url);
    rcv.wait_for("t3's session-revoked after the restart", |l| l["sub_id"]["uri"] == task_uri(&td, &t3).as_str());
    // Each event once: a SET re-made from the same audit record would carry the same `txn`.
    let events: Vec<String> = rcv.lines().iter().map(|l| format!("{} {}", l["event"], l["txn"])).collect();
    let mut unique = events.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(events.len(), unique.len(), "an event was delivered twice: {events:?}");

    rt.block_on(async {
        let url = format!("{}/ssf/poll/{}", s.url, other_stream["stream_id"].as_str().unwrap());
        let r: Value = http
            .post(url)
            .bearer_auth(&other_secret)
            .json(&json!({"returnImmediately": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["sets"], json!({}), "another tool heard of these tasks");
    });

    // The audit log says who made and changed streams, never the push authorization.
    let audit = std::process::Command::new(common::BIN)
        .args(["--json", "audit", "export"])
        .env("REMIT_URL", &s.url)
        .env("REMIT_DATA_DIR", &data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("ssf.stream_create"), "{text}");
    assert!(!text.contains("rcv-secret"));
}
