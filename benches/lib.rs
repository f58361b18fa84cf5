//! Benchmarks live in `token.rs` and `store.rs` beside this file; run `cargo bench -p remit-benches`.
