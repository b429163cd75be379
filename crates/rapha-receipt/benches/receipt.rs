//! Benchmarks (not run in CI): `cargo bench -p rapha-receipt --bench receipt`.
//!
//! 1. Receipt verifications per second on one core (target >= 5,000/s): the full offline check
//!    of `rapha verify` (parse, canonical check, EIP-712 recovery, head signature, inclusion).
//! 2. Inclusion-proof generation from the SQLite log at 1,000,000 leaves (target < 1 ms each),
//!    and consistency proofs at the same size.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a failure should stop it loudly

use std::time::Instant;

use rapha_core::merkle;
use rapha_receipt::{verify, ReceiptLog, VerifyOptions};

fn main() {
    let receipt = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/receipt-completed.json"
    ))
    .expect("seed receipt present");
    let opts = VerifyOptions::default();
    verify(&receipt, &opts).expect("seed receipt verifies");
    let n = 5_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(verify(std::hint::black_box(&receipt), &opts).is_ok());
    }
    let secs = t.elapsed().as_secs_f64();
    println!("receipt verification: {n} in {secs:.3} s = {:.0} verifications/s (one core; target >= 5000/s)", f64::from(n) / secs);

    let size: u64 = std::env::var("RAPHA_BENCH_LEAVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile_dir();
    let path = dir.join("bench-log.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut log = ReceiptLog::open(&path).expect("log opens");
    let t = Instant::now();
    let chunk = 50_000u64;
    let mut i = 0u64;
    while i < size {
        let items: Vec<Vec<u8>> = (i..(i + chunk).min(size))
            .map(|j| format!("receipt-{j}").into_bytes())
            .collect();
        log.append_batch(&items).expect("append");
        i += items.len() as u64;
    }
    println!(
        "built a log of {size} leaves in {:.1} s (batched appends of {chunk})",
        t.elapsed().as_secs_f64()
    );
    drop(log);
    let log = ReceiptLog::open(&path).expect("log reopens"); // cold caches: proofs come from disk pages
    let root = log.root();
    let proofs = 10_000u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let t = Instant::now();
    let mut checked = 0;
    for k in 0..proofs {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let idx = x % size;
        let p = log.inclusion_proof(idx, size).expect("proof");
        if k % 1000 == 0 {
            let leaf = merkle::leaf_hash(format!("receipt-{idx}").as_bytes());
            merkle::verify_inclusion(&leaf, idx, size, &p, &root).expect("proof verifies");
            checked += 1;
        }
        std::hint::black_box(p);
    }
    let per = t.elapsed().as_secs_f64() / proofs as f64;
    println!(
        "inclusion proof at {size} leaves: {:.1} us each over {proofs} random leaves ({checked} verified; target < 1000 us)",
        per * 1e6
    );
    let t = Instant::now();
    for k in 1..=1000u64 {
        std::hint::black_box(
            log.consistency_proof(size - k * 997 % (size - 1), size)
                .expect("consistency"),
        );
    }
    println!(
        "consistency proof at {size} leaves: {:.1} us each",
        t.elapsed().as_secs_f64() / 1000.0 * 1e6
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rapha-receipt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
