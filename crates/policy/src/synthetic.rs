//! A generated bundle and entities of a known shape, for benchmarks and load tests (feature
//! `testing`): `n`
//! application policies (`act{i}`: a user with role `r{i % 5}` on a todo it owns), one
//! admin permit and one forbid, over `Human` and `Todo`.

use serde_json::{Value, json};

use super::{Bundle, PolicyFile};

pub fn bundle(n: usize) -> Bundle {
    let mut src = String::new();
    let mut actions = Vec::new();
    for i in 0..n {
        actions.push(format!("\"act{i}\""));
        src.push_str(&format!(
            "@id(\"p{i}\") permit (principal is Human, action == Action::\"act{i}\", resource is Todo) when {{ \
             principal has roles && principal.roles.contains(\"r{}\") && principal has email && \
             resource has ownerID && resource.ownerID == principal.email }};\n",
            i % 5
        ));
    }
    src.push_str("@id(\"admins\") permit (principal is Human, action, resource is Todo) when { principal has roles && principal.roles.contains(\"admin\") };\n");
    src.push_str("@id(\"banned\") forbid (principal is Human, action, resource) when { principal has roles && principal.roles.contains(\"banned\") };\n");
    let schema = format!(
        "entity Todo {{ ownerID?: String }};\naction {} appliesTo {{ principal: [Human], resource: [Todo] }};\n",
        actions.join(", ")
    );
    Bundle { policies: vec![PolicyFile { name: "synthetic.cedar".into(), source: src }], schema, ..Default::default() }
}

/// User `i` (`u{i}@example.com`, role `r{i % 5}`), in Cedar entity JSON.
pub fn user(i: usize) -> Value {
    json!({"uid": {"type": "Human", "id": format!("u{i}@example.com")},
           "attrs": {"email": format!("u{i}@example.com"), "roles": [format!("r{}", i % 5)]}, "parents": []})
}

/// Todo `i`, owned by user `i % users`.
pub fn todo(i: usize, users: usize) -> Value {
    json!({"uid": {"type": "Todo", "id": format!("todo-{i}")},
           "attrs": {"ownerID": format!("u{}@example.com", i % users.max(1))}, "parents": []})
}
