//! One decision, in process: plain Cedar `is_authorized` (the reference: the same request and
//! the same 52-policy set over all 1,000 entities, prebuilt) beside Remit's engine, which
//! builds the request's entities (principal and resource only, from JSON, as the server does
//! per request) and decides. One run, so the overhead reads off directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, PolicySet, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use remit_policy::{Bundle, Engine};
use serde_json::Value;

const POLICIES: usize = 50;
const USERS: usize = 500;
const TODOS: usize = 500;

fn bundle() -> Bundle {
    remit_policy::synthetic::bundle(POLICIES)
}

fn user(i: usize) -> Value {
    remit_policy::synthetic::user(i)
}

fn todo(i: usize) -> Value {
    remit_policy::synthetic::todo(i, USERS)
}

fn bench(c: &mut Criterion) {
    let b = bundle();
    let engine = Engine::compile(1, &b).unwrap();
    assert_eq!(engine.len(), POLICIES + 2);
    let all: Vec<Value> = (0..USERS).map(user).chain((0..TODOS).map(todo)).collect();
    let all_entities = Entities::from_json_value(Value::Array(all), None).unwrap();
    // The request: user 7 (role r2) acts on its own todo with act2: allowed by p2.
    let (p, a, r) = (
        remit_policy::uid("Human", "u7@example.com").unwrap(),
        remit_policy::action("act2").unwrap(),
        remit_policy::uid("Todo", "todo-7").unwrap(),
    );
    let policies: PolicySet = engine.policies().clone();
    let authorizer = Authorizer::new();
    let req = Request::new(p.clone(), a.clone(), r.clone(), Context::empty(), None).unwrap();
    assert_eq!(authorizer.is_authorized(&req, &policies, &all_entities).decision(), cedar_policy::Decision::Allow);

    let mut g = c.benchmark_group("decision_52_policies_1000_entities");
    g.bench_function("raw_cedar_is_authorized_prebuilt_entities", |bch| {
        bch.iter(|| black_box(authorizer.is_authorized(black_box(&req), &policies, &all_entities)))
    });
    g.bench_function("remit_engine_decide_prebuilt_entities", |bch| {
        bch.iter(|| black_box(engine.decide(p.clone(), a.clone(), r.clone(), Context::empty(), &all_entities)))
    });
    g.bench_function("remit_engine_decide_request_entities_from_json", |bch| {
        bch.iter(|| {
            let ents = remit_policy::entities(vec![user(7), todo(7)]).unwrap();
            black_box(engine.decide(p.clone(), a.clone(), r.clone(), Context::empty(), &ents))
        })
    });
    g.finish();
    // Parsing the policy set, for scale: what a push costs.
    c.bench_function("compile_and_validate_52_policies", |bch| bch.iter(|| black_box(Engine::compile(1, &b).unwrap())));
    let _ = PolicySet::from_str("");
}

criterion_group!(benches, bench);
criterion_main!(benches);
