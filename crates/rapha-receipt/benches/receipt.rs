//! Benchmarks (not run in CI): `cargo bench -p rapha-receipt --bench receipt`.
//!
//! 1. Receipt verifications per second on one core (target >= 5,000/s): the full offline check
//!    of `rapha verify` (parse, canonical check, two secp256k1 recoveries — receipt and head —
//!    and the inclusion proof), the same with the head's signature checked once for many
//!    receipts ([`Verifier`], an auditor walking a log), and where the time goes, against
//!    k256's own recovery.
//! 2. Inclusion-proof generation from the SQLite log at 1,000,000 leaves (target < 1 ms each),
//!    and consistency proofs at the same size.
//!
//! Times are this thread's CPU time (getrusage), so other processes on a shared machine
//! inflate them less than wall-clock time would; wall time is printed too.
//! `RAPHA_BENCH_LEAVES=N` changes the log size; `RAPHA_BENCH_SKIP_LOG=1` skips part 2.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a failure should stop it loudly

use std::hint::black_box;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use rapha_core::merkle;
use rapha_receipt::{
    eip712, recover_signer, verify, ReceiptFile, ReceiptLog, Verifier, VerifyOptions,
};

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// Runs `f` `n` times; returns (CPU seconds, wall seconds) per call.
fn time(n: u32, mut f: impl FnMut()) -> (f64, f64) {
    let (c, w) = (cpu(), Instant::now());
    for _ in 0..n {
        f();
    }
    (
        (cpu() - c).as_secs_f64() / f64::from(n),
        w.elapsed().as_secs_f64() / f64::from(n),
    )
}

fn main() {
    let receipt = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/receipt-completed.json"
    ))
    .expect("seed receipt present");
    let opts = VerifyOptions::default();
    verify(&receipt, &opts).expect("seed receipt verifies");
    let n: u32 = std::env::var("RAPHA_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let (c, w) = time(n, || {
        black_box(verify(black_box(&receipt), &opts).is_ok());
    });
    println!(
        "receipt verification: {:.0}/s on one core by CPU time ({:.1} us each; wall {:.0}/s) — target >= 5000/s",
        1.0 / c,
        c * 1e6,
        1.0 / w
    );

    // An auditor walking a log at one signed head checks that head's signature once.
    let reproved = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/receipt-reproved.json"
    ))
    .expect("seed receipt present");
    let mut batch = Verifier::new(VerifyOptions::default());
    batch.verify(&reproved).expect("seed receipt verifies");
    let (c, w) = time(n, || {
        black_box(batch.verify(black_box(&reproved)).is_ok());
    });
    println!(
        "receipt verification against a common signed head (Verifier): {:.0}/s on one core by CPU time ({:.1} us each; wall {:.0}/s)",
        1.0 / c,
        c * 1e6,
        1.0 / w
    );

    let file = ReceiptFile::from_json(&receipt).unwrap();
    let digest = eip712::tree_head_digest(
        file.sth.tree_size,
        rapha_receipt::B256::from(*file.sth.root_hash.as_bytes()),
        file.sth.timestamp,
    );
    let (ours, _) = time(n, || {
        black_box(recover_signer(black_box(&digest), &file.sth.signature).is_ok());
    });
    let ec = k256::ecdsa::Signature::from_slice(&file.sth.signature.0[..64]).unwrap();
    let recid = k256::ecdsa::RecoveryId::new(file.sth.signature.0[64] == 28, false);
    let (peer, _) = time(n, || {
        black_box(
            k256::ecdsa::VerifyingKey::recover_from_prehash(
                black_box(digest.as_slice()),
                &ec,
                recid,
            )
            .is_ok(),
        );
    });
    let (parse, _) = time(n, || {
        black_box(ReceiptFile::from_json(black_box(&receipt)).is_ok());
    });
    println!(
        "  of which: secp256k1 recovery {:.1} us (x2 per receipt; k256 recover_from_prehash {:.1} us, ours {:.2}x faster), parsing the file {:.1} us",
        ours * 1e6,
        peer * 1e6,
        peer / ours,
        parse * 1e6
    );

    if std::env::var("RAPHA_BENCH_SKIP_LOG").is_ok() {
        return;
    }
    let size: u64 = std::env::var("RAPHA_BENCH_LEAVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("rapha-receipt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench-log.sqlite");
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
    let log = ReceiptLog::open(&path).expect("log reopens");
    let root = log.root();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Spot-check correctness before timing.
    for _ in 0..10 {
        let idx = next() % size;
        let p = log.inclusion_proof(idx, size).expect("proof");
        let leaf = merkle::leaf_hash(format!("receipt-{idx}").as_bytes());
        merkle::verify_inclusion(&leaf, idx, size, &p, &root).expect("proof verifies");
    }
    let proofs = 10_000;
    let (c, w) = time(proofs, || {
        let idx = next() % size;
        black_box(log.inclusion_proof(idx, size).expect("proof"));
    });
    println!(
        "inclusion proof at {size} leaves: {:.1} us each by CPU time (wall {:.1} us) over {proofs} random leaves — target < 1000 us",
        c * 1e6,
        w * 1e6
    );
    let (c, w) = time(1000, || {
        let old = 1 + next() % (size - 1);
        black_box(log.consistency_proof(old, size).expect("consistency"));
    });
    println!(
        "consistency proof at {size} leaves: {:.1} us each by CPU time (wall {:.1} us)",
        c * 1e6,
        w * 1e6
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}
