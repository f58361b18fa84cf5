//! The leak guard's scan throughput with 10,000 stored secrets, against same-run references:
//! SHA-256 over the same text (a keyed-hash-per-byte guard would be far slower than this) and
//! the credential-format regexes alone.
//!
//! `cargo bench -p remit-benches --bench leak`

use aws_lc_rs::hmac;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use remit_token::leak::{Index, scan_formats};

/// A deterministic pseudo-random byte stream (xorshift), printable.
fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b' ' + (x % 94) as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut idx = Index::new(hmac::Key::new(hmac::HMAC_SHA256, b"bench key"), 0x9e37_79b9_7f4a_7c15);
    for i in 0..10_000u64 {
        let secret = text(40, i * 7919 + 3);
        assert!(idx.add(&format!("tool/secret-{i}@1"), "fp", &secret));
    }
    // One MiB of prompt-like text with three stored secrets pasted in.
    let mut body = text(1 << 20, 42);
    for (k, at) in [(17u64, 1000usize), (5000, 500_000), (9999, 1_000_000)] {
        body[at..at + 40].copy_from_slice(&text(40, k * 7919 + 3));
    }
    assert_eq!(idx.scan(&body).len(), 3);
    let mut g = c.benchmark_group("leak_guard");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("stored_secrets_10k", |b| b.iter(|| idx.scan(&body)));
    g.bench_function("formats", |b| b.iter(|| scan_formats(&body)));
    g.bench_function("sha256_reference", |b| b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
