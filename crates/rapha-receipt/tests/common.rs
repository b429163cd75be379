//! Fixtures shared by the tests: keys, a full receipt body, the independent tools.

use std::collections::BTreeMap;

use rapha_core::release::LeakageBound;
use rapha_core::{Digest, JobId, Outcome, Usdc};
use rapha_receipt::body::{
    Attestation, AttestationEvidence, Audit, CohortCommitment, DpoApproval, Leakage, NodeIdentity,
    OutputFile, OutputManifest, Payment, PolicyDecision, PolicyDecisions, Timestamps, SCHEMA,
};
use rapha_receipt::{parse_address, Address, NodeKey, ReceiptBody};

pub const NODE_SECRET: [u8; 32] = [0x11; 32];
pub const OTHER_SECRET: [u8; 32] = [0x22; 32];

pub fn node_key() -> NodeKey {
    NodeKey::from_secret_bytes(&NODE_SECRET).unwrap()
}

pub fn other_key() -> NodeKey {
    NodeKey::from_secret_bytes(&OTHER_SECRET).unwrap()
}

pub fn addr(s: &str) -> Address {
    parse_address(s).unwrap()
}

/// A completed job's body with every section filled.
pub fn sample_body(node: Address, job: u8) -> ReceiptBody {
    let d = |s: &str| Digest::of(s.as_bytes());
    ReceiptBody {
        schema: SCHEMA.to_owned(),
        job_id: JobId::from_bytes([job; 16]),
        outcome: Outcome::Completed,
        reason: "completed".to_owned(),
        node: NodeIdentity {
            address: node,
            name: "st-elsewhere-radiology-1".to_owned(),
        },
        publisher: "acme-ai".to_owned(),
        trainer: "chest-xray-classifier".to_owned(),
        bundle_manifest: d("manifest"),
        job_request: d("request"),
        policy: PolicyDecisions {
            admission: PolicyDecision {
                allow: true,
                reasons: vec![],
                digest: d("admission"),
            },
            final_gate: Some(PolicyDecision {
                allow: true,
                reasons: vec!["cohort 128 >= minimum 50".to_owned()],
                digest: d("final"),
            }),
        },
        dpo_approval: Some(DpoApproval {
            signer: "ed25519:9f2c".to_owned(),
            signature: "c0ffee".to_owned(),
            passkey: None,
        }),
        attestation: Attestation::Verified {
            evidence: vec![
                AttestationEvidence {
                    kind: "tpm2-quote".to_owned(),
                    digest: d("tpm"),
                    result: "ok".to_owned(),
                },
                AttestationEvidence {
                    kind: "sgx-dcap-quote".to_owned(),
                    digest: d("sgx"),
                    result: "ok-sw-hardening-needed".to_owned(),
                },
            ],
        },
        cohort: Some(CohortCommitment {
            merkle_root: d("cohort"),
            instances: 128,
            by_modality: BTreeMap::from([("CR".to_owned(), 100), ("DX".to_owned(), 28)]),
            exclusions: BTreeMap::from([
                ("burned-in-annotation".to_owned(), 3),
                ("opted-out".to_owned(), 2),
            ]),
        }),
        outputs: Some(OutputManifest {
            guard_verdict: "passed".to_owned(),
            files: vec![
                OutputFile {
                    name: "model.safetensors".to_owned(),
                    sha256: d("weights"),
                    bytes: 1_048_576,
                },
                OutputFile {
                    name: "metrics.json".to_owned(),
                    sha256: d("metrics"),
                    bytes: 212,
                },
            ],
            metrics: BTreeMap::from([("auroc".to_owned(), 0.8731), ("val_loss".to_owned(), 0.41)]),
            runtime_public_key: "04ab".to_owned(),
            signature: "beef".to_owned(),
        }),
        payment: Payment::new(
            137,
            addr("0x5fbdb2315678afecb367f032d93f642f64180aa3"),
            addr("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
            addr("0x70997970c51812dc3a010c7d01b50e0d17dc79c8"),
            Usdc::from_base_units(120_000_000),
        ),
        timestamps: Timestamps {
            submitted_ms: 1_764_000_000_000,
            started_ms: Some(1_764_000_120_000),
            finished_ms: 1_764_000_900_000,
        },
        confinement: "runc".to_owned(),
        leakage: Some(sample_leakage()),
        audit: Some(sample_audit()),
    }
}

/// An audit of the sample's release: a mildly overfit model.
pub fn sample_audit() -> Audit {
    Audit::Measured {
        attack_auc: 0.62,
        ci_low: 0.51,
        ci_high: 0.73,
        members: 30,
        non_members: 30,
        runner: Digest::of(b"runner"),
        graph: Digest::of(b"graph"),
    }
}

/// The reference trainer's bound (5,953 F32 parameters, 64 KiB of metrics.json, 30 minutes),
/// its cohort of 40 patients, the publisher's second such job.
pub fn sample_leakage() -> Leakage {
    let bound = LeakageBound {
        tensors: 190_496,
        files: 2,
        metrics_file: 524_288,
        node_metrics: 61,
        outcome: 5,
        run_length: 5,
        total: 714_857,
    };
    Leakage {
        bound,
        patients: Some(40),
        per_patient: Some(17_872),
        publisher_bits: 2 * 714_857,
        publisher_cap: 1 << 30,
    }
}

/// The Python venv with the independent tools, or `None` with a loud message (a hard failure
/// when RAPHA_REQUIRE_SERVICES=1).
pub fn python() -> Option<String> {
    crate::python::venv_python("eth_account, rfc8785", "eth-account and rfc8785")
}

/// Runs `script` (in tests/) with `input` on stdin and parses its JSON output.
pub fn run_python(py: &str, script: &str, input: &serde_json::Value) -> serde_json::Value {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    crate::python::run_json(py, &[&path], Some(input))
}
