//! PATCH (RFC 7644 §3.5.2) over a resource's attributes: `add`, `remove` and `replace`, with
//! paths `attr`, `attr.sub`, `attr[sub eq value]`, `attr[sub eq value].sub` (optionally
//! URN-prefixed) or no path (an object of attributes). Values are type-checked as on POST; a
//! required attribute cannot be removed; a filter that matches nothing is `noTarget`.

use serde_json::{Map, Value};

use super::schema::{self, Attr, Kind, Type};
use super::{PATCH_SCHEMA, ScimError, strip_urn};

/// Most operations in one PATCH.
const MAX_OPS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Remove,
    Replace,
}

/// A parsed path.
struct Path {
    /// `None`: `externalId`.
    attr: Option<&'static Attr>,
    filter: Option<(&'static Attr, Value)>,
    sub: Option<&'static Attr>,
}

fn invalid_path(p: &str) -> ScimError {
    ScimError::bad(
        "invalidPath",
        format!("`{}` is not a path of this resource", remit_core::ids::truncate_for_error(p)),
    )
}

fn parse_path(kind: Kind, raw: &str) -> Result<Path, ScimError> {
    let p = strip_urn(raw.trim());
    if p.eq_ignore_ascii_case("externalId") {
        return Ok(Path { attr: None, filter: None, sub: None });
    }
    let (head, filter, tail) = match p.find('[') {
        Some(i) => {
            let close = p.rfind(']').filter(|c| *c > i).ok_or_else(|| invalid_path(raw))?;
            (&p[..i], Some(&p[i + 1..close]), p[close + 1..].strip_prefix('.').or(Some(&p[close + 1..])))
        }
        None => match p.split_once('.') {
            Some((h, s)) => (h, None, Some(s)),
            None => (p, None, None),
        },
    };
    let attr = schema::attr(kind, head).ok_or_else(|| invalid_path(raw))?;
    let sub = match tail.filter(|t| !t.is_empty()) {
        Some(t) => Some(schema::sub(attr, t).ok_or_else(|| invalid_path(raw))?),
        None => None,
    };
    let filter = match filter {
        None => None,
        Some(f) => {
            if !attr.multi {
                return Err(invalid_path(raw));
            }
            let bad =
                || ScimError::bad("invalidFilter", format!("only `sub eq value` filters are supported in `{raw}`"));
            let mut parts = f.trim().splitn(3, char::is_whitespace);
            let (name, op, value) =
                (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
            if !op.eq_ignore_ascii_case("eq") {
                return Err(bad());
            }
            let s = schema::sub(attr, name).ok_or_else(|| invalid_path(raw))?;
            let v: Value = serde_json::from_str(value.trim()).map_err(|_| bad())?;
            Some((s, v))
        }
    };
    Ok(Path { attr: Some(attr), filter, sub })
}

/// Whether an element matches a filter (strings compare ignoring case, as `caseExact: false`).
fn matches(el: &Value, (s, want): &(&'static Attr, Value)) -> bool {
    match (el.get(s.name), want) {
        (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (Some(a), b) => a == b,
        (None, _) => false,
    }
}

/// Keeps at most one `primary: true` in a multi-valued attribute: the last one set wins.
fn one_primary(list: &mut [Value], keep: Option<usize>) {
    let last = keep.or_else(|| list.iter().rposition(|e| e["primary"] == Value::Bool(true)));
    for (i, e) in list.iter_mut().enumerate() {
        if Some(i) != last
            && let Some(o) = e.as_object_mut()
            && o.get("primary") == Some(&Value::Bool(true))
        {
            o.insert("primary".into(), Value::Bool(false));
        }
    }
}

/// Applies a PATCH body to `attrs` and `external` (the resource's `externalId`).
pub fn apply(
    kind: Kind,
    attrs: &mut Map<String, Value>,
    external: &mut Option<String>,
    body: &Value,
) -> Result<(), ScimError> {
    let schemas = body["schemas"].as_array().map(|a| a.iter().any(|s| s == PATCH_SCHEMA)).unwrap_or(false);
    if !schemas {
        return Err(ScimError::bad("invalidSyntax", format!("a PATCH body names the schema `{PATCH_SCHEMA}`")));
    }
    let ops = body
        .get("Operations")
        .or_else(|| body.get("operations"))
        .and_then(Value::as_array)
        .filter(|o| !o.is_empty() && o.len() <= MAX_OPS)
        .ok_or_else(|| ScimError::bad("invalidSyntax", format!("`Operations` must list 1-{MAX_OPS} operations")))?;
    for op in ops {
        let kind_of = match op["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("add") => OpKind::Add,
            Some("remove") => OpKind::Remove,
            Some("replace") => OpKind::Replace,
            _ => return Err(ScimError::bad("invalidSyntax", "`op` must be `add`, `remove` or `replace`")),
        };
        let value = op.get("value").filter(|v| !v.is_null());
        match op.get("path").and_then(Value::as_str).filter(|p| !p.trim().is_empty()) {
            Some(p) => one(attrs, external, kind_of, parse_path(kind, p)?, value)?,
            None => {
                if kind_of == OpKind::Remove {
                    return Err(ScimError::bad("noTarget", "`remove` needs a `path`"));
                }
                let obj = value
                    .and_then(Value::as_object)
                    .ok_or_else(|| ScimError::bad("invalidValue", "without a `path`, `value` must be an object"))?;
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case("schemas")
                        || k.eq_ignore_ascii_case("id")
                        || k.eq_ignore_ascii_case("meta")
                    {
                        continue;
                    }
                    // Names this resource does not declare are ignored, as on POST.
                    let Ok(path) = parse_path(kind, k) else { continue };
                    one(attrs, external, kind_of, path, Some(v))?;
                }
            }
        }
    }
    for a in schema::attrs(kind) {
        if a.required && !attrs.contains_key(a.name) {
            return Err(ScimError::bad("invalidValue", format!("`{}` is required", a.name)));
        }
    }
    Ok(())
}

fn one(
    attrs: &mut Map<String, Value>,
    external: &mut Option<String>,
    op: OpKind,
    path: Path,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let need = || ScimError::bad("invalidValue", format!("`{:?}` needs a `value`", op).to_lowercase());
    let Some(a) = path.attr else {
        *external = match (op, value) {
            (OpKind::Remove, _) => None,
            (_, Some(Value::String(s))) if s.len() <= 1024 => Some(s.clone()),
            _ => return Err(ScimError::bad("invalidValue", "`externalId` must be a string")),
        };
        return Ok(());
    };
    if a.mutability == "readOnly" {
        return Err(ScimError::bad("mutability", format!("`{}` is read-only", a.name)));
    }
    match (op, path.filter, path.sub) {
        // The whole attribute.
        (OpKind::Remove, None, None) => {
            if a.required {
                return Err(ScimError::bad("mutability", format!("`{}` is required and cannot be removed", a.name)));
            }
            match (a.multi, value.and_then(Value::as_array)) {
                // `remove` with a value list on a multi-valued attribute: those values only.
                (true, Some(gone)) => {
                    if let Some(Value::Array(list)) = attrs.get_mut(a.name) {
                        list.retain(|el| {
                            !gone.iter().any(|g| g.get("value").is_some() && g.get("value") == el.get("value"))
                        });
                        if list.is_empty() {
                            attrs.remove(a.name);
                        }
                    }
                }
                _ => {
                    attrs.remove(a.name);
                }
            }
        }
        (OpKind::Replace, None, None) => {
            let v = schema::check_value(a, value.ok_or_else(need)?)?;
            attrs.insert(a.name.to_owned(), v);
            if let Some(Value::Array(list)) = attrs.get_mut(a.name) {
                one_primary(list, None);
            }
        }
        (OpKind::Add, None, None) => {
            let v = schema::check_value(a, value.ok_or_else(need)?)?;
            match (a.multi, a.ty, attrs.get_mut(a.name)) {
                (true, _, Some(Value::Array(list))) => {
                    let mut last_new = None;
                    for item in v.as_array().cloned().unwrap_or_default() {
                        if !list.contains(&item) {
                            if item["primary"] == Value::Bool(true) {
                                last_new = Some(list.len());
                            }
                            list.push(item);
                        }
                    }
                    one_primary(list, last_new);
                }
                (false, Type::Complex, Some(Value::Object(cur))) => {
                    for (k, sv) in v.as_object().cloned().unwrap_or_default() {
                        cur.insert(k, sv);
                    }
                }
                _ => {
                    attrs.insert(a.name.to_owned(), v);
                }
            }
        }
        // A sub-attribute of a single complex attribute, or of every element of a list.
        (op, None, Some(s)) => {
            let cur = attrs
                .entry(a.name.to_owned())
                .or_insert_with(|| if a.multi { Value::Array(vec![]) } else { Value::Object(Map::new()) });
            let targets: Vec<&mut Value> = match cur {
                Value::Array(list) => list.iter_mut().collect(),
                other => vec![other],
            };
            for t in targets {
                set_sub(t, s, op, value)?;
            }
            if a.ty == Type::Complex
                && !a.multi
                && attrs.get(a.name).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
            {
                attrs.remove(a.name);
            }
        }
        // Elements a filter selects.
        (op, Some(f), sub) => {
            let list = match attrs.get_mut(a.name) {
                Some(Value::Array(list)) => list,
                _ => return Err(ScimError::bad("noTarget", format!("no `{}` value matches the filter", a.name))),
            };
            let hits: Vec<usize> = list.iter().enumerate().filter(|(_, e)| matches(e, &f)).map(|(i, _)| i).collect();
            if hits.is_empty() {
                return Err(ScimError::bad("noTarget", format!("no `{}` value matches the filter", a.name)));
            }
            match (op, sub) {
                (OpKind::Remove, None) => {
                    let mut i = 0;
                    list.retain(|_| {
                        let keep = !hits.contains(&i);
                        i += 1;
                        keep
                    });
                }
                (_, Some(s)) => {
                    for i in &hits {
                        set_sub(&mut list[*i], s, op, value)?;
                    }
                    if s.name == "primary" && value == Some(&Value::Bool(true)) {
                        one_primary(list, hits.last().copied());
                    }
                }
                (_, None) => {
                    let v = schema::check_value(&Attr { multi: false, ..*a }, value.ok_or_else(need)?)?;
                    for i in &hits {
                        if let (Some(el), Some(new)) = (list[*i].as_object_mut(), v.as_object()) {
                            if op == OpKind::Replace {
                                el.clear();
                            }
                            for (k, sv) in new {
                                el.insert(k.clone(), sv.clone());
                            }
                        }
                    }
                }
            }
            if attrs.get(a.name).is_some_and(|v| v.as_array().is_some_and(Vec::is_empty)) {
                attrs.remove(a.name);
            }
        }
    }
    Ok(())
}

fn set_sub(target: &mut Value, s: &Attr, op: OpKind, value: Option<&Value>) -> Result<(), ScimError> {
    let Some(obj) = target.as_object_mut() else { return Ok(()) };
    if s.mutability == "readOnly" {
        return Err(ScimError::bad("mutability", format!("`{}` is read-only", s.name)));
    }
    match op {
        OpKind::Remove => {
            obj.remove(s.name);
        }
        OpKind::Add | OpKind::Replace => {
            let v = value.ok_or_else(|| ScimError::bad("invalidValue", "a `value` is needed"))?;
            obj.insert(s.name.to_owned(), schema::check_value(s, v)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        super::super::read_body(
            Kind::User,
            &json!({"userName": "b", "name": {"givenName": "B", "familyName": "J"},
                    "emails": [{"value": "w@x.com", "type": "work", "primary": true}, {"value": "h@x.com", "type": "home"}]}),
        )
        .unwrap()
        .0
    }

    fn patch(ops: Value) -> Value {
        json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
    }

    #[test]
    fn the_path_forms_identity_providers_send() {
        let mut a = user();
        let mut ext = None;
        apply(
            Kind::User,
            &mut a,
            &mut ext,
            &patch(json!([
                {"op": "Replace", "path": "name.givenName", "value": "Babs"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w2@x.com"},
                {"op": "add", "path": "emails", "value": [{"value": "o@x.com", "primary": true}]},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
                {"op": "replace", "value": {"active": "False", "externalId": "e1", "nickName": "ignored"}},
                {"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:User:displayName", "value": "Babs J"},
            ])),
        )
        .unwrap();
        assert_eq!(a["name"]["givenName"], "Babs");
        assert_eq!(
            a["emails"],
            json!([{"value": "w2@x.com", "type": "work", "primary": false}, {"value": "o@x.com", "primary": true}])
        );
        assert_eq!(a["active"], false);
        assert_eq!(a["displayName"], "Babs J");
        assert_eq!(ext.as_deref(), Some("e1"));
        assert!(!a.contains_key("nickName"));
    }

    #[test]
    fn refusals_name_their_scim_type() {
        let t = |ops: Value| apply(Kind::User, &mut user(), &mut None, &patch(ops)).unwrap_err().scim_type;
        assert_eq!(t(json!([{"op": "remove", "path": "userName"}])), Some("mutability"));
        assert_eq!(t(json!([{"op": "remove"}])), Some("noTarget"));
        assert_eq!(
            t(json!([{"op": "replace", "path": "emails[type eq \"nope\"].value", "value": "x"}])),
            Some("noTarget")
        );
        assert_eq!(t(json!([{"op": "replace", "path": "shoeSize", "value": 3}])), Some("invalidPath"));
        assert_eq!(t(json!([{"op": "replace", "path": "active", "value": "maybe"}])), Some("invalidValue"));
        assert_eq!(t(json!([{"op": "move", "path": "active"}])), Some("invalidSyntax"));
        let no_schema = json!({"Operations": [{"op": "remove", "path": "active"}]});
        assert_eq!(apply(Kind::User, &mut user(), &mut None, &no_schema).unwrap_err().scim_type, Some("invalidSyntax"));
    }

    #[test]
    fn group_members_are_added_and_removed_by_value() {
        let mut g = super::super::read_body(Kind::Group, &json!({"displayName": "sre", "members": [{"value": "h-1"}]}))
            .unwrap()
            .0;
        apply(
            Kind::Group,
            &mut g,
            &mut None,
            &patch(json!([
                {"op": "add", "path": "members", "value": [{"value": "h-2"}, {"value": "h-1"}]},
                {"op": "remove", "path": "members[value eq \"h-1\"]"},
            ])),
        )
        .unwrap();
        assert_eq!(g["members"], json!([{"value": "h-2"}]));
        apply(
            Kind::Group,
            &mut g,
            &mut None,
            &patch(json!([{"op": "remove", "path": "members", "value": [{"value": "h-2"}]}])),
        )
        .unwrap();
        assert!(!g.contains_key("members"));
    }
}
