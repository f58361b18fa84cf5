//! Printing: JSON with `--json`, otherwise short human text and aligned tables.

use serde_json::Value;

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

/// Prints `key: value` lines for the given keys of an object.
pub fn fields(v: &Value, keys: &[&str]) {
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    for k in keys {
        let val = match v.get(*k) {
            None | Some(Value::Null) => "-".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
        };
        println!("{:<width$}  {val}", format!("{k}:"), width = width + 1);
    }
}

/// Prints what a kill switch ended.
pub fn kill_report(what: &str, v: &Value) {
    let n = |k: &str| v.get(k).and_then(Value::as_array).map(Vec::len).unwrap_or(0);
    println!("{what}: {} task(s) and {} instance(s) revoked", n("tasks_revoked"), n("instances_revoked"));
    if let Some(l) = v.get("leases_pending").and_then(Value::as_u64).filter(|l| *l > 0) {
        println!("{l} database login(s) being removed in the background (`remit lease list --state revoking`)");
    }
}
