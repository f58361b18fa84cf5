//! RFC 7515 Appendix A.3 (ES256) from `tests/data/jose/`: our JWK decoding,
//! base64url handling and ES256 verification must accept the RFC's own token, and reject it
//! once a single byte of the signing input changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use remit_token::keys::{Jwk, VerifyingKey, public_from_jwk};

fn vector() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/jose/rfc7515-A3-es256.json");
    let text = std::fs::read_to_string(path).expect("tests/data/jose vector must be present");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn rfc7515_a3_es256_verifies() {
    let v = vector();
    let mut jwk_json = v["jwk_public"].clone();
    jwk_json["kid"] = "rfc".into();
    let jwk: Jwk = serde_json::from_value(jwk_json).unwrap();
    let key = VerifyingKey::from_public(&public_from_jwk(&jwk).unwrap()).unwrap();
    let token = v["jws_compact"].as_str().unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = remit_token::b64d(sig).unwrap();
    assert_eq!(sig.len(), 64, "JOSE ES256 signatures are raw r||s");
    assert!(key.verify(input.as_bytes(), &sig));
    let header = remit_token::b64d(input.split('.').next().unwrap()).unwrap();
    assert_eq!(String::from_utf8(header).unwrap(), v["decoded_header"].as_str().unwrap());

    let mut tampered = input.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(!key.verify(&tampered, &sig));
}
