//! The User and Group schemas Remit serves (a subset of RFC 7643 §4), their discovery
//! documents, and type checks of attribute values against them.

use serde_json::{Map, Value, json};

use super::{GROUP_SCHEMA, ScimError, USER_SCHEMA};

/// The resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
    /// The attribute that names a resource (unique, what filters look for).
    pub fn name_attr(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Boolean,
    Reference,
    Complex,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Boolean => "boolean",
            Type::Reference => "reference",
            Type::Complex => "complex",
        }
    }
}

/// One attribute (or sub-attribute) of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Type,
    pub multi: bool,
    pub required: bool,
    pub mutability: &'static str,
    pub returned: &'static str,
    pub uniqueness: &'static str,
    pub description: &'static str,
    pub sub: &'static [Attr],
    pub reference_types: &'static [&'static str],
    pub canonical: &'static [&'static str],
}

const fn s(name: &'static str, description: &'static str) -> Attr {
    Attr {
        name,
        ty: Type::String,
        multi: false,
        required: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        description,
        sub: &[],
        reference_types: &[],
        canonical: &[],
    }
}

const NAME_SUB: &[Attr] = &[
    s("formatted", "The full name, formatted for display."),
    s("familyName", "The family name."),
    s("givenName", "The given name."),
];

const EMAIL_SUB: &[Attr] = &[
    Attr { required: true, ..s("value", "The email address.") },
    Attr { canonical: &["work", "home", "other"], ..s("type", "A label: work, home or other.") },
    Attr { ty: Type::Boolean, ..s("primary", "Whether this is the primary address (the one Remit uses).") },
];

const MEMBER_SUB: &[Attr] = &[
    Attr { mutability: "immutable", ..s("value", "The member's id (a User's id).") },
    Attr { ty: Type::Reference, mutability: "immutable", reference_types: &["User"], ..s("$ref", "The member's URI.") },
    Attr { mutability: "readOnly", ..s("display", "The member's display name.") },
];

const USER: &[Attr] = &[
    Attr {
        required: true,
        uniqueness: "server",
        ..s("userName", "A unique name the identity provider knows the human by.")
    },
    Attr { ty: Type::Complex, sub: NAME_SUB, ..s("name", "The human's name.") },
    s("displayName", "The name shown for the human."),
    Attr {
        ty: Type::Complex,
        multi: true,
        required: true,
        sub: EMAIL_SUB,
        ..s("emails", "Email addresses (at least one: a human in Remit has one); the primary one is theirs in Remit.")
    },
    Attr { ty: Type::Boolean, ..s("active", "false deactivates the human: sessions revoked, what they own orphaned.") },
];

const GROUP: &[Attr] = &[
    Attr { required: true, uniqueness: "server", ..s("displayName", "The group's name (as roles map it).") },
    Attr { ty: Type::Complex, multi: true, sub: MEMBER_SUB, ..s("members", "The Users in the group.") },
];

pub fn attrs(kind: Kind) -> &'static [Attr] {
    match kind {
        Kind::User => USER,
        Kind::Group => GROUP,
    }
}

/// An attribute by name, ignoring case.
pub fn attr(kind: Kind, name: &str) -> Option<&'static Attr> {
    attrs(kind).iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// A sub-attribute by name, ignoring case.
pub fn sub(a: &Attr, name: &str) -> Option<&'static Attr> {
    a.sub.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

const MAX_STRING: usize = 1024;
const MAX_VALUES: usize = 100;

fn scalar(a: &Attr, v: &Value) -> Result<Value, ScimError> {
    let wrong = || ScimError::bad("invalidValue", format!("`{}` must be a {}", a.name, a.ty.as_str()));
    match (a.ty, v) {
        (Type::String | Type::Reference, Value::String(s))
            if s.len() <= MAX_STRING && !s.chars().any(char::is_control) =>
        {
            Ok(v.clone())
        }
        (Type::Boolean, Value::Bool(_)) => Ok(v.clone()),
        // Some identity providers send booleans as strings ("True").
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        _ => Err(wrong()),
    }
}

fn single(a: &Attr, v: &Value) -> Result<Value, ScimError> {
    if a.ty != Type::Complex {
        return scalar(a, v);
    }
    let obj = v.as_object().ok_or_else(|| ScimError::bad("invalidValue", format!("`{}` must be an object", a.name)))?;
    let mut out = Map::new();
    for (k, val) in obj {
        if let Some(s) = sub(a, k)
            && !val.is_null()
            && s.mutability != "readOnly"
        {
            out.insert(s.name.to_owned(), scalar(s, val)?);
        }
    }
    Ok(Value::Object(out))
}

/// Checks (and canonicalises) a value of attribute `a`: a list for a multi-valued one (a
/// single value is taken as a list of one), the right type for each.
pub fn check_value(a: &Attr, v: &Value) -> Result<Value, ScimError> {
    if !a.multi {
        return single(a, v);
    }
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    if items.len() > MAX_VALUES {
        return Err(ScimError::bad("invalidValue", format!("`{}` holds at most {MAX_VALUES} values", a.name)));
    }
    Ok(Value::Array(items.into_iter().map(|i| single(a, i)).collect::<Result<_, _>>()?))
}

fn attr_doc(a: &Attr) -> Value {
    let mut d = json!({
        "name": a.name, "type": a.ty.as_str(), "multiValued": a.multi, "description": a.description,
        "required": a.required, "caseExact": false, "mutability": a.mutability, "returned": a.returned,
        "uniqueness": a.uniqueness,
    });
    if !a.sub.is_empty() {
        d["subAttributes"] = a.sub.iter().map(attr_doc).collect();
    }
    if !a.reference_types.is_empty() {
        d["referenceTypes"] = json!(a.reference_types);
    }
    if !a.canonical.is_empty() {
        d["canonicalValues"] = json!(a.canonical);
    }
    d
}

/// `/Schemas/<urn>` for a kind.
pub fn schema_doc(kind: Kind, base: &str) -> Value {
    let (name, description) = match kind {
        Kind::User => ("User", "A human known to Remit"),
        Kind::Group => ("Group", "A group of humans"),
    };
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": kind.schema(), "name": name, "description": description,
        "attributes": attrs(kind).iter().map(attr_doc).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{}", kind.schema())},
    })
}

/// `/ResourceTypes/<name>` for a kind.
pub fn resource_type_doc(kind: Kind, base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": kind.as_str(), "name": kind.as_str(), "endpoint": format!("/{}", kind.endpoint()),
        "description": match kind { Kind::User => "Humans", Kind::Group => "Groups of humans" },
        "schema": kind.schema(), "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", kind.as_str())},
    })
}

/// `/ServiceProviderConfig`.
pub fn service_provider_config(base: &str, max_results: u64) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/remit-dev/remit#humans-signing-in-through-your-openid-provider",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token",
            "description": "The SCIM credential (the `scim-token` file in Remit's data directory, or REMIT_SCIM_TOKEN)",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}
