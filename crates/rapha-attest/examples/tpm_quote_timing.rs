//! Times TPM enrolment, quote generation and quote verification against a manufactured swtpm.
//! Run through `bench/tpm_quote.sh`; a measurement, not a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark: a panic is a failure

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rapha_attest::tpm::{
    connect, enroll_ak, record_pcr_policy, TpmAttester, TpmVerifier, VendorRoots,
};
use rapha_core::Digest;
use rapha_testkit::services::Swtpm;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let mean = v.iter().sum::<Duration>() / u32::try_from(v.len()).unwrap();
    println!(
        "{name:<22} n={:<3} mean {:>8.2} ms  median {:>8.2} ms  min {:>8.2} ms  max {:>8.2} ms",
        v.len(),
        mean.as_secs_f64() * 1e3,
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(30);
    let Some(tpm) = rapha_testkit::require!(Swtpm::start_provisioned()) else {
        return;
    };
    let roots = VendorRoots::from_pem_file(tpm.ek_ca_cert_pem().unwrap()).unwrap();
    let selection: BTreeSet<u8> = [0, 1, 2, 3, 4, 7, 14].into_iter().collect();

    let mut ctx = connect(&tpm.tcti()).unwrap();
    let t = Instant::now();
    let certified = enroll_ak(&mut ctx, &roots).unwrap();
    let enrol = t.elapsed();
    let policy = record_pcr_policy(&mut ctx, &selection).unwrap();
    drop(ctx);
    let mut verifier = TpmVerifier::new(roots, policy);
    verifier.trust_ak(certified.record()).unwrap();

    let t = Instant::now();
    let mut attester = TpmAttester::open(&tpm.tcti(), certified).unwrap();
    let open = t.elapsed();

    let (mut quote_t, mut verify_t) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let binding = Digest::of(format!("job {i}").as_bytes());
        let t = Instant::now();
        let ev = attester.quote(&selection, &binding).unwrap();
        quote_t.push(t.elapsed());
        let t = Instant::now();
        verifier.verify(&ev, &binding).unwrap();
        verify_t.push(t.elapsed());
    }
    println!("swtpm {}; PCR selection sha256:{selection:?}", tpm.tcti());
    stats("enrol AK (once)", vec![enrol]);
    stats("open attester (per run)", vec![open]);
    stats("quote (read+quote+read)", quote_t);
    stats("verify (software)", verify_t);
}
