//! Compact-JWS JWT-SVIDs: minting and strict verification.
//!
//! Verification accepts exactly what Remit mints: a header of `alg: ES256`, a known `kid`
//! and optionally `typ: JWT`/`JOSE`, with no other header parameter (so no `crit`, `jku`,
//! `x5u` or embedded `jwk`); a 64-byte signature; and claims whose `exp`, `iat` and `aud`
//! check out. Anything else is refused before a signature is even looked at, which is
//! what defeats `alg: none` and the HS256-with-the-public-key confusion.

use serde::{Deserialize, Serialize};

use crate::keyring::KeyLookup;
use crate::keys::SigningKey;
use crate::{b64d, b64e};

/// Longest token accepted for verification.
pub const MAX_TOKEN_LEN: usize = 8192;
/// The namespaced claim that carries Remit's own facts.
pub const REMIT_CLAIM: &str = "https://remit.dev/claims";

/// What kind of identity a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SvidKind {
    Task,
    Instance,
    /// A per-tool credential from token exchange (RFC 8693): `aud` is one tool, never Remit.
    Tool,
}

/// Remit's own claims, under [`REMIT_CLAIM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemitClaims {
    pub kind: SvidKind,
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
    /// For a per-tool credential: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The human (`h-…`) whose grant the authority comes from: "on behalf of".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// For a per-tool credential of a task held to a resource prefix: the prefix, for the
    /// tool to enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_prefix: Option<String>,
    /// For a per-tool credential: the trust domain it comes from (its tool class's, or the
    /// installation's), whose keys signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
}

/// RFC 8693 §4.1 `act`: the acting party, with the prior actors nested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Nests `chain` (outermost = the current actor first) as RFC 8693 §4.1 says; `None` for
    /// an empty chain.
    pub fn nest(chain: &[String]) -> Option<Actor> {
        chain.iter().rev().fold(None, |inner, sub| Some(Actor { sub: sub.clone(), act: inner.map(Box::new) }))
    }

    /// The chain back out, outermost first.
    pub fn flatten(&self) -> Vec<String> {
        let mut out = vec![self.sub.clone()];
        let mut cur = &self.act;
        while let Some(a) = cur {
            out.push(a.sub.clone());
            cur = &a.act;
        }
        out
    }
}

/// RFC 7800 confirmation: the RFC 7638 thumbprint of the key a token is bound to (RFC 9449).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// The claims of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The SPIFFE ID.
    pub sub: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// Space-separated scopes (per-tool credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The acting party chain (per-tool credentials whose subject is not the actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The key the token is bound to (DPoP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    #[serde(rename = "https://remit.dev/claims")]
    pub remit: RemitClaims,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
}

/// Why a token was refused. Grouped by concern; none of the messages echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm `{0}` is not accepted (only ES256)")]
    Algorithm(String),
    #[error("token names an unknown signing key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token was not issued by this installation")]
    Issuer,
    #[error("token is of another kind than this use accepts")]
    Kind,
    #[error("token is expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token audience does not include `{0}`")]
    Audience(String),
}

/// Signs `claims` with `key` as a compact JWS.
/// The claims of a compact JWS, **unverified**: only to choose which keys verify it (its
/// issuer, its trust domain), never to trust anything in it.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&crate::b64d(payload)?).ok()
}

pub fn mint(key: &SigningKey, claims: &Claims) -> String {
    let header = Header { alg: "ES256", kid: Some(key.kid().to_owned()), typ: Some("JWT") };
    // Serializing these plain structs to JSON cannot fail.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = String::with_capacity(64 + h.len() * 4 / 3 + c.len() * 4 / 3 + 90);
    out.push_str(&b64e(&h));
    out.push('.');
    out.push_str(&b64e(&c));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&b64e(&sig));
    out
}

/// Signs a Security Event Token (RFC 8417) with `key`: header `typ: secevent+jwt` (explicit
/// typing, so a SET is never taken for an access token: [`verify`] refuses that `typ`, and a
/// SET has no `sub` or `exp`). `claims` must be a JSON object.
pub fn mint_set(key: &SigningKey, claims: &serde_json::Value) -> String {
    let header = Header { alg: "ES256", kid: Some(key.kid().to_owned()), typ: Some("secevent+jwt") };
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = format!("{}.{}", b64e(&h), b64e(&c));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&b64e(&sig));
    out
}

/// What to check besides the signature.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    /// Current time, seconds since the epoch.
    pub now: i64,
    /// Allowed clock skew, seconds.
    pub leeway: i64,
    /// The audience the verifier is; `None` skips the check (introspection does).
    pub audience: Option<&'a str>,
    /// The only `iss` accepted: the installation's issuer.
    pub issuer: &'a str,
    /// The one kind of token accepted here; `None` accepts any of Remit's kinds (only
    /// introspection and revocation, which answer for every kind).
    pub kind: Option<SvidKind>,
}

/// Verifies a token's form, header, signature and time/audience claims.
pub fn verify(ring: &impl KeyLookup, token: &str, v: Validation<'_>) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("longer than 8192 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let hb = b64d(h64).ok_or(TokenError::Malformed("header is not base64url"))?;
    let header: Header<'_> =
        serde_json::from_slice(&hb).map_err(|_| TokenError::Malformed("header is not the expected JSON"))?;
    if header.alg != "ES256" {
        return Err(TokenError::Algorithm(remit_core::ids::truncate_for_error(header.alg)));
    }
    if !matches!(header.typ, None | Some("JWT") | Some("JOSE")) {
        return Err(TokenError::Malformed("typ must be JWT"));
    }
    let kid = header.kid.ok_or(TokenError::Malformed("header has no kid"))?;
    let key = ring.verifying_key(&kid).ok_or(TokenError::UnknownKey)?;
    let sig = b64d(s64).ok_or(TokenError::Malformed("signature is not base64url"))?;
    if sig.len() != 64 {
        return Err(TokenError::Signature);
    }
    let signing_input = &token[..h64.len() + 1 + c64.len()];
    if !key.verify(signing_input.as_bytes(), &sig) {
        return Err(TokenError::Signature);
    }
    let cb = b64d(c64).ok_or(TokenError::Malformed("claims are not base64url"))?;
    let claims: Claims = serde_json::from_slice(&cb).map_err(|_| TokenError::Malformed("claims are not a JWT-SVID"))?;
    check_claims(&claims, v)?;
    Ok(claims)
}

/// The time and audience checks alone, for claims whose signature was already verified.
pub fn check_claims(claims: &Claims, v: Validation<'_>) -> Result<(), TokenError> {
    if claims.iss != v.issuer {
        return Err(TokenError::Issuer);
    }
    if let Some(k) = v.kind
        && claims.remit.kind != k
    {
        return Err(TokenError::Kind);
    }
    if claims.exp <= v.now - v.leeway {
        return Err(TokenError::Expired);
    }
    if claims.iat > v.now + v.leeway {
        return Err(TokenError::NotYetValid);
    }
    if let Some(aud) = v.audience
        && !claims.aud.iter().any(|a| a == aud)
    {
        return Err(TokenError::Audience(remit_core::ids::truncate_for_error(aud)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;
    use crate::keys::SigningKey;
    use std::sync::Arc;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "http://remit.test".into(),
            sub: "spiffe://remit.local/workflow/w/task/t-00".into(),
            aud: vec!["tools".into()],
            exp,
            iat: 100,
            jti: "j1".into(),
            remit: RemitClaims {
                kind: SvidKind::Task,
                agent: "bot".into(),
                instance: None,
                workflow: Some("w".into()),
                task: Some("t".into()),
                intent_hash: None,
                sensitivity: None,
                tool: None,
                on_behalf_of: None,
                resource_prefix: None,
                trust_domain: None,
            },
            scope: None,
            act: None,
            cnf: None,
        }
    }

    #[test]
    fn actor_chains_nest_outermost_first() {
        assert_eq!(Actor::nest(&[]), None);
        let a = Actor::nest(&["c".into(), "b".into(), "a".into()]).unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"sub": "c", "act": {"sub": "b", "act": {"sub": "a"}}})
        );
        assert_eq!(a.flatten(), vec!["c", "b", "a"]);
    }

    fn ring() -> (Keyring, Arc<SigningKey>) {
        let k = Arc::new(SigningKey::generate().unwrap());
        (Keyring::new(k.clone(), vec![]), k)
    }

    fn val(now: i64) -> Validation<'static> {
        Validation { now, leeway: 0, audience: Some("tools"), issuer: "http://remit.test", kind: None }
    }

    #[test]
    fn a_security_event_token_is_never_accepted_as_a_token() {
        let (ring, k) = ring();
        // Even carrying every claim a task token has, the explicit `typ` refuses it.
        let mut c = serde_json::to_value(claims(1_000)).unwrap();
        c["events"] = serde_json::json!({"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}});
        let set = mint_set(&k, &c);
        let header: serde_json::Value =
            serde_json::from_slice(&crate::b64d(set.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["typ"], "secevent+jwt");
        assert_eq!(header["kid"], k.kid());
        assert!(matches!(verify(&ring, &set, val(500)), Err(TokenError::Malformed("typ must be JWT"))));
    }

    #[test]
    fn round_trip() {
        let (r, k) = ring();
        let t = mint(&k, &claims(200));
        assert_eq!(verify(&r, &t, val(150)).unwrap(), claims(200));
        let header: serde_json::Value = serde_json::from_slice(&b64d(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": k.kid(), "typ": "JWT"}));
    }

    #[test]
    fn time_and_audience() {
        let (r, k) = ring();
        let t = mint(&k, &claims(200));
        assert_eq!(verify(&r, &t, val(200)), Err(TokenError::Expired));
        assert_eq!(verify(&r, &t, val(50)), Err(TokenError::NotYetValid));
        let v = Validation { now: 150, leeway: 0, audience: Some("other"), issuer: "http://remit.test", kind: None };
        assert!(matches!(verify(&r, &t, v), Err(TokenError::Audience(_))));
        let v = Validation { now: 150, leeway: 0, audience: Some("tools"), issuer: "http://other.test", kind: None };
        assert_eq!(verify(&r, &t, v), Err(TokenError::Issuer));
        // One verifier, an explicit kind: a task token is no instance token.
        let v = Validation {
            now: 150,
            leeway: 0,
            audience: Some("tools"),
            issuer: "http://remit.test",
            kind: Some(SvidKind::Instance),
        };
        assert_eq!(verify(&r, &t, v), Err(TokenError::Kind));
        let v = Validation { kind: Some(SvidKind::Task), ..v };
        assert!(verify(&r, &t, v).is_ok());
    }

    fn with_header(t: &str, h: serde_json::Value) -> String {
        let mut p: Vec<String> = t.split('.').map(str::to_owned).collect();
        p[0] = b64e(h.to_string().as_bytes());
        p.join(".")
    }

    #[test]
    fn forgeries_are_refused() {
        let (r, k) = ring();
        let t = mint(&k, &claims(200));
        // alg none, with and without a signature
        let none = with_header(&t, serde_json::json!({"alg": "none", "kid": k.kid()}));
        assert!(matches!(verify(&r, &none, val(150)), Err(TokenError::Algorithm(_))));
        let parts: Vec<&str> = none.split('.').collect();
        let none_nosig = format!("{}.{}.", parts[0], parts[1]);
        assert!(matches!(verify(&r, &none_nosig, val(150)), Err(TokenError::Algorithm(_))));
        // HS256 keyed with the public key
        let hs = with_header(&t, serde_json::json!({"alg": "HS256", "kid": k.kid(), "typ": "JWT"}));
        assert!(matches!(verify(&r, &hs, val(150)), Err(TokenError::Algorithm(_))));
        // unknown kid
        let other = SigningKey::generate().unwrap();
        assert_eq!(verify(&r, &mint(&other, &claims(200)), val(150)), Err(TokenError::UnknownKey));
        // header re-encoded (signature no longer covers it)
        let re = with_header(&t, serde_json::json!({"alg": "ES256", "kid": k.kid()}));
        assert_eq!(verify(&r, &re, val(150)), Err(TokenError::Signature));
        // extra header parameters
        let crit = with_header(&t, serde_json::json!({"alg": "ES256", "kid": k.kid(), "crit": ["x"]}));
        assert!(matches!(verify(&r, &crit, val(150)), Err(TokenError::Malformed(_))));
        // claims swapped
        let mut p: Vec<String> = t.split('.').map(str::to_owned).collect();
        p[1] = b64e(serde_json::to_string(&claims(99999)).unwrap().as_bytes());
        assert_eq!(verify(&r, &p.join("."), val(150)), Err(TokenError::Signature));
        // garbage
        for g in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(9000)] {
            assert!(verify(&r, g, val(150)).is_err());
        }
    }
}
