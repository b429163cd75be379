//! Benchmark (not run in CI): `bench/policy.sh`, or
//! `cargo bench -p rapha-policy --bench gates -- CASES.json`.
//!
//! Decisions per second of the two gates under regorus, in process, on one core. Writes the
//! inputs it used to CASES.json so that `bench/policy_regopy.py` times rego-cpp on the same ones.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a failure should stop it loudly

use std::collections::BTreeMap;
use std::time::Instant;

use rapha_core::OutputKind;
use rapha_policy::{
    Gate, HospitalPolicy, JobBudget, Mode, OutputLimits, Policy, PublisherTrust, ScopeLimits,
};
use serde_json::json;

fn main() {
    let out = std::env::args().skip(1).find(|a| a.ends_with(".json"));
    let hospital = HospitalPolicy {
        mode: Mode::Production,
        publishers: BTreeMap::from([(
            "acme-ai".to_owned(),
            PublisherTrust {
                trainers: vec!["cxr".into()],
            },
        )]),
        scope: ScopeLimits {
            max_studies: 500,
            max_date_range_days: 366,
            modalities: vec!["CR".into(), "CT".into()],
        },
        outputs: OutputLimits {
            kinds: vec![OutputKind::Safetensors, OutputKind::MetricsJson],
            max_file_bytes: 1 << 27,
            max_total_bytes: 1 << 28,
            max_release_bits: None,
            max_publisher_bits: None,
            release_precision: Default::default(),
            release_noise_k: Default::default(),
        },
        allowed_metadata_fields: vec!["PatientSex".into()],
        min_fee: "100".parse().unwrap(),
        budget: JobBudget {
            max_jobs: 5,
            window_hours: 720,
        },
        min_patients: 50,
        min_validation_patients: 20,
        resources: rapha_core::ResourceBounds::default(),
        linkage_publishers: vec![],
    };
    let now = 1_800_000_000u64;
    let admission = json!({
        "publisher": "acme-ai", "trainer": "cxr",
        "query": {"study_uids": [], "accession_numbers": [], "date_range_days": 180, "modalities": ["CR"], "limit": 300},
        "requested_fields": ["PatientSex"],
        "outputs": [{"name": "model.safetensors", "kind": "safetensors", "max_bytes": 50_000_000},
                    {"name": "metrics.json", "kind": "metrics-json", "max_bytes": 65_536}],
        "fee": 120_000_000u64, "fee_usdc": "120.000000", "now": now,
        "resources": {"memory_mb": 2048, "cpus": 2, "pids": 64, "wall_seconds": 1800, "tmp_mb": 64},
        "linkage": null,
        "publisher_history": [now - 10, now - 100_000],
        "publisher_jobs": [],
    });
    let digest = rapha_core::Digest::of(b"job").to_hex();
    let final_input = json!({
        "job_digest": digest, "now": now,
        "approval": {"job_digest": digest, "signature_valid": true, "signer_trusted": true,
                     "expires_at": now + 3600, "revoked": false},
        "attestation": {"present": true, "verified": true},
        "cohort": {"patients": 120, "validation_patients": 24},
    });
    let data = hospital.data_json();
    let policy = Policy::builtin().unwrap();
    let n = 2_000u32;
    for (gate, input) in [(Gate::Admission, &admission), (Gate::Final, &final_input)] {
        assert!(policy.evaluate(gate, input, &data).unwrap().allow);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                policy
                    .evaluate(gate, std::hint::black_box(input), &data)
                    .unwrap(),
            );
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "regorus {:<9} {n} decisions in {secs:.3} s = {:.0} decisions/s ({:.1} us each)",
            gate.rule(),
            f64::from(n) / secs,
            secs * 1e6 / f64::from(n)
        );
    }
    if let Some(path) = out {
        let cases = json!([
            {"gate": "admission", "input": admission, "data": data},
            {"gate": "final", "input": final_input, "data": data},
        ]);
        std::fs::write(&path, serde_json::to_vec(&cases).unwrap()).unwrap();
    }
}
