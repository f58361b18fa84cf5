//! RFC 9449 DPoP proofs: verifying one and computing the RFC 7638 thumbprint of its key.
//!
//! A proof is a compact JWS whose header has `typ: dpop+jwt`, an asymmetric `alg` from a
//! short allow-list and the public key as `jwk` (a private member is refused), signed by that
//! key; its claims bind it to one request (`htm`, `htu`), a moment (`iat` within a window), a
//! unique `jti`, and — when it accompanies an access token — that token (`ath`, the base64url
//! SHA-256 of it). Replay (the same `jti` twice) is the caller's to refuse, in a store shared
//! by every replica; the thumbprint is what a bound token's `cnf.jkt` names.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::{b64d, b64e, sha256};

/// Longest proof accepted.
pub const MAX_PROOF_LEN: usize = 4096;
/// The signing algorithms accepted for proofs (asymmetric only).
pub const ALGORITHMS: &[&str] = &["ES256", "ES384", "EdDSA", "RS256", "PS256"];

/// What a verified proof says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

/// Why a proof was refused; no message echoes the proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("DPoP proof `typ` must be `dpop+jwt`")]
    Type,
    #[error("DPoP proof algorithm is not accepted (one of ES256, ES384, EdDSA, RS256, PS256)")]
    Algorithm,
    #[error("DPoP proof `jwk` must be a public key of a supported type")]
    Key,
    #[error("DPoP proof signature is invalid")]
    Signature,
    #[error("DPoP proof is for another method or URL (`htm`/`htu`)")]
    Target,
    #[error("DPoP proof `iat` is outside the accepted window")]
    Time,
    #[error("DPoP proof `ath` does not match the access token")]
    TokenHash,
    #[error("DPoP proof is bound to another key than the token")]
    WrongKey,
    #[error("DPoP proof was already used")]
    Replay,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub method: &'a str,
    /// The request URL without query or fragment (RFC 9449 §4.3).
    pub url: &'a str,
    pub now: i64,
    /// How far `iat` may be from now, seconds.
    pub window: i64,
    /// The access token presented with the proof, if any.
    pub access_token: Option<&'a str>,
}

/// The RFC 7638 thumbprint of a public JWK (EC, OKP or RSA), base64url.
pub fn thumbprint(jwk: &Value) -> Result<String, DpopError> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str).ok_or(DpopError::Key);
    let canonical = match s("kty")? {
        "EC" => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, s("crv")?, s("x")?, s("y")?),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        _ => return Err(DpopError::Key),
    };
    // The members are base64url or curve names; refuse anything that would need escaping.
    if canonical.contains('\\') {
        return Err(DpopError::Key);
    }
    Ok(b64e(&sha256(canonical.as_bytes())))
}

/// The base64url SHA-256 of an access token: a proof's `ath`.
pub fn token_hash(token: &str) -> String {
    b64e(&sha256(token.as_bytes()))
}

/// Verifies a proof for the request `e` describes.
pub fn verify(proof: &str, e: Expect<'_>) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed("longer than 4096 bytes"));
    }
    let h64 = proof.split('.').next().ok_or(DpopError::Malformed("not a JWS"))?;
    if proof.split('.').count() != 3 {
        return Err(DpopError::Malformed("not three dot-separated parts"));
    }
    let header: Header =
        b64d(h64).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(DpopError::Malformed("header is not JSON"))?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    if !ALGORITHMS.contains(&header.alg.as_str()) {
        return Err(DpopError::Algorithm);
    }
    let alg: Algorithm = header.alg.parse().map_err(|_| DpopError::Algorithm)?;
    let jwk_value = header.jwk.ok_or(DpopError::Key)?;
    // A private member in the header is a leaked key: refuse it.
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        if jwk_value.get(private).is_some() {
            return Err(DpopError::Key);
        }
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| DpopError::Key)?;
    let fits = matches!(
        (&jwk.algorithm, alg),
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
            | (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::PS256)
    );
    if !fits {
        return Err(DpopError::Key);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::Key)?;
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let data = jsonwebtoken::decode::<Claims>(proof, &key, &v).map_err(|err| match err.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => DpopError::Signature,
        _ => DpopError::Malformed("claims are not a DPoP proof's"),
    })?;
    let c = data.claims;
    if c.jti.is_empty() || c.jti.len() > 256 {
        return Err(DpopError::Malformed("`jti` must be 1-256 characters"));
    }
    if c.htm != e.method || strip_query(&c.htu) != e.url {
        return Err(DpopError::Target);
    }
    if (c.iat - e.now).abs() > e.window {
        return Err(DpopError::Time);
    }
    match (e.access_token, &c.ath) {
        (Some(t), Some(ath)) if *ath == token_hash(t) => {}
        (Some(_), _) => return Err(DpopError::TokenHash),
        (None, _) => {}
    }
    Ok(Proof { jkt: thumbprint(&jwk_value)?, jti: c.jti, iat: c.iat })
}

fn strip_query(u: &str) -> &str {
    u.split(['?', '#']).next().unwrap_or(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwsHeader, encode};

    /// An EC P-256 key pair: (encoding key, public JWK).
    fn key() -> (EncodingKey, Value) {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let p = pair.public_key().as_ref().to_vec();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64e(&p[1..33]), "y": b64e(&p[33..65])});
        (EncodingKey::from_ec_der(der.as_ref()), jwk)
    }

    fn proof(k: &EncodingKey, jwk: &Value, claims: Value, typ: &str) -> String {
        let mut h = JwsHeader::new(Algorithm::ES256);
        h.typ = Some(typ.into());
        h.jwk = Some(serde_json::from_value(jwk.clone()).unwrap());
        encode(&h, &claims, k).unwrap()
    }

    fn expect(token: Option<&str>) -> Expect<'_> {
        Expect { method: "POST", url: "https://remit.example/oauth2/token", now: 1000, window: 60, access_token: token }
    }

    #[test]
    fn a_proof_verifies_and_names_its_key() {
        let (k, jwk) = key();
        let c =
            serde_json::json!({"jti": "j1", "htm": "POST", "htu": "https://remit.example/oauth2/token", "iat": 1000});
        let p = verify(&proof(&k, &jwk, c, "dpop+jwt"), expect(None)).unwrap();
        assert_eq!(p.jkt, thumbprint(&jwk).unwrap());
        assert_eq!(p.jti, "j1");
    }

    #[test]
    fn every_check_refuses() {
        let (k, jwk) = key();
        let ok =
            serde_json::json!({"jti": "j1", "htm": "POST", "htu": "https://remit.example/oauth2/token", "iat": 1000});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = ok.clone();
            f(&mut c);
            proof(&k, &jwk, c, "dpop+jwt")
        };
        assert_eq!(verify(&proof(&k, &jwk, ok.clone(), "JWT"), expect(None)), Err(DpopError::Type));
        assert_eq!(verify(&with(&|c| c["htm"] = "GET".into()), expect(None)), Err(DpopError::Target));
        assert_eq!(
            verify(&with(&|c| c["htu"] = "https://evil/oauth2/token".into()), expect(None)),
            Err(DpopError::Target)
        );
        assert_eq!(verify(&with(&|c| c["iat"] = 1100.into()), expect(None)), Err(DpopError::Time));
        assert_eq!(verify(&with(&|_| {}), expect(Some("tok"))), Err(DpopError::TokenHash));
        let ath = token_hash("tok");
        assert!(verify(&with(&|c| c["ath"] = ath.clone().into()), expect(Some("tok"))).is_ok());
        // A private key in the header, another key's signature, garbage.
        let mut leaked = jwk.clone();
        leaked["d"] = "AAAA".into();
        let good = proof(&k, &jwk, ok.clone(), "dpop+jwt");
        let h = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": leaked});
        let with_d = format!("{}.{}", b64e(h.to_string().as_bytes()), good.split_once('.').unwrap().1);
        assert_eq!(verify(&with_d, expect(None)), Err(DpopError::Key));
        let (_, other) = key();
        assert_eq!(verify(&proof(&k, &other, ok.clone(), "dpop+jwt"), expect(None)), Err(DpopError::Signature));
        let p = proof(&k, &jwk, ok, "dpop+jwt");
        let hs = format!("{}.{}", b64e(br#"{"typ":"dpop+jwt","alg":"HS256"}"#), p.split_once('.').unwrap().1);
        assert_eq!(verify(&hs, expect(None)), Err(DpopError::Algorithm));
        assert!(verify("a.b", expect(None)).is_err());
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1's example key and thumbprint.
        let jwk = serde_json::json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
