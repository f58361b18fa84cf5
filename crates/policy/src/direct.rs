//! Cedar values built straight from JSON, reading it the way Cedar's schemaless JSON format
//! does (`__entity` and `__extn` escapes, integers as `Long`, arrays as sets, objects as
//! records) without Cedar's intermediate JSON representation, which costs several times
//! more. `None` for anything else (floats, nulls, multi-argument extension calls, …): the
//! caller then uses Cedar's parser, which gives the exact answer or error.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entity, EntityUid, RestrictedExpression};
use serde_json::Value;

/// Deepest nesting built directly (deeper goes to Cedar's parser).
const MAX_DEPTH: usize = 32;

fn uid_of(v: &Value) -> Option<EntityUid> {
    let m = v.as_object()?;
    if m.len() != 2 {
        return None;
    }
    let (t, i) = (m.get("type")?.as_str()?, m.get("id")?.as_str()?);
    super::uid(t, i).ok()
}

/// One attribute or context value.
pub fn expr(v: &Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_DEPTH {
        return None;
    }
    match v {
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::Array(a) => {
            a.iter().map(|x| expr(x, depth + 1)).collect::<Option<Vec<_>>>().map(RestrictedExpression::new_set)
        }
        Value::Object(m) if m.contains_key("__entity") || m.contains_key("__extn") || m.contains_key("__expr") => {
            if m.len() != 1 {
                return None;
            }
            if let Some(e) = m.get("__entity") {
                return uid_of(e).map(RestrictedExpression::new_entity_uid);
            }
            let x = m.get("__extn")?.as_object()?;
            if x.len() != 2 {
                return None;
            }
            let arg = x.get("arg")?.as_str()?;
            match x.get("fn")?.as_str()? {
                "ip" => Some(RestrictedExpression::new_ip(arg)),
                "decimal" => Some(RestrictedExpression::new_decimal(arg)),
                "datetime" => Some(RestrictedExpression::new_datetime(arg)),
                "duration" => Some(RestrictedExpression::new_duration(arg)),
                _ => None,
            }
        }
        Value::Object(m) => {
            let fields = m.iter().map(|(k, v)| Some((k.clone(), expr(v, depth + 1)?))).collect::<Option<Vec<_>>>()?;
            RestrictedExpression::new_record(fields).ok()
        }
        Value::Null => None,
    }
}

/// One Cedar-JSON entity object (`uid`, `attrs`, `parents`; no `tags`).
pub fn entity(v: &Value) -> Option<Entity> {
    let m = v.as_object()?;
    if m.keys().any(|k| !matches!(k.as_str(), "uid" | "attrs" | "parents")) {
        return None;
    }
    let uid = m.get("uid").and_then(|u| uid_of(u).or_else(|| uid_of(u.as_object()?.get("__entity")?)))?;
    let attrs = match m.get("attrs") {
        None => HashMap::new(),
        Some(a) => {
            a.as_object()?.iter().map(|(k, v)| Some((k.clone(), expr(v, 0)?))).collect::<Option<HashMap<_, _>>>()?
        }
    };
    let parents = match m.get("parents") {
        None => HashSet::new(),
        Some(p) => p
            .as_array()?
            .iter()
            .map(|p| uid_of(p).or_else(|| uid_of(p.as_object()?.get("__entity")?)))
            .collect::<Option<HashSet<_>>>()?,
    };
    Entity::new(uid, attrs, parents).ok()
}
