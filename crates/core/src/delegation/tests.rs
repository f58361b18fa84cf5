//! Unit tests and property tests of delegation: over random delegation trees and random
//! widening attempts, no node ever holds a tool, scope, resource, TTL, depth or sensitivity
//! its parent lacks; every node's chain names every ancestor; an exchanged credential never
//! exceeds its task.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::model::{TaskState, WorkflowState};
use crate::tool::{Allowance, NewTool, exchange, new_tool};

const TOOLS: [&str; 4] = ["jira", "wiki", "db", "mail"];
const SCOPES: [&str; 3] = ["read", "write", "delete"];
const PREFIXES: [&str; 4] = ["", "proj/", "proj/a/", "other/"];
const AGENTS: [&str; 3] = ["sup", "worker", "helper"];

fn agent(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

fn wf(max_depth: u32) -> Workflow {
    Workflow {
        name: crate::ids::WorkflowName::parse("wf").unwrap(),
        purpose: "p".into(),
        owner: "a@b".into(),
        owner_id: None,
        orphaned_at: None,
        ceiling: Sensitivity::Restricted,
        allowed_tools: vec![],
        max_task_ttl_secs: 3600,
        max_delegation_depth: max_depth,
        trust: Default::default(),
        state: WorkflowState::Active,
        created_at: UnixMillis(0),
        updated_at: UnixMillis(0),
    }
}

fn task(n: u8, agent_name: &str, expires_secs: u64, s: Sensitivity, d: Delegation) -> Task {
    Task {
        id: TaskId::from_random([n; 16]),
        workflow: crate::ids::WorkflowName::parse("wf").unwrap(),
        agent: agent(agent_name),
        instance: None,
        parent: d.chain.last().map(|h| h.task.clone()),
        intent: "x".into(),
        intent_hash: String::new(),
        sensitivity: s,
        audience: vec![],
        state: TaskState::Active,
        started_by: "admin".into(),
        created_at: UnixMillis(0),
        expires_at: UnixMillis(0).plus_secs(expires_secs),
        ended_at: None,
        end_reason: None,
        delegation: d,
    }
}

fn everyone() -> TrustRules {
    TrustRules {
        delegations: vec![DelegationRule { from: "*".into(), to: vec!["*".into()] }],
        workers_may_delegate: true,
        require_dpop: false,
        env_credentials: Default::default(),
    }
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_child_narrows_and_names_its_chain() {
    let root = task(1, "sup", 600, Sensitivity::Confidential, Delegation::default());
    let req = ChildRequest {
        tools: Some(set(&["jira"])),
        scopes: Some(set(&["read"])),
        resource_prefix: Some("proj/".into()),
        max_calls: Some(5),
        ttl_secs: Some(60),
        ..Default::default()
    };
    let c = child(&root, &wf(3), &everyone(), &agent("worker"), &req, UnixMillis(0)).unwrap();
    assert_eq!(c.delegation.depth, 1);
    assert_eq!(c.delegation.chain, vec![Hop { task: root.id.clone(), agent: agent("sup") }]);
    assert_eq!(c.delegation.authority.tools, Some(set(&["jira"])));
    assert_eq!(c.sensitivity, Sensitivity::Confidential);
    assert_eq!(c.expires_by, root.expires_at);
    // The grandchild cannot widen what the child holds; each refusal names the attribute.
    let kid = task(2, "worker", 60, c.sensitivity, c.delegation);
    let widen = |r: ChildRequest| child(&kid, &wf(3), &everyone(), &agent("helper"), &r, UnixMillis(0)).unwrap_err();
    assert!(widen(ChildRequest { tools: Some(set(&["wiki"])), ..Default::default() }).to_string().contains("`tools`"));
    assert!(
        widen(ChildRequest { scopes: Some(set(&["write"])), ..Default::default() }).to_string().contains("`scopes`")
    );
    let w = widen(ChildRequest { resource_prefix: Some("other/".into()), ..Default::default() });
    assert!(w.to_string().contains("`resource_prefix`"));
    assert!(widen(ChildRequest { max_calls: Some(6), ..Default::default() }).to_string().contains("`max_calls`"));
    assert!(widen(ChildRequest { ttl_secs: Some(61), ..Default::default() }).to_string().contains("`ttl`"));
    let w = widen(ChildRequest { sensitivity: Some(Sensitivity::Restricted), ..Default::default() });
    assert!(w.to_string().contains("`sensitivity`"));
    // Depth and trust.
    assert!(matches!(
        child(&kid, &wf(1), &everyone(), &agent("helper"), &ChildRequest::default(), UnixMillis(0)),
        Err(Widen::Depth { .. })
    ));
    let no_workers = TrustRules { workers_may_delegate: false, ..everyone() };
    assert_eq!(
        child(&kid, &wf(3), &no_workers, &agent("helper"), &ChildRequest::default(), UnixMillis(0)),
        Err(Widen::NoRedelegation)
    );
    let sup_only = TrustRules {
        delegations: vec![DelegationRule { from: "sup".into(), to: vec!["worker".into()] }],
        workers_may_delegate: true,
        require_dpop: false,
        env_credentials: Default::default(),
    };
    assert!(matches!(
        child(&root, &wf(3), &sup_only, &agent("helper"), &ChildRequest::default(), UnixMillis(0)),
        Err(Widen::Untrusted { .. })
    ));
    assert!(matches!(
        child(&root, &wf(3), &TrustRules::default(), &agent("worker"), &ChildRequest::default(), UnixMillis(0)),
        Err(Widen::Untrusted { .. })
    ));
}

#[test]
fn authority_admits_only_what_was_delegated() {
    let a = Authority {
        tools: Some(set(&["jira"])),
        scopes: Some(set(&["read"])),
        resource_prefix: Some("proj/".into()),
        max_calls: None,
        may_delegate: false,
    };
    assert!(a.admits("read", Some("jira"), Some("proj/1")).is_ok());
    assert!(a.admits("read", Some("wiki"), Some("proj/1")).is_err());
    assert!(a.admits("write", Some("jira"), Some("proj/1")).is_err());
    assert!(a.admits("read", Some("jira"), Some("other/1")).is_err());
    assert!(a.admits("read", Some("jira"), None).is_err());
    assert!(Authority::default().admits("anything", None, None).is_ok());
}

fn opt_subset(pool: &'static [&'static str]) -> impl Strategy<Value = Option<BTreeSet<String>>> {
    proptest::option::of(proptest::sample::subsequence(pool.to_vec(), 0..=pool.len()))
        .prop_map(|o| o.map(|v| v.into_iter().map(str::to_owned).collect()))
}

fn request() -> impl Strategy<Value = (ChildRequest, usize)> {
    (
        opt_subset(&TOOLS),
        opt_subset(&SCOPES),
        proptest::option::of(proptest::sample::select(PREFIXES.to_vec())),
        proptest::option::of(0u64..20),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u64..900),
        proptest::option::of(0usize..4),
        0usize..AGENTS.len(),
    )
        .prop_map(|(tools, scopes, prefix, max_calls, may_delegate, ttl, s, agent)| {
            let sens = [Sensitivity::Public, Sensitivity::Internal, Sensitivity::Confidential, Sensitivity::Restricted];
            (
                ChildRequest {
                    tools,
                    scopes,
                    resource_prefix: prefix.map(str::to_owned),
                    max_calls,
                    may_delegate,
                    ttl_secs: ttl,
                    sensitivity: s.map(|i| sens[i]),
                },
                agent,
            )
        })
}

fn within(child: &Option<BTreeSet<String>>, parent: &Option<BTreeSet<String>>) -> bool {
    match (child, parent) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(c), Some(p)) => c.is_subset(p),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_trees_only_narrow(steps in proptest::collection::vec((0usize..64, request()), 1..40), max_depth in 0u32..5) {
        let workflow = wf(max_depth);
        let trust = everyone();
        let mut nodes = vec![task(0, "sup", 600, Sensitivity::Confidential, Delegation::default())];
        for (i, (pick, (req, a))) in steps.into_iter().enumerate() {
            let parent = nodes[pick % nodes.len()].clone();
            let now = UnixMillis(0);
            match child(&parent, &workflow, &trust, &agent(AGENTS[a]), &req, now) {
                Ok(c) => {
                    let pa = &parent.delegation.authority;
                    let ca = &c.delegation.authority;
                    prop_assert!(within(&ca.tools, &pa.tools));
                    prop_assert!(within(&ca.scopes, &pa.scopes));
                    if let Some(p) = &pa.resource_prefix {
                        prop_assert!(ca.resource_prefix.as_deref().is_some_and(|c| c.starts_with(p.as_str())));
                    }
                    if let Some(p) = pa.max_calls {
                        prop_assert!(ca.max_calls.is_some_and(|c| c <= p));
                    }
                    prop_assert!(!ca.may_delegate || pa.may_delegate);
                    prop_assert!(c.sensitivity <= parent.sensitivity);
                    prop_assert!(c.expires_by <= parent.expires_at);
                    prop_assert!(c.delegation.depth == parent.delegation.depth + 1);
                    prop_assert!(c.delegation.depth <= max_depth);
                    // The chain names every ancestor, root first.
                    let mut expect = parent.delegation.chain.clone();
                    expect.push(Hop { task: parent.id.clone(), agent: parent.agent.clone() });
                    prop_assert_eq!(&c.delegation.chain, &expect);
                    prop_assert_eq!(c.delegation.chain.first().map(|h| &h.task), Some(&nodes[0].id));
                    let ttl = req.ttl_secs.unwrap_or(60).min(u64::try_from(c.expires_by.0 / 1000).unwrap_or(0));
                    let n = u8::try_from((i % 250) + 1).unwrap_or(1);
                    nodes.push(task(n, AGENTS[a], ttl, c.sensitivity, c.delegation));
                }
                Err(w) => {
                    // A refusal is only ever for a real widening or a rule.
                    let pa = &parent.delegation.authority;
                    let widened = !within(&req.tools, &pa.tools) && req.tools.is_some()
                        || !within(&req.scopes, &pa.scopes) && req.scopes.is_some()
                        || matches!((&pa.resource_prefix, &req.resource_prefix), (Some(p), Some(c)) if !c.starts_with(p.as_str()))
                        || matches!((pa.max_calls, req.max_calls), (Some(p), Some(c)) if c > p)
                        || (req.may_delegate == Some(true) && !pa.may_delegate)
                        || req.sensitivity.is_some_and(|s| s > parent.sensitivity)
                        || req.ttl_secs.is_some_and(|t| t > u64::try_from(parent.expires_at.0 / 1000).unwrap_or(0))
                        || parent.delegation.depth + 1 > max_depth
                        || !pa.may_delegate;
                    prop_assert!(widened, "refused without cause: {w} for {req:?}");
                }
            }
        }
    }

    #[test]
    fn an_exchanged_credential_never_exceeds_its_task(
        (req, _) in request(),
        requested in opt_subset(&SCOPES),
        max_ttl in 1u64..900,
        task_secs in 1u64..900,
    ) {
        let root = task(0, "sup", 900, Sensitivity::Restricted, Delegation::default());
        let Ok(c) = child(&root, &wf(3), &everyone(), &agent("worker"), &req, UnixMillis(0)) else { return Ok(()) };
        let t = task(1, "worker", task_secs.min(900), c.sensitivity, c.delegation);
        let tool = new_tool(NewTool {
            name: crate::ids::ToolName::parse("jira").unwrap(),
            audience: "https://jira.example".into(),
            scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            max_ttl_secs: Some(max_ttl),
            classification: Sensitivity::Public,
            class: crate::tool::ToolClass::Tool,
            proxy: None,
        database: None,
            owner: "a@b".into(),
            secret_hash: String::new(),
        }, &crate::rules::Limits::default(), UnixMillis(0)).unwrap();
        let a = &t.delegation.authority;
        let allowance = Allowance { workflow_tools: &[], tools: a.tools.as_ref(), scopes: a.scopes.as_ref() };
        let req_scopes: Option<Vec<String>> = requested.map(|s| s.into_iter().collect());
        if let Ok((scopes, exp)) = exchange(&t, &tool, req_scopes.as_deref(), &allowance, UnixMillis(0)) {
            prop_assert!(a.tools.as_ref().is_none_or(|ts| ts.contains("jira")));
            for s in &scopes {
                prop_assert!(tool.scopes.contains(s));
                prop_assert!(a.scopes.as_ref().is_none_or(|d| d.contains(s)));
            }
            prop_assert!(exp <= t.expires_at);
            prop_assert!(exp <= UnixMillis(0).plus_secs(max_ttl));
        }
    }
}
