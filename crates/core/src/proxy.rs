//! The injecting tool proxy's rules, pure: a tool's upstream, the routes an agent may call
//! through the proxy, how the upstream credential is put on the wire, and how a requested
//! path is normalised and matched.
//!
//! The upstream's scheme, host and port are fixed by the tool; an agent only ever chooses a
//! path below the upstream's base path that matches a declared route (method + template,
//! `{name}` matching one segment). Paths are percent-decoded once, segment by segment; a
//! segment that is empty, `.` or `..` (in any encoding), or that decodes to a `/`, `\`, NUL
//! or another control character is refused, so nothing reaches the upstream outside its base.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Most routes one tool declares.
pub const MAX_ROUTES: usize = 64;
/// Default and hard limits of one proxied request's and response's body.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
pub const HARD_MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// How the proxy reaches a tool's upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The upstream's base URL: `https://host[:port][/base]` (`http://` too); no query,
    /// fragment or user info.
    pub upstream: String,
    pub routes: Vec<Route>,
    pub inject: Injection,
    #[serde(default = "default_request")]
    pub max_request_bytes: u64,
    #[serde(default = "default_response")]
    pub max_response_bytes: u64,
}

fn default_request() -> u64 {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_response() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// One callable route: the method, a path template under the upstream's base, and the tool
/// scope it needs (the Cedar action decided for the call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub method: String,
    /// `/issues/{id}/comments`: literal segments and `{name}` (one segment each).
    pub path: String,
    pub scope: String,
}

/// Where the upstream credential (the tool's secret named `secret`) goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    Bearer { secret: String },
    /// `<name>: [prefix]<secret>` (e.g. `X-Api-Key`).
    Header {
        name: String,
        secret: String,
        #[serde(default)]
        prefix: Option<String>,
    },
    /// `?<name>=<secret>` (the agent's own parameter of that name is dropped).
    Query { name: String, secret: String },
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic { username: String, secret: String },
    /// `Authorization: Bearer <access token>`, the token obtained by the proxy from the
    /// upstream's authorization server with the OAuth 2.0 client-credentials grant (RFC 6749
    /// §4.4; `client_secret_basic` with the tool's secret) and cached per tool until shortly
    /// before it expires.
    #[serde(rename = "oauth")]
    OAuth {
        token_url: String,
        client_id: String,
        secret: String,
        #[serde(default)]
        scope: Option<String>,
    },
}

impl Injection {
    /// The name of the tool's secret it puts on the wire.
    pub fn secret(&self) -> &str {
        match self {
            Injection::Bearer { secret }
            | Injection::Header { secret, .. }
            | Injection::Query { secret, .. }
            | Injection::Basic { secret, .. }
            | Injection::OAuth { secret, .. } => secret,
        }
    }
}

/// The agent's headers that reach the upstream (end-to-end content negotiation, caching
/// preconditions and tracing); everything else — method overrides, URL rewrites, credentials,
/// forwarding — stays with the proxy.
pub const FORWARDED: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "content-type",
    "content-encoding",
    "content-language",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
    "cache-control",
    "user-agent",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Query parameters some frameworks read as a method override; dropped.
pub const METHOD_OVERRIDE_PARAMS: &[&str] = &["_method", "x-http-method-override", "_httpmethod"];

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers never taken from the agent, nor injected: hop-by-hop and the proxy's own.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "dpop",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

fn invalid(field: &'static str, why: impl Into<String>) -> DomainError {
    DomainError::invalid(field, why)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn literal_ok(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Splits an upstream URL into scheme, authority and base path (checked).
pub fn split_upstream(u: &str) -> Result<(&str, &str, &str), DomainError> {
    let (scheme, rest) = u
        .split_once("://")
        .filter(|(s, _)| *s == "https" || *s == "http")
        .ok_or_else(|| invalid("upstream", "must be an absolute `https://` or `http://` URL"))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty()
        || authority.contains('@')
        || u.contains(['?', '#', '\\'])
        || u.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("upstream", "a host, no user info, query, fragment or whitespace"));
    }
    if base.split('/').skip(1).any(|s| s == "." || s == ".." || s.contains('%')) {
        return Err(invalid("upstream", "a plain base path"));
    }
    Ok((scheme, authority, base.trim_end_matches('/')))
}

impl ProxyConfig {
    /// Checks the configuration against the tool's scopes.
    pub fn check(&self, tool_scopes: &[String]) -> Result<(), DomainError> {
        split_upstream(&self.upstream)?;
        if self.routes.is_empty() || self.routes.len() > MAX_ROUTES {
            return Err(invalid("routes", format!("1 to {MAX_ROUTES} routes")));
        }
        for r in &self.routes {
            if !METHODS.contains(&r.method.as_str()) {
                return Err(invalid("routes", format!("method `{}` is not one of {METHODS:?}", r.method)));
            }
            if !r.path.starts_with('/') {
                return Err(invalid("routes", format!("path `{}` must start with `/`", r.path)));
            }
            for seg in r.path.split('/').skip(1) {
                let param = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                if !(param.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    || literal_ok(seg)
                    || (seg.is_empty() && r.path == "/"))
                {
                    return Err(invalid(
                        "routes",
                        format!("path `{}`: segment `{seg}` is neither a literal nor `{{name}}`", r.path),
                    ));
                }
            }
            if !tool_scopes.contains(&r.scope) {
                return Err(invalid("routes", format!("scope `{}` is not one of the tool's scopes", r.scope)));
            }
        }
        match &self.inject {
            Injection::Header { name, prefix, .. } => {
                if !is_token(name) || HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(invalid("inject", format!("`{name}` is not a header the proxy may set")));
                }
                if prefix.as_ref().is_some_and(|p| p.chars().any(|c| c.is_control())) {
                    return Err(invalid("inject", "the prefix has control characters"));
                }
            }
            Injection::Query { name, .. } if !is_token(name) => {
                return Err(invalid("inject", format!("`{name}` is not a query parameter name")));
            }
            Injection::Basic { username, .. } if username.contains(':') || username.chars().any(|c| c.is_control()) => {
                return Err(invalid("inject", "a basic-auth username without `:` or control characters"));
            }
            Injection::OAuth { token_url, client_id, scope, .. } => {
                // The client secret goes in the request: TLS, unless on this host.
                let url_ok = split_upstream(token_url).is_ok_and(|(scheme, authority, _)| {
                    scheme == "https"
                        || ["127.0.0.1", "localhost", "[::1]"]
                            .iter()
                            .any(|h| authority == *h || authority.strip_prefix(h).is_some_and(|r| r.starts_with(':')))
                });
                if !url_ok {
                    return Err(invalid(
                        "inject",
                        "token_url must be an absolute https:// URL (http:// only on loopback)",
                    ));
                }
                if client_id.is_empty() || client_id.len() > 256 || client_id.chars().any(|c| c.is_control()) {
                    return Err(invalid("inject", "client_id must be 1-256 printable characters"));
                }
                if let Some(s) = scope
                    && (s.is_empty() || s.split(' ').any(|x| crate::tool::check_scope(x).is_err()))
                {
                    return Err(invalid("inject", "scope must be space-separated scope tokens"));
                }
            }
            _ => {}
        }
        crate::ids::SecretName::parse(self.inject.secret())?;
        if self.max_request_bytes > HARD_MAX_BODY_BYTES || self.max_response_bytes > HARD_MAX_BODY_BYTES {
            return Err(invalid("max bytes", format!("at most {HARD_MAX_BODY_BYTES}")));
        }
        Ok(())
    }

    /// The route a request matches, if any: of several, the most specific (the most literal
    /// segments), so `/issues/export` is never decided as `/issues/{id}`.
    pub fn route(&self, method: &str, segments: &[String]) -> Option<&Route> {
        let literals = |r: &Route| r.path.split('/').filter(|s| !s.is_empty() && !s.starts_with('{')).count();
        let matching = self.routes.iter().filter(|r| {
            r.method == method && {
                let tpl: Vec<&str> = r.path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
                tpl.len() == segments.len()
                    && tpl.iter().zip(segments).all(|(t, s)| t.starts_with('{') || *t == s.as_str())
            }
        });
        // The first of the most specific, so declaration order still breaks ties.
        matching.fold(None, |best: Option<&Route>, r| match best {
            Some(b) if literals(b) >= literals(r) => Some(b),
            _ => Some(r),
        })
    }
}

/// Why a requested path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an empty, `.` or `..` segment")]
    DotOrEmpty,
    #[error("the path has a malformed percent-encoding")]
    BadEncoding,
    #[error("a path segment decodes to a separator or a control character")]
    Forbidden,
}

/// Percent-decodes each segment of a raw request path (below the tool's prefix) once, and
/// refuses `.`/`..`/empty segments (encoded or not) and segments decoding to `/`, `\` or
/// control characters. `""` and `"/"` are the root (no segments).
pub fn normalize(raw: &str) -> Result<Vec<String>, PathError> {
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    if raw.is_empty() {
        return Ok(vec![]);
    }
    let raw = raw.strip_suffix('/').unwrap_or(raw);
    raw.split('/')
        .map(|seg| {
            let bytes = decode(seg)?;
            let s = String::from_utf8(bytes).map_err(|_| PathError::BadEncoding)?;
            if s.is_empty() || s == "." || s == ".." {
                return Err(PathError::DotOrEmpty);
            }
            if s.chars().any(|c| c == '/' || c == '\\' || c.is_control() || !c.is_ascii()) {
                return Err(PathError::Forbidden);
            }
            Ok(s)
        })
        .collect()
}

fn decode(seg: &str) -> Result<Vec<u8>, PathError> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let s = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| PathError::BadEncoding)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes one decoded segment for the upstream (unreserved characters as they are).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            upstream: "https://api.example.com/v2".into(),
            routes: vec![
                Route { method: "GET".into(), path: "/issues/{id}".into(), scope: "read".into() },
                Route { method: "POST".into(), path: "/issues".into(), scope: "write".into() },
            ],
            inject: Injection::Header { name: "X-Api-Key".into(), secret: "api-key".into(), prefix: None },
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    #[test]
    fn paths_are_normalised_and_traversal_refused() {
        assert_eq!(normalize("/issues/42").unwrap(), ["issues", "42"]);
        assert_eq!(normalize("/issues/a%20b/").unwrap(), ["issues", "a b"]);
        for bad in [
            "/issues/../admin",
            "/issues/%2e%2e/admin",
            "/issues/%2E%2e",
            "//evil.example/x",
            "/a//b",
            "/./a",
            "/a/%2fetc",
            "/a/%5c",
            "/a/%00",
            "/a/%zz",
            "/a/%2",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        let c = cfg();
        c.check(&["read".into(), "write".into()]).unwrap();
        assert_eq!(c.route("GET", &normalize("/issues/7").unwrap()).unwrap().scope, "read");
        assert!(normalize("/issues/%EF%BC%8E%EF%BC%8E").is_err(), "fullwidth dots");
        let mut c2 = c.clone();
        c2.routes.push(Route { method: "GET".into(), path: "/issues/export".into(), scope: "write".into() });
        assert_eq!(c2.route("GET", &normalize("/issues/export").unwrap()).unwrap().scope, "write");
        assert!(c.route("DELETE", &normalize("/issues/7").unwrap()).is_none());
        assert!(c.route("GET", &normalize("/issues/7/comments").unwrap()).is_none());
        assert!(c.route("GET", &normalize("/issues").unwrap()).is_none());
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn configurations_are_checked() {
        let scopes = ["read".to_owned(), "write".to_owned()];
        for (upstream, ok) in [
            ("https://api.example.com", true),
            ("http://127.0.0.1:8080/base/", true),
            ("ftp://x", false),
            ("https://user@api.example.com", false),
            ("https://api.example.com/?q=1", false),
            ("https://api.example.com/../x", false),
            ("https://", false),
        ] {
            let c = ProxyConfig { upstream: upstream.into(), ..cfg() };
            assert_eq!(c.check(&scopes).is_ok(), ok, "{upstream}");
        }
        let mut c = cfg();
        c.routes[0].scope = "admin".into();
        assert!(c.check(&scopes).is_err());
        let mut c = cfg();
        c.routes[0].path = "/issues/../x".into();
        assert!(c.check(&scopes).is_err());
        let mut c = cfg();
        c.inject = Injection::Header { name: "Authorization".into(), secret: "k".into(), prefix: None };
        assert!(c.check(&scopes).is_err(), "use the bearer injection for Authorization");
        let mut c = cfg();
        c.routes[0].method = "CONNECT".into();
        assert!(c.check(&scopes).is_err());
    }
}
