//! The leak guard: finds stored secrets and common credential formats in a text (a prompt, a
//! tool's output, a log line, a file) and says where, never what.
//!
//! **Stored secrets** are indexed without keeping them in clear: for each secret, the
//! fixed-length windows ([`WINDOW`] bytes) at every [`STRIDE`]th offset (and the last one) go
//! into a table under a rolling hash with a random base (in memory only, never stored), each
//! with an HMAC of the window under the installation's fingerprint key, plus an HMAC of the
//! whole value. A scan rolls the hash over the text (one multiply-add per byte), and a table
//! hit is confirmed by the window's HMAC, so a hash collision never reports a secret. A
//! match of the whole value is `complete`; a window alone (a partial paste of at least
//! `WINDOW + STRIDE - 1` bytes is always caught) is not. Secrets shorter than [`WINDOW`] are
//! not indexed.
//!
//! **Credential formats** (cloud keys, tokens, private keys, Remit's own credentials) are
//! matched by regular expressions; their findings carry the kind only.
//!
//! A finding names the offset, length, kind and (for a stored secret) the secret's reference
//! and fingerprint; the matched text is never part of it. No IO.

use std::collections::HashMap;
use std::sync::LazyLock;

use aws_lc_rs::hmac;
use regex::bytes::Regex;

/// The indexed window length: the shortest secret the guard can find.
pub const WINDOW: usize = 12;
/// The distance between indexed windows of one secret.
pub const STRIDE: usize = 4;

/// Where a secret was found, or a credential-shaped text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// Byte offset in the scanned text.
    pub offset: usize,
    /// Bytes matched.
    pub length: usize,
    /// `stored_secret`, or a credential format (`aws_access_key_id`, `jwt`, …).
    pub kind: String,
    /// For a stored secret: which one (e.g. `tickets/api-key@3`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret: Option<String>,
    /// For a stored secret: its keyed fingerprint.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
    /// For a stored secret: whether the whole value is there (else a part of it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub complete: Option<bool>,
}

struct Window {
    secret: u32,
    offset: u32,
    mac: [u8; 16],
}

struct Indexed {
    reference: String,
    fingerprint: String,
    len: usize,
    mac: [u8; 16],
}

/// The rolling hash is already a hash: the table uses it as is.
#[derive(Default)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Bits in the prefilter: most text positions are ruled out by one bit test.
const FILTER_BITS: usize = 1 << 23;

/// The index of stored secrets' windows.
pub struct Index {
    key: hmac::Key,
    base: u64,
    /// `base^(WINDOW-1)`, to take the leaving byte out of the rolling hash.
    top: u64,
    /// One bit per (high bits of a) window hash present in `table`.
    filter: Vec<u64>,
    table: HashMap<u64, Vec<Window>, std::hash::BuildHasherDefault<Identity>>,
    secrets: Vec<Indexed>,
}

fn filter_slot(h: u64) -> (usize, u64) {
    // The high bits: the low ones of a multiplicative hash mix least.
    let bit = (h >> 40) as usize % FILTER_BITS;
    (bit / 64, 1u64 << (bit % 64))
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({} secrets, {} windows)", self.secrets.len(), self.table.len())
    }
}

fn mac16(key: &hmac::Key, data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hmac::sign(key, data).as_ref()[..16]);
    out
}

impl Index {
    /// An empty index whose windows are confirmed under `key` (the fingerprint key); `seed`
    /// picks the rolling hash's base (random per process).
    pub fn new(key: hmac::Key, seed: u64) -> Index {
        let base = seed | 1;
        let top = (1..WINDOW).fold(1u64, |acc, _| acc.wrapping_mul(base));
        Index { key, base, top, filter: vec![0; FILTER_BITS / 64], table: HashMap::default(), secrets: Vec::new() }
    }

    fn hash(&self, w: &[u8]) -> u64 {
        w.iter().fold(0u64, |h, &b| h.wrapping_mul(self.base).wrapping_add(u64::from(b) + 1))
    }

    /// Indexes `value` as `reference` (with its `fingerprint`); false (not indexed) when it
    /// is shorter than [`WINDOW`].
    pub fn add(&mut self, reference: &str, fingerprint: &str, value: &[u8]) -> bool {
        if value.len() < WINDOW {
            return false;
        }
        let Ok(id) = u32::try_from(self.secrets.len()) else { return false };
        let last = value.len() - WINDOW;
        let mut offsets: Vec<usize> = (0..=last).step_by(STRIDE).collect();
        if offsets.last() != Some(&last) {
            offsets.push(last);
        }
        for o in offsets {
            let w = &value[o..o + WINDOW];
            let entry = Window { secret: id, offset: o as u32, mac: mac16(&self.key, w) };
            let h = self.hash(w);
            let (word, bit) = filter_slot(h);
            self.filter[word] |= bit;
            self.table.entry(h).or_default().push(entry);
        }
        self.secrets.push(Indexed {
            reference: reference.to_owned(),
            fingerprint: fingerprint.to_owned(),
            len: value.len(),
            mac: mac16(&self.key, value),
        });
        true
    }

    /// How many secrets are indexed.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The stored secrets in `text`: one finding per secret and start, in text order.
    pub fn scan(&self, text: &[u8]) -> Vec<Finding> {
        let mut found: HashMap<(u32, usize), Finding> = HashMap::new();
        if text.len() < WINDOW || self.table.is_empty() {
            return vec![];
        }
        let mut h = self.hash(&text[..WINDOW]);
        let mut p = 0;
        loop {
            let (word, bit) = filter_slot(h);
            if self.filter[word] & bit != 0
                && let Some(cands) = self.table.get(&h)
            {
                self.confirm(text, p, cands, &mut found);
            }
            if p + WINDOW >= text.len() {
                break;
            }
            let out = u64::from(text[p]) + 1;
            let inn = u64::from(text[p + WINDOW]) + 1;
            h = h.wrapping_sub(out.wrapping_mul(self.top)).wrapping_mul(self.base).wrapping_add(inn);
            p += 1;
        }
        let mut v: Vec<Finding> = found.into_values().collect();
        v.sort_by(|a, b| (a.offset, &a.secret).cmp(&(b.offset, &b.secret)));
        v
    }

    fn confirm(&self, text: &[u8], p: usize, cands: &[Window], found: &mut HashMap<(u32, usize), Finding>) {
        let mac = mac16(&self.key, &text[p..p + WINDOW]);
        for c in cands.iter().filter(|c| c.mac == mac) {
            let s = &self.secrets[c.secret as usize];
            let start = p.saturating_sub(c.offset as usize);
            let complete = p >= c.offset as usize
                && start + s.len <= text.len()
                && mac16(&self.key, &text[start..start + s.len]) == s.mac;
            let (offset, length) = if complete { (start, s.len) } else { (p, WINDOW) };
            let key = (c.secret, if complete { start } else { p });
            // A complete match supersedes the partial ones of the same occurrence.
            if complete {
                found.retain(|(sid, at), f| {
                    !(*sid == c.secret && f.complete == Some(false) && *at >= start && *at < start + s.len)
                });
            } else if found
                .iter()
                .any(|((sid, at), f)| *sid == c.secret && f.complete == Some(true) && p >= *at && p < *at + f.length)
            {
                continue;
            }
            found.entry(key).or_insert_with(|| Finding {
                offset,
                length,
                kind: "stored_secret".into(),
                secret: Some(s.reference.clone()),
                fingerprint: Some(s.fingerprint.clone()),
                complete: Some(complete),
            });
        }
    }
}

/// Credential formats, by kind.
static FORMATS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    let f = |kind, re: &str| {
        // The patterns are constants, checked by the tests.
        #[allow(clippy::expect_used)]
        (kind, Regex::new(re).expect("a valid credential pattern"))
    };
    vec![
        f("private_key", r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
        f("aws_access_key_id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"),
        f("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b"),
        f("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
        f("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
        f("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
        f("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),
        f("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}\b"),
        f("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{32,}\b"),
        f(
            "remit_credential",
            r"\bremit_(?:admin_|metrics_|scim_)[A-Za-z0-9_-]{20,}|\bremit_(?:tool\.[a-z0-9._-]+|s|r|gc)\.[A-Za-z0-9_.-]{20,}",
        ),
        f("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    ]
});

/// Credential-shaped texts, in text order (one finding per match and kind).
pub fn scan_formats(text: &[u8]) -> Vec<Finding> {
    let mut v: Vec<Finding> = FORMATS
        .iter()
        .flat_map(|(kind, re)| {
            re.find_iter(text).map(|m| Finding {
                offset: m.start(),
                length: m.len(),
                kind: (*kind).to_owned(),
                secret: None,
                fingerprint: None,
                complete: None,
            })
        })
        .collect();
    v.sort_by(|a, b| (a.offset, &a.kind).cmp(&(b.offset, &b.kind)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        let mut i = Index::new(hmac::Key::new(hmac::HMAC_SHA256, b"k"), 0x9e37_79b9_7f4a_7c15);
        assert!(i.add("tickets/api-key@1", "fp_1", b"tk_9f8e7d6c5b4a39281706"));
        assert!(i.add("db/password@2", "fp_2", b"correct horse battery staple"));
        assert!(!i.add("short@1", "fp_3", b"hunter2"));
        i
    }

    #[test]
    fn finds_stored_secrets_whole_and_in_part_and_nothing_else() {
        let i = index();
        let text = b"Use the key tk_9f8e7d6c5b4a39281706 to call; pw: correct horse battery staple.";
        let f = i.scan(text);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].offset, f[0].length, f[0].complete), (12, 23, Some(true)));
        assert_eq!(f[0].secret.as_deref(), Some("tickets/api-key@1"));
        assert_eq!(&text[f[1].offset..f[1].offset + f[1].length], b"correct horse battery staple");
        // A partial paste (the first few bytes cut off) is still found, as partial.
        let part = b"...8e7d6c5b4a39281706...";
        let f = i.scan(part);
        assert!(!f.is_empty() && f.iter().all(|x| x.complete == Some(false)), "{f:?}");
        // Near misses, and text without secrets, find nothing.
        assert!(i.scan(b"tk_9f8e7d6c and 5b4a392817, not tk_9f8e7d6cX5b4a39").is_empty());
        assert!(i.scan(b"").is_empty() && i.scan(b"short").is_empty());
        // At the very start and the very end of a text.
        assert_eq!(i.scan(b"tk_9f8e7d6c5b4a39281706")[0].complete, Some(true));
        // Findings never carry the value.
        let json = serde_json::to_string(&i.scan(text)).unwrap();
        assert!(!json.contains("tk_9f8e") && !json.contains("horse"), "{json}");
    }

    #[test]
    fn finds_credential_formats() {
        let text = "aws AKIAIOSFODNN7EXAMPLE gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 \
                    -----BEGIN PRIVATE KEY----- remit_admin_AbCdEfGhIjKlMnOpQrStUvWx \
                    eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl plain words";
        let kinds: Vec<String> = scan_formats(text.as_bytes()).into_iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["aws_access_key_id", "github_token", "private_key", "remit_credential", "jwt"]);
        assert!(scan_formats(b"nothing to see here, AKIA123").is_empty());
    }
}
