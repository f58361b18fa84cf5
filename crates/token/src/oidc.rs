//! Verifying an ID token from an organisation's OpenID provider (OpenID Connect Core 1.0
//! §3.1.3.7), pure: the caller hands in the provider's JWKS (from its discovery document's
//! `jwks_uri`), what it expects and the time. Kept apart from [`crate::jwt`], which verifies
//! Remit's own tokens and stays ES256-only: providers sign with RS256 by default, so this
//! accepts the asymmetric algorithms the operator allows for that provider (RS256, PS256,
//! ES256, EdDSA, …) and never `none` or an HMAC (`HS*` keyed with the client secret is the
//! classic algorithm-confusion attack).
//!
//! Checks, in order: the header parses and names an allowed asymmetric `alg` and a `kid`; the
//! JWKS has that `kid`, of a type that fits the `alg` (and, if the JWK states an `alg`, the
//! same one); the signature; `iss` equals the provider's issuer exactly; `aud` contains the
//! client id, and with several audiences `azp` is the client id; `exp` is in the future and
//! `iat` not in it (both with the leeway); `nonce` equals the one this sign-in sent (compared
//! in constant time); `sub` is present.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// What a sign-in expects of its ID token.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The provider's issuer, exactly as configured (and as its discovery document says).
    pub issuer: &'a str,
    /// Remit's client id at that provider.
    pub client_id: &'a str,
    /// The `nonce` this sign-in sent in its authorization request.
    pub nonce: &'a str,
    /// Algorithms allowed for this provider (asymmetric only; others are refused anyway).
    pub algorithms: &'a [Algorithm],
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// Clock skew tolerated on `exp` and `iat`, in seconds.
    pub leeway: u64,
}

/// The claims Remit uses from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub auth_time: Option<i64>,
    #[serde(default)]
    pub acr: Option<String>,
    /// Every claim of the token (for a groups claim under another name).
    #[serde(skip)]
    pub all: serde_json::Map<String, serde_json::Value>,
}

/// Why an ID token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    #[error("the ID token's algorithm `{0}` is not allowed for this provider")]
    AlgorithmNotAllowed(String),
    #[error("the ID token names no key id")]
    NoKeyId,
    #[error("the provider's JWKS has no key `{0}`")]
    UnknownKey(String),
    #[error("the provider's key `{0}` does not fit the ID token's algorithm")]
    KeyMismatch(String),
    #[error("the ID token's signature is not valid")]
    BadSignature,
    #[error("the ID token was issued by another issuer")]
    WrongIssuer,
    #[error("the ID token is not for this client")]
    WrongAudience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is issued in the future")]
    IssuedInFuture,
    #[error("the ID token's nonce does not match this sign-in")]
    WrongNonce,
}

/// Only asymmetric algorithms: a provider's ID token is never accepted under `none` or HMAC.
fn asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Whether the JWK's key type can verify `alg`.
fn fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        _ => false,
    }
}

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

/// Verifies `token` against `jwks` and `expect`. An [`IdTokenError::UnknownKey`] may mean the
/// provider rotated its keys: re-read its JWKS once and try again.
pub fn verify_id_token(token: &str, jwks: &JwkSet, expect: &Expect<'_>) -> Result<IdClaims, IdTokenError> {
    verify(token, jwks, expect, Kind::IdToken)
}

/// Verifies a platform's token presented as an RFC 7523 JWT bearer assertion (a Kubernetes
/// service-account token, a CI system's OIDC token): the same checks as an ID token's —
/// algorithm, key, signature, `iss`, `aud` containing `expect.client_id` (the audience the
/// issuer was configured with), `exp`, `iat`, a non-empty `sub` — but no `nonce` (there was no
/// sign-in) and no `azp` rule.
pub fn verify_assertion(token: &str, jwks: &JwkSet, expect: &Expect<'_>) -> Result<IdClaims, IdTokenError> {
    verify(token, jwks, expect, Kind::Assertion)
}

/// Finds `kid` in `jwks`, checks its key type (and its stated `alg`, if any) fits `alg`, and
/// verifies the signature with every claim check off; returns the claims.
fn signed_claims(token: &str, jwks: &JwkSet, alg: Algorithm, kid: String) -> Result<serde_json::Value, IdTokenError> {
    let jwk = jwks.find(&kid).ok_or_else(|| IdTokenError::UnknownKey(kid.clone()))?;
    let stated = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
    if !fits(&jwk.algorithm, alg) || stated.is_some_and(|s| s != format!("{alg:?}")) {
        return Err(IdTokenError::KeyMismatch(kid));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::KeyMismatch(kid.clone()))?;
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
        _ => IdTokenError::Malformed(e.to_string()),
    })?;
    Ok(data.claims)
}

/// Verifies a Security Event Token a configured transmitter sent (RFC 8417, SSF 1.0): `typ`
/// `secevent+jwt`, an allowed asymmetric algorithm, a key of the transmitter's JWKS, `iss`
/// exactly, `aud` naming `audience`, `iat` not in the future (with `leeway`), a `jti`, no `exp`
/// in the past, and `events` holding exactly one event. Returns the claims.
pub fn verify_set(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
    algorithms: &[Algorithm],
    now: i64,
    leeway: i64,
) -> Result<serde_json::Map<String, serde_json::Value>, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let alg = header.alg;
    if !asymmetric(alg) || !algorithms.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    if header.typ.as_deref() != Some("secevent+jwt") {
        return Err(IdTokenError::Malformed("`typ` must be secevent+jwt".into()));
    }
    let kid = header.kid.ok_or(IdTokenError::NoKeyId)?;
    let serde_json::Value::Object(claims) = signed_claims(token, jwks, alg, kid)? else {
        return Err(IdTokenError::Malformed("the claims are not an object".into()));
    };
    if claims.get("iss").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(IdTokenError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(IdTokenError::WrongAudience);
    }
    let iat = claims.get("iat").and_then(|v| v.as_i64()).ok_or_else(|| IdTokenError::Malformed("no `iat`".into()))?;
    if iat > now.saturating_add(leeway) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if claims.get("exp").and_then(|v| v.as_i64()).is_some_and(|e| e.saturating_add(leeway) <= now) {
        return Err(IdTokenError::Expired);
    }
    if claims.get("jti").and_then(|v| v.as_str()).is_none_or(|j| j.is_empty() || j.len() > 256) {
        return Err(IdTokenError::Malformed("no usable `jti`".into()));
    }
    if claims.get("events").and_then(|v| v.as_object()).is_none_or(|e| e.len() != 1) {
        return Err(IdTokenError::Malformed("`events` must hold exactly one event".into()));
    }
    Ok(claims)
}

#[derive(PartialEq, Eq)]
enum Kind {
    IdToken,
    Assertion,
}

fn verify(token: &str, jwks: &JwkSet, expect: &Expect<'_>, kind: Kind) -> Result<IdClaims, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let alg = header.alg;
    if !asymmetric(alg) || !expect.algorithms.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    let kid = header.kid.ok_or(IdTokenError::NoKeyId)?;
    // The signature first: the claims are checked below, each with its own error, and only
    // on a token whose signature holds.
    let data = signed_claims(token, jwks, alg, kid)?;
    let mut claims: IdClaims =
        serde_json::from_value(data.clone()).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let extra: Extra = serde_json::from_value(data.clone()).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    if let serde_json::Value::Object(all) = data {
        claims.all = all;
    }
    if claims.iss != expect.issuer {
        return Err(IdTokenError::WrongIssuer);
    }
    let auds: Vec<&str> = match &extra.aud {
        Audience::One(a) => vec![a.as_str()],
        Audience::Many(list) => list.iter().map(String::as_str).collect(),
        Audience::None => vec![],
    };
    if !auds.contains(&expect.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    if kind == Kind::IdToken && auds.len() > 1 && extra.azp.as_deref() != Some(expect.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    let leeway = i64::try_from(expect.leeway).unwrap_or(i64::MAX / 2);
    if claims.exp.saturating_add(leeway) <= expect.now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat.saturating_sub(leeway) > expect.now {
        return Err(IdTokenError::IssuedInFuture);
    }
    let nonce_ok = extra.nonce.as_deref().is_some_and(|n| bool::from(n.as_bytes().ct_eq(expect.nonce.as_bytes())));
    if kind == Kind::IdToken && (!nonce_ok || expect.nonce.is_empty()) {
        return Err(IdTokenError::WrongNonce);
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::Malformed("`sub` is empty".into()));
    }
    Ok(claims)
}

/// The JWT-SVID algorithms (SPIFFE JWT-SVID §3: RS, ES and PS with SHA-256/384/512).
const JWT_SVID_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Validates a JWT-SVID of a *federated* trust domain against that domain's JWT bundle
/// (SPIFFE JWT-SVID §5): an allowed algorithm, a `kid` the bundle holds with a fitting key, the
/// signature, a `sub` that is a SPIFFE ID of `trust_domain`, `aud` containing `audience`, and
/// `exp` (with `leeway`). Returns the SPIFFE ID and every claim.
pub fn verify_jwt_svid(
    token: &str,
    jwks: &JwkSet,
    trust_domain: &str,
    audience: &str,
    now: i64,
    leeway: u64,
) -> Result<(String, serde_json::Map<String, serde_json::Value>), IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    let alg = header.alg;
    if !JWT_SVID_ALGORITHMS.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    if !matches!(header.typ.as_deref(), None | Some("JWT") | Some("JOSE")) {
        return Err(IdTokenError::Malformed("`typ` must be JWT or JOSE".into()));
    }
    let kid = header.kid.ok_or(IdTokenError::NoKeyId)?;
    let data = signed_claims(token, jwks, alg, kid)?;
    let serde_json::Value::Object(claims) = data else {
        return Err(IdTokenError::Malformed("the claims are not an object".into()));
    };
    let sub = claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default();
    let id = remit_core::ids::SpiffeId::parse(sub)
        .map_err(|_| IdTokenError::Malformed("`sub` is not a SPIFFE ID".into()))?;
    if id.trust_domain() != trust_domain || id.path().is_empty() {
        return Err(IdTokenError::WrongIssuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(IdTokenError::WrongAudience);
    }
    let exp = claims.get("exp").and_then(|e| e.as_i64()).ok_or_else(|| IdTokenError::Malformed("no `exp`".into()))?;
    if exp.saturating_add(i64::try_from(leeway).unwrap_or(i64::MAX / 2)) <= now {
        return Err(IdTokenError::Expired);
    }
    Ok((sub.to_owned(), claims))
}
