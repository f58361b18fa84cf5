//! SCIM 2.0 (RFC 7643, RFC 7644), the pure part: the User and Group schemas Remit serves, the
//! discovery documents, reading a resource body into its attributes (names matched ignoring
//! case, undeclared attributes dropped, types checked), PATCH operations (RFC 7644 §3.5.2:
//! `add`, `remove`, `replace`; paths `attr`, `attr.sub`, `attr[sub eq "v"]`, `attr[sub eq
//! "v"].sub`, optionally URN-prefixed, or no path with an object value), the one filter form
//! identity providers use (`<name> eq "value"`), and `attributes`/`excludedAttributes`.
//!
//! A resource is kept as a JSON object of its declared attributes; `id`, `meta` and `schemas`
//! are Remit's and added on the way out.

pub mod patch;
pub mod schema;

use serde_json::{Map, Value};

pub use schema::{Attr, Kind, Type};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// A SCIM error: HTTP status and `scimType` (RFC 7644 §3.12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError { status: 400, scim_type: Some(scim_type), detail: detail.into() }
    }
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type: None, detail: detail.into() }
    }
    pub fn body(&self) -> Value {
        let mut v =
            serde_json::json!({"schemas": [ERROR_SCHEMA], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            v["scimType"] = t.into();
        }
        v
    }
}

/// Reads a POST/PUT body into the resource's declared attributes (canonical names), checking
/// types, and the common `externalId`.
pub fn read_body(kind: Kind, body: &Value) -> Result<(Map<String, Value>, Option<String>), ScimError> {
    let obj = body.as_object().ok_or_else(|| ScimError::bad("invalidSyntax", "the body must be a JSON object"))?;
    let mut out = Map::new();
    let mut external = None;
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("externalId") {
            external = match v {
                Value::Null => None,
                Value::String(s) if s.len() <= 1024 => Some(s.clone()),
                _ => return Err(ScimError::bad("invalidValue", "`externalId` must be a string")),
            };
            continue;
        }
        if let Some(a) = schema::attr(kind, k) {
            if a.mutability == "readOnly" || v.is_null() {
                continue;
            }
            out.insert(a.name.to_owned(), schema::check_value(a, v)?);
        }
        // `schemas`, `id`, `meta` and undeclared attributes are not the client's to set.
    }
    for a in schema::attrs(kind) {
        if a.required && !out.contains_key(a.name) {
            return Err(ScimError::bad("invalidValue", format!("`{}` is required", a.name)));
        }
    }
    Ok((out, external))
}

/// The resource's JSON for the wire: its attributes plus `schemas`, `id`, `externalId` and
/// `meta`, trimmed to `attributes` / without `excludedAttributes` (top-level names).
pub fn render(
    kind: Kind,
    attrs: &Map<String, Value>,
    id: &str,
    external: Option<&str>,
    meta: Value,
    only: &[String],
    without: &[String],
) -> Value {
    let mut v = Map::new();
    v.insert("schemas".into(), Value::Array(vec![kind.schema().into()]));
    v.insert("id".into(), id.into());
    let keep = |name: &str| {
        (only.is_empty() || only.iter().any(|a| top(a).eq_ignore_ascii_case(name)))
            && !without.iter().any(|a| top(a).eq_ignore_ascii_case(name))
    };
    if let Some(e) = external
        && keep("externalId")
    {
        v.insert("externalId".into(), e.into());
    }
    for (k, val) in attrs {
        if keep(k) || schema::attr(kind, k).is_some_and(|a| a.returned == "always") {
            v.insert(k.clone(), val.clone());
        }
    }
    if keep("meta") {
        v.insert("meta".into(), meta);
    }
    Value::Object(v)
}

/// The attribute name a path starts with, without its schema URN.
fn top(path: &str) -> &str {
    let p = strip_urn(path);
    p.split(['.', '[']).next().unwrap_or(p)
}

/// `urn:…:User:name.givenName` → `name.givenName`.
pub fn strip_urn(path: &str) -> &str {
    for s in [USER_SCHEMA, GROUP_SCHEMA] {
        if path.len() > s.len() && path[..s.len()].eq_ignore_ascii_case(s) && path.as_bytes()[s.len()] == b':' {
            return &path[s.len() + 1..];
        }
    }
    path
}

/// The filter identity providers send to find a resource: `<attribute> eq "<value>"`, for the
/// resource's name attribute (`userName`, a Group's `displayName`). Anything else is refused.
pub fn parse_filter(kind: Kind, f: &str) -> Result<String, ScimError> {
    let refuse = || ScimError::bad("invalidFilter", format!("only `{} eq \"…\"` is supported", kind.name_attr()));
    let f = f.trim();
    let (attr, rest) = f.split_once(char::is_whitespace).ok_or_else(refuse)?;
    let (op, value) = rest.trim_start().split_once(char::is_whitespace).ok_or_else(refuse)?;
    if !strip_urn(attr).eq_ignore_ascii_case(kind.name_attr()) || !op.eq_ignore_ascii_case("eq") {
        return Err(refuse());
    }
    match serde_json::from_str::<Value>(value.trim()) {
        Ok(Value::String(s)) => Ok(s),
        _ => Err(refuse()),
    }
}

/// A comma-separated `attributes` / `excludedAttributes` parameter.
pub fn attr_list(p: Option<&str>) -> Vec<String> {
    p.map(|s| s.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()).unwrap_or_default()
}

/// The primary (else the first) email of a User's attributes.
pub fn primary_email(attrs: &Map<String, Value>) -> Option<String> {
    let emails = attrs.get("emails")?.as_array()?;
    let primary = emails.iter().find(|e| e["primary"] == Value::Bool(true)).or_else(|| emails.first())?;
    primary["value"].as_str().map(str::to_owned)
}

/// The name a human is shown by: `displayName`, else `name.formatted`, else given + family.
pub fn display_name(attrs: &Map<String, Value>) -> String {
    if let Some(d) = attrs.get("displayName").and_then(Value::as_str) {
        return d.to_owned();
    }
    let name = attrs.get("name");
    if let Some(f) = name.and_then(|n| n["formatted"].as_str()) {
        return f.to_owned();
    }
    let part = |k: &str| name.and_then(|n| n[k].as_str()).unwrap_or("");
    format!("{} {}", part("givenName"), part("familyName")).trim().to_owned()
}

/// A User's `active` (default true).
pub fn active(attrs: &Map<String, Value>) -> bool {
    attrs.get("active").and_then(Value::as_bool).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_keep_declared_attributes_in_canonical_case() {
        let (a, ext) = read_body(
            Kind::User,
            &json!({"schemas": [USER_SCHEMA], "USERNAME": "bjensen", "externalId": "x1", "id": "mine",
                    "emails": [{"value": "b@example.com", "primary": true}], "nickName": "Babs", "active": false}),
        )
        .unwrap();
        assert_eq!(a["userName"], "bjensen");
        assert!(!a.contains_key("nickName") && !a.contains_key("id"));
        assert_eq!(ext.as_deref(), Some("x1"));
        assert_eq!(primary_email(&a).as_deref(), Some("b@example.com"));
        assert!(!active(&a));
        assert_eq!(
            read_body(Kind::User, &json!({"name": {"givenName": "B"}})).unwrap_err().scim_type,
            Some("invalidValue")
        );
        assert!(read_body(Kind::User, &json!({"userName": 3})).is_err());
    }

    #[test]
    fn filters_are_the_name_equality_only() {
        assert_eq!(parse_filter(Kind::User, r#"userName eq "bjensen""#).unwrap(), "bjensen");
        assert_eq!(parse_filter(Kind::User, r#"USERNAME EQ "a b""#).unwrap(), "a b");
        assert_eq!(parse_filter(Kind::Group, r#"displayName eq "sre""#).unwrap(), "sre");
        for bad in
            [r#"userName co "b""#, r#"emails eq "b""#, "userName eq bjensen", "userName", r#"displayName eq "x""#]
        {
            assert!(parse_filter(Kind::User, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rendering_honours_attributes_and_excluded_attributes() {
        let (a, _) =
            read_body(Kind::User, &json!({"userName": "u", "displayName": "U", "emails": [{"value": "u@x.com"}]}))
                .unwrap();
        let v = render(Kind::User, &a, "h-1", Some("e"), json!({}), &["displayName".into()], &[]);
        assert!(v.get("displayName").is_some() && v.get("id").is_some());
        assert!(v.get("externalId").is_none() && v.get("meta").is_none());
        let v = render(Kind::User, &a, "h-1", None, json!({}), &[], &["displayName".into()]);
        assert!(v.get("displayName").is_none() && v.get("userName").is_some());
    }
}
