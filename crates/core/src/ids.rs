//! Validated identifiers.
//!
//! Each id is parsed once, at the edge, and carried as its own type afterwards, so a task id
//! can never be passed where a workflow name is expected and nothing downstream re-validates.
//! Names (workflows, agents) are DNS-label-like because they appear as SPIFFE path segments.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Longest accepted SPIFFE ID, per the SPIFFE ID specification's URI limit.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest accepted workflow or agent name.
pub const MAX_NAME_LEN: usize = 63;

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_tool_name(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter().all(|c| inner(c) || matches!(c, b'-' | b'.' | b'_'))
        && inner(&b[0])
        && inner(&b[b.len() - 1])
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        name_type!($(#[$doc])* $name, $what, is_name, "`{}` must be 1-63 characters of a-z, 0-9 and `-`, not starting or ending with `-`");
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $valid:ident, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a name (see the type's rule).
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                if $valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(DomainError::invalid($what, format!($rule, truncate_for_error(s))))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, DomainError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

macro_rules! random_id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Makes an id from 16 random bytes (the caller injects the randomness).
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(format!(concat!($prefix, "{}"), hex::encode(bytes)))
            }
            /// Parses an id: the prefix followed by 32 lowercase hex digits.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                let ok = s
                    .strip_prefix($prefix)
                    .is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(DomainError::invalid(
                        $what,
                        format!(concat!("`{}` is not a valid ", $what, " (expected `", $prefix, "` and 32 hex digits)"), truncate_for_error(s)),
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, DomainError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a workflow: a trust boundary for one purpose.
    WorkflowName,
    "workflow name"
);
name_type!(
    /// The name of a registered agent (e.g. `deploy-bot`).
    AgentName,
    "agent name"
);
name_type!(
    /// The name of one of a tool's upstream secrets (e.g. `api-key`, `client_secret`).
    SecretName,
    "secret name",
    is_tool_name,
    "`{}` must be 1-63 characters of a-z, 0-9, `-`, `.` and `_`, starting and ending with a letter or digit"
);
name_type!(
    /// The name of a registered tool (e.g. `tickets`, `jira.read`): what a per-tool credential
    /// is for, and the id policies see (`Tool::"jira.read"`). Not a SPIFFE path segment, so
    /// `.` and `_` are allowed too.
    ToolName,
    "tool name",
    is_tool_name,
    "`{}` must be 1-63 characters of a-z, 0-9, `-`, `.` and `_`, starting and ending with a letter or digit"
);
random_id_type!(
    /// A request for a human to approve one exact call (`a-` and 32 hex digits).
    ApprovalId,
    "a-",
    "approval id"
);
random_id_type!(
    /// A human's grant of authority to an agent (`g-` and 32 hex digits).
    GrantId,
    "g-",
    "grant id"
);
random_id_type!(
    /// A workload registration entry: selectors that name an agent (`re-` and 32 hex digits).
    EntryId,
    "re-",
    "registration entry id"
);
random_id_type!(
    /// A credential a dynamic engine made for one task (a database login) and its revocation
    /// (`l-` and 32 hex digits).
    LeaseId,
    "l-",
    "lease id"
);
random_id_type!(
    /// A per-tool credential obtained by token exchange (its token's `jti`).
    CredentialId,
    "c-",
    "credential id"
);
random_id_type!(
    /// One task of a workflow.
    TaskId,
    "t-",
    "task id"
);
random_id_type!(
    /// One running, attested copy of an agent.
    InstanceId,
    "i-",
    "instance id"
);
random_id_type!(
    /// A human known to Remit (`h-` and 32 hex digits); their email is an attribute.
    HumanId,
    "h-",
    "human id"
);
random_id_type!(
    /// One signed-in session of a human (`s-` and 32 hex digits).
    SessionId,
    "s-",
    "session id"
);
random_id_type!(
    /// The public handle of a join token (the secret part is never stored).
    JoinTokenId,
    "j-",
    "join token id"
);

/// Cuts user input shown in an error so a pasted token or a huge value is never echoed whole.
pub fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// A SPIFFE trust domain such as `remit.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain: lowercase letters, digits, `.`, `-` and `_`, at most 255 bytes.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::invalid(
                "trust domain",
                format!("`{}` must be lowercase letters, digits, `.`, `-` or `_`", truncate_for_error(s)),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The trust domain's own SPIFFE ID, `spiffe://<td>`.
    pub fn id(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}
impl TryFrom<String> for TrustDomain {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}
impl From<TrustDomain> for String {
    fn from(v: TrustDomain) -> String {
        v.0
    }
}
impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a Remit-issued SPIFFE ID names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `spiffe://TD/workflow/<workflow>/task/<task>`
    Task { workflow: WorkflowName, task: TaskId },
    /// `spiffe://TD/agent/<agent>/instance/<instance>`
    Instance { agent: AgentName, instance: InstanceId },
}

/// A SPIFFE ID, validated against the SPIFFE ID specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
}

impl SpiffeId {
    pub fn task(td: &TrustDomain, workflow: &WorkflowName, task: &TaskId) -> Self {
        let uri = format!("spiffe://{td}/workflow/{workflow}/task/{task}");
        Self { uri, td_len: td.as_str().len() }
    }
    pub fn instance(td: &TrustDomain, agent: &AgentName, instance: &InstanceId) -> Self {
        let uri = format!("spiffe://{td}/agent/{agent}/instance/{instance}");
        Self { uri, td_len: td.as_str().len() }
    }

    /// Parses any SPIFFE ID: `spiffe://` scheme, a valid trust domain, and a path whose
    /// segments are non-empty, not `.` or `..`, and made of `A-Za-z0-9.-_`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let bad = |why: &str| DomainError::invalid("spiffe id", format!("`{}` {why}", truncate_for_error(s)));
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(bad("is longer than 2048 bytes"));
        }
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| bad("must start with `spiffe://`"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        TrustDomain::parse(td).map_err(|_| bad("has an invalid trust domain"))?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                let seg_ok = !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
                if !seg_ok {
                    return Err(bad("has an invalid path segment"));
                }
            }
        }
        Ok(Self { uri: s.to_owned(), td_len: td.len() })
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }
    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len().."spiffe://".len() + self.td_len]
    }
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.td_len..]
    }

    /// Interprets the path as one of Remit's own identity shapes.
    pub fn subject(&self) -> Option<Subject> {
        let segs: Vec<&str> = self.path().trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["workflow", wf, "task", t] => {
                Some(Subject::Task { workflow: WorkflowName::parse(wf).ok()?, task: TaskId::parse(t).ok()? })
            }
            ["agent", a, "instance", i] => {
                Some(Subject::Instance { agent: AgentName::parse(a).ok()?, instance: InstanceId::parse(i).ok()? })
            }
            _ => None,
        }
    }
}
impl TryFrom<String> for SpiffeId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}
impl From<SpiffeId> for String {
    fn from(v: SpiffeId) -> String {
        v.uri
    }
}
impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(WorkflowName::parse("deploy-prod").is_ok());
        assert!(WorkflowName::parse("a").is_ok());
        for bad in ["", "-a", "a-", "Deploy", "a_b", "a/b", "a.b", &"x".repeat(64)] {
            assert!(WorkflowName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_ids_round_trip() {
        let t = TaskId::from_random([0xab; 16]);
        assert_eq!(t.as_str(), format!("t-{}", "ab".repeat(16)));
        assert_eq!(TaskId::parse(t.as_str()).unwrap(), t);
        assert!(TaskId::parse("t-ABAB").is_err());
        assert!(TaskId::parse(&format!("i-{}", "ab".repeat(16))).is_err());
    }

    #[test]
    fn spiffe_ids_follow_the_spec() {
        let td = TrustDomain::parse("remit.local").unwrap();
        let wf = WorkflowName::parse("deploy").unwrap();
        let t = TaskId::from_random([1; 16]);
        let id = SpiffeId::task(&td, &wf, &t);
        let parsed = SpiffeId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.trust_domain(), "remit.local");
        assert_eq!(parsed.subject(), Some(Subject::Task { workflow: wf, task: t }));
        for bad in [
            "http://remit.local/x",
            "spiffe://Remit.local/x",
            "spiffe://remit.local//x",
            "spiffe://remit.local/x/",
            "spiffe://remit.local/../x",
            "spiffe://remit.local/a b",
            "spiffe://",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert!(SpiffeId::parse("spiffe://remit.local").unwrap().subject().is_none());
    }
}
