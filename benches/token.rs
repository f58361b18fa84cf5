//! JWT-SVID mint and verify, each beside the raw ES256 operation on the same bytes, in one
//! run, so the overhead Remit adds (JSON, base64, header checks) reads off directly; and
//! X.509-SVID issuance beside a raw P-256 key generation plus one ECDSA signature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use criterion::{Criterion, criterion_group, criterion_main};
use remit_token::jwt::{self, Validation};
use remit_token::{Claims, Keyring, RemitClaims, SigningKey, SvidKind};

fn claims() -> Claims {
    Claims {
        iss: "http://127.0.0.1:7878".into(),
        sub: "spiffe://remit.local/workflow/deploy/task/t-0123456789abcdef0123456789abcdef".into(),
        aud: vec!["tools".into()],
        exp: 2_000_000_000,
        iat: 1_700_000_000,
        jti: "0123456789abcdef0123456789abcdef".into(),
        remit: RemitClaims {
            kind: SvidKind::Task,
            agent: "deploy-bot".into(),
            instance: Some("i-0123456789abcdef0123456789abcdef".into()),
            workflow: Some("deploy".into()),
            task: Some("t-0123456789abcdef0123456789abcdef".into()),
            intent_hash: Some("a".repeat(64)),
            sensitivity: Some("internal".into()),
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

fn bench(c: &mut Criterion) {
    let key = Arc::new(SigningKey::generate().unwrap());
    let ring = Keyring::new(key.clone(), vec![]);
    let c0 = claims();
    let token = jwt::mint(&key, &c0);
    let (signing_input, sig64) = token.rsplit_once('.').unwrap();
    let sig = remit_token::b64d(sig64).unwrap();
    let signing_input = signing_input.as_bytes().to_vec();

    // The raw primitive on the very bytes a token signs.
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let raw_sig = raw.sign(&SystemRandom::new(), &signing_input).unwrap();
    let raw_pub = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw.public_key().as_ref().to_vec());

    let mut g = c.benchmark_group("es256");
    g.bench_function("raw_sign", |b| b.iter(|| raw.sign(&SystemRandom::new(), black_box(&signing_input)).unwrap()));
    g.bench_function("jwt_mint", |b| b.iter(|| jwt::mint(&key, black_box(&c0))));
    g.bench_function("raw_verify", |b| {
        b.iter(|| raw_pub.verify(black_box(&signing_input), black_box(raw_sig.as_ref())).unwrap())
    });
    g.bench_function("raw_verify_parsed_key", |b| {
        b.iter(|| assert!(key.verifying.verify(black_box(&signing_input), black_box(&sig))))
    });
    let v = Validation { now: 1_800_000_000, leeway: 30, audience: Some("tools"), issuer: &c0.iss, kind: None };
    g.bench_function("jwt_verify", |b| b.iter(|| jwt::verify(&ring, black_box(&token), v).unwrap()));
    g.finish();

    // A DPoP-bound presentation: the proof (its own ES256 signature, JWK, claims) verified
    // beside the token, versus the bearer token alone.
    let url = "http://127.0.0.1:7878/v1/decisions";
    let p = raw.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": remit_token::b64e(&p[1..33]), "y": remit_token::b64e(&p[33..65])});
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let claims = serde_json::json!({"jti": "bench", "htm": "POST", "htu": url, "iat": 1_800_000_000,
                                    "ath": remit_token::dpop::token_hash(&token)});
    let input = format!(
        "{}.{}",
        remit_token::b64e(header.to_string().as_bytes()),
        remit_token::b64e(claims.to_string().as_bytes())
    );
    let proof_sig = raw.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    let proof = format!("{input}.{}", remit_token::b64e(proof_sig.as_ref()));
    let expect =
        remit_token::dpop::Expect { method: "POST", url, now: 1_800_000_000, window: 30, access_token: Some(&token) };
    assert!(remit_token::dpop::verify(&proof, expect).is_ok());
    let mut g = c.benchmark_group("dpop");
    g.bench_function("bearer_verify", |b| b.iter(|| jwt::verify(&ring, black_box(&token), v).unwrap()));
    g.bench_function("bound_verify", |b| {
        b.iter(|| {
            jwt::verify(&ring, black_box(&token), v).unwrap();
            remit_token::dpop::verify(black_box(&proof), expect).unwrap()
        })
    });
    g.finish();

    // X.509-SVID issuance (a fresh P-256 key, an rcgen certificate signed by the CA) beside
    // its raw parts: generating a P-256 key and one ECDSA signature.
    let ca_key = remit_token::SigningKey::generate().unwrap();
    let now = remit_core::time::UnixMillis(1_800_000_000_000);
    let ca_cert = remit_token::x509::self_signed_ca(&ca_key, "spiffe://bench.local", now, 86_400, [7; 16]).unwrap();
    let chain = vec![ca_cert];
    let ca = remit_token::x509::Ca { key: &ca_key, chain: &chain };
    let asn1 = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let mut g = c.benchmark_group("x509_svid");
    g.bench_function("raw_keygen_and_sign", |b| {
        b.iter(|| {
            let k = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
            black_box(k.public_key());
            asn1.sign(&SystemRandom::new(), black_box(&signing_input)).unwrap()
        })
    });
    g.bench_function("issue", |b| {
        b.iter(|| {
            remit_token::x509::issue_leaf(
                &ca,
                black_box("spiffe://bench.local/agent/a/instance/i-1"),
                now,
                3600,
                [9; 16],
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
