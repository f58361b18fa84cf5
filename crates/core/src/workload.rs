//! Workload attestation: selectors and registration entries.
//!
//! A **selector** is one attested fact about a caller, as `type:key:value`:
//! - `unix:uid:<n>`, `unix:gid:<n>` — the socket peer's user and group;
//! - `unix:path:<absolute path>` — its executable;
//! - `unix:sha256:<64 hex digits>` — the SHA-256 of its executable's content;
//! - `oidc:<issuer>:<claim>:<value>` — a claim of a platform token (Kubernetes
//!   service-account tokens, CI OIDC tokens) from a configured issuer.
//!
//! A **registration entry** maps a set of selectors to an agent (and optionally a workflow
//! its instances are held to). A caller matches an entry when it has *every* selector of the
//! entry; among matching entries the most specific wins: the most selectors, then the
//! earliest registered, then the smallest id — so the choice never depends on storage order.
//! A caller that matches none gets nothing, and is told nothing about which entries exist.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgentName, EntryId, WorkflowName};
use crate::time::UnixMillis;

/// Longest selector accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 1024;
/// Most selectors one entry (or one attestation) carries.
pub const MAX_SELECTORS: usize = 32;
/// Longest hint.
pub const MAX_HINT_LEN: usize = 64;

/// One attested fact about a caller, validated and in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector(String);

fn bad(s: &str, why: &str) -> DomainError {
    let shown: String = s.chars().take(80).collect();
    DomainError::invalid("selector", format!("`{shown}` {why}"))
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(bad(s, "is longer than 1024 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad(s, "contains a control character"));
        }
        let (ty, rest) = s.split_once(':').ok_or_else(|| bad(s, "must look like `type:key:value`"))?;
        let (key, value) = rest.split_once(':').ok_or_else(|| bad(s, "must look like `type:key:value`"))?;
        let ok = match (ty, key) {
            ("unix", "uid" | "gid") => {
                value.parse::<u32>().is_ok() && !value.starts_with('+') && (value == "0" || !value.starts_with('0'))
            }
            ("unix", "path") => value.starts_with('/') && !value.contains('\0'),
            ("unix", "sha256") => {
                value.len() == 64 && value.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            }
            ("unix", _) => return Err(bad(s, "is not one of unix:uid, unix:gid, unix:path, unix:sha256")),
            ("oidc", issuer) => {
                crate::ids::AgentName::parse(issuer).is_ok()
                    && value.split_once(':').is_some_and(|(claim, v)| {
                        !claim.is_empty()
                            && claim.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
                            && !v.is_empty()
                    })
            }
            _ => return Err(bad(s, "has an unknown type (expected `unix` or `oidc`)")),
        };
        if !ok {
            return Err(bad(s, "has an invalid value"));
        }
        Ok(Selector(s.to_owned()))
    }

    pub fn unix_uid(uid: u32) -> Self {
        Selector(format!("unix:uid:{uid}"))
    }
    pub fn unix_gid(gid: u32) -> Self {
        Selector(format!("unix:gid:{gid}"))
    }
    /// `None` when the path is not absolute UTF-8 without control characters.
    pub fn unix_path(path: &str) -> Option<Self> {
        Self::parse(&format!("unix:path:{path}")).ok()
    }
    pub fn unix_sha256(digest: &[u8; 32]) -> Self {
        Selector(format!("unix:sha256:{}", hex::encode(digest)))
    }
    /// A claim of a federated platform token; `None` if it cannot be a selector.
    pub fn oidc(issuer: &str, claim: &str, value: &str) -> Option<Self> {
        Self::parse(&format!("oidc:{issuer}:{claim}:{value}")).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Selector {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}
impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.0
    }
}
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    /// Sorted, without duplicates, 1..=[`MAX_SELECTORS`].
    pub selectors: BTreeSet<Selector>,
    pub agent: AgentName,
    /// When set, instances attested through this entry start tasks in this workflow only.
    pub workflow: Option<WorkflowName>,
    /// The Workload API's `hint` for the SVIDs issued through it.
    pub hint: Option<String>,
    pub created_at: UnixMillis,
    pub created_by: String,
}

impl Entry {
    /// Checks the selector set and hint of a new entry.
    pub fn validate(selectors: &BTreeSet<Selector>, hint: Option<&str>) -> Result<(), DomainError> {
        if selectors.is_empty() {
            return Err(DomainError::invalid("entry", "an entry needs at least one selector"));
        }
        if selectors.len() > MAX_SELECTORS {
            return Err(DomainError::invalid("entry", format!("an entry has at most {MAX_SELECTORS} selectors")));
        }
        let kinds: BTreeSet<&str> =
            selectors.iter().map(|s| if s.0.starts_with("oidc:") { "oidc" } else { "unix" }).collect();
        if kinds.len() > 1 {
            return Err(DomainError::invalid("entry", "an entry's selectors are all `unix:` or all `oidc:`"));
        }
        // A process can connect and then `exec` another program before it is attested, so
        // an executable's path or hash alone never names an agent: a Unix user or group must.
        let unix = kinds.contains("unix");
        let has_user = selectors.iter().any(|s| s.0.starts_with("unix:uid:") || s.0.starts_with("unix:gid:"));
        if unix && !has_user {
            return Err(DomainError::invalid(
                "entry",
                "a `unix:` entry needs `unix:uid` or `unix:gid` (an executable's path or hash alone names nobody)",
            ));
        }
        if let Some(h) = hint
            && (h.is_empty() || h.len() > MAX_HINT_LEN || h.chars().any(char::is_control))
        {
            return Err(DomainError::invalid("entry", format!("a hint is 1-{MAX_HINT_LEN} printable characters")));
        }
        Ok(())
    }

    /// Whether a caller with `attested` selectors has every selector of this entry.
    pub fn matches(&self, attested: &BTreeSet<Selector>) -> bool {
        self.selectors.is_subset(attested)
    }
}

/// The entry a caller with `attested` selectors is, if any: the most specific match (most
/// selectors, then earliest created, then smallest id).
pub fn select<'a>(entries: &'a [Entry], attested: &BTreeSet<Selector>) -> Option<&'a Entry> {
    entries.iter().filter(|e| e.matches(attested)).min_by(|a, b| {
        b.selectors.len().cmp(&a.selectors.len()).then(a.created_at.cmp(&b.created_at)).then_with(|| a.id.cmp(&b.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &[&str]) -> BTreeSet<Selector> {
        s.iter().map(|s| Selector::parse(s).unwrap()).collect()
    }

    fn entry(n: u8, agent: &str, s: &[&str], at: i64) -> Entry {
        Entry {
            id: EntryId::from_random([n; 16]),
            selectors: sel(s),
            agent: AgentName::parse(agent).unwrap(),
            workflow: None,
            hint: None,
            created_at: UnixMillis(at),
            created_by: "admin".into(),
        }
    }

    #[test]
    fn selectors_are_validated() {
        for ok in [
            "unix:uid:0",
            "unix:uid:1000",
            "unix:gid:4294967295",
            "unix:path:/usr/bin/python3",
            "unix:sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "oidc:k8s:sub:system:serviceaccount:ns:sa",
        ] {
            assert!(Selector::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "unix:uid:-1",
            "unix:uid:01",
            "unix:uid:4294967296",
            "unix:path:relative",
            "unix:sha256:E3B0",
            "unix:pid:1",
            "k8s:ns:default",
            "unix:uid",
            "oidc:k8s:sub",
            "oidc:K8S:sub:x",
            "unix:path:/a\nb",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_most_specific_entry_wins_whatever_the_order() {
        let broad = entry(1, "any-python", &["unix:uid:1000"], 1);
        let narrow = entry(2, "deploy-bot", &["unix:uid:1000", "unix:path:/opt/deploy"], 2);
        let other = entry(3, "other", &["unix:uid:1001"], 0);
        let caller = sel(&["unix:uid:1000", "unix:gid:1000", "unix:path:/opt/deploy"]);
        for order in [vec![&broad, &narrow, &other], vec![&other, &narrow, &broad], vec![&narrow, &broad, &other]] {
            let v: Vec<Entry> = order.into_iter().cloned().collect();
            assert_eq!(select(&v, &caller).unwrap().agent.as_str(), "deploy-bot");
        }
        // Every selector of an entry must match.
        assert_eq!(select(std::slice::from_ref(&narrow), &sel(&["unix:uid:1000"])), None);
        // Ties go to the earliest entry, then the smallest id.
        let a = entry(9, "first", &["unix:gid:5"], 1);
        let b = entry(4, "second", &["unix:gid:5"], 2);
        let c = entry(3, "third", &["unix:gid:5"], 2);
        assert_eq!(select(&[b.clone(), a.clone()], &sel(&["unix:gid:5"])).unwrap().agent.as_str(), "first");
        assert_eq!(select(&[b, c], &sel(&["unix:gid:5"])).unwrap().agent.as_str(), "third");
    }

    #[test]
    fn entries_are_checked() {
        assert!(Entry::validate(&BTreeSet::new(), None).is_err());
        assert!(Entry::validate(&sel(&["unix:uid:1", "oidc:ci:sub:x"]), None).is_err());
        assert!(Entry::validate(&sel(&["unix:uid:1"]), Some("")).is_err());
        assert!(Entry::validate(&sel(&["unix:uid:1"]), Some("internal")).is_ok());
        assert!(Entry::validate(&sel(&["unix:path:/opt/bot"]), None).is_err(), "a path alone names nobody");
        assert!(Entry::validate(&sel(&["unix:gid:5", "unix:path:/opt/bot"]), None).is_ok());
    }
}
