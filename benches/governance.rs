//! Governance's own costs, each beside a same-run reference: signing a Security Event Token
//! beside a raw ES256 signature of the same bytes; the containment evaluator's cost per
//! observed decision (default rules plus a workflow deny-rate and a task call-spike rule, over
//! 10,000 live tasks) beside a plain Cedar decision on a one-policy set; and a webhook signature
//! (HMAC-SHA256) check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use remit_core::containment::{self, Action, Evaluator, Observation, Rule, Scope, Signal, Subject};
use remit_core::ids::{AgentName, TaskId, WorkflowName};
use remit_core::time::UnixMillis;
use remit_token::SigningKey;

fn set_claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "https://remit.example.com",
        "iat": 1_795_000_000,
        "jti": "0123456789abcdef0123456789abcdef",
        "aud": "https://remit.example.com/ssf/receivers/0123456789abcdef0123456789abcdef",
        "txn": "remit-audit:123456",
        "sub_id": {"format": "uri", "uri": "spiffe://remit.local/workflow/deploy/task/t-0123456789abcdef0123456789abcdef"},
        "events": {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {
            "event_timestamp": 1_795_000_000, "initiating_entity": "admin", "reason_admin": {"en": "contained"}}},
    })
}

fn sets(c: &mut Criterion) {
    let key = SigningKey::generate().unwrap();
    let claims = set_claims();
    let mut g = c.benchmark_group("set");
    g.bench_function("mint_set", |b| b.iter(|| black_box(remit_token::jwt::mint_set(&key, black_box(&claims)))));
    let bytes = serde_json::to_vec(&claims).unwrap();
    g.bench_function("reference_raw_es256_sign", |b| b.iter(|| black_box(key.sign(black_box(&bytes)))));
    g.finish();
}

fn containment(c: &mut Criterion) {
    let mut rules = containment::default_rules();
    rules.push(Rule {
        signal: Signal::DenyRate { scope: Scope::Workflow, window_secs: 60, min_calls: 1_000_000, ratio: 0.9 },
        action: Action::SuspendWorkflow,
    });
    rules.push(Rule {
        signal: Signal::CallSpike { scope: Scope::Task, window_secs: 60, max_calls: 1_000_000 },
        action: Action::SuspendTask,
    });
    let subjects: Vec<Subject> = (0..10_000u32)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            Subject {
                task: TaskId::from_random(b),
                workflow: WorkflowName::parse("deploy").unwrap(),
                agent: AgentName::parse("bot").unwrap(),
            }
        })
        .collect();
    let o = Observation::Decision { denied: false, action: "read".into(), tool: Some("jira".into()) };
    let mut e = Evaluator::default();
    let mut n = 0usize;
    let mut g = c.benchmark_group("containment");
    g.bench_function("observe_decision_10k_tasks", |b| {
        b.iter(|| {
            n += 1;
            let at = UnixMillis(1_795_000_000_000 + (n as i64) / 100);
            black_box(e.observe(&rules, at, &subjects[n % subjects.len()], black_box(&o)))
        })
    });
    // Reference: one plain Cedar decision on a one-policy set.
    let set = PolicySet::from_str("permit (principal, action == Action::\"read\", resource);").unwrap();
    let req = Request::new(
        EntityUid::from_str("Task::\"t-1\"").unwrap(),
        EntityUid::from_str("Action::\"read\"").unwrap(),
        EntityUid::from_str("Tool::\"jira\"").unwrap(),
        Context::empty(),
        None,
    )
    .unwrap();
    let auth = Authorizer::new();
    let entities = Entities::empty();
    g.bench_function("reference_plain_cedar_decision", |b| {
        b.iter(|| black_box(auth.is_authorized(black_box(&req), &set, &entities)))
    });
    g.finish();
}

fn webhook(c: &mut Criterion) {
    let body =
        br#"{"task":"t-0123456789abcdef0123456789abcdef","score":0.95,"source":"detector","reason":"injection"}"#;
    let sig = remit_token::webhook::sign(b"risk-detector-shared-secret-0123456789", 1_795_000_000, body);
    c.bench_function("webhook_verify", |b| {
        b.iter(|| {
            black_box(remit_token::webhook::verify(
                b"risk-detector-shared-secret-0123456789",
                &sig,
                body,
                1_795_000_000,
                300,
            ))
        })
    });
}

criterion_group!(benches, sets, containment, webhook);
criterion_main!(benches);
