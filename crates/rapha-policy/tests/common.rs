//! Fixtures shared by the tests: a hospital's policy settings, a good job, a good final input.

use std::collections::BTreeMap;

use rapha_core::{
    CohortQuery, Digest, JobId, JobRequest, OutputDecl, OutputKind, ResourceLimits, Usdc,
};
use rapha_policy::{
    AdmissionInput, ApprovalFacts, AttestationFacts, CohortFacts, Declared, FinalInput,
    HospitalPolicy, JobBudget, Mode, OutputLimits, PastJob, PublisherTrust, ScopeLimits,
};

pub const NOW: u64 = 1_800_000_000;

pub fn hospital() -> HospitalPolicy {
    let mut publishers = BTreeMap::new();
    publishers.insert(
        "acme-ai".to_owned(),
        PublisherTrust {
            trainers: vec!["chest-xray-classifier".to_owned()],
        },
    );
    HospitalPolicy {
        mode: Mode::Production,
        publishers,
        scope: ScopeLimits {
            max_studies: 500,
            max_date_range_days: 366,
            modalities: vec!["CR".into(), "DX".into(), "CT".into()],
        },
        outputs: OutputLimits {
            kinds: vec![OutputKind::Safetensors, OutputKind::MetricsJson],
            max_file_bytes: 100 << 20,
            max_total_bytes: 200 << 20,
            max_release_bits: None,
            max_publisher_bits: None,
            release_precision: Default::default(),
            release_noise_k: Default::default(),
        },
        allowed_metadata_fields: vec!["PatientAge".into(), "PatientSex".into()],
        min_fee: "100".parse().unwrap(),
        budget: JobBudget {
            max_jobs: 3,
            window_hours: 720,
        },
        min_patients: 50,
        min_validation_patients: 20,
        resources: rapha_core::ResourceBounds::default(),
        linkage_publishers: vec!["acme-ai".into()],
    }
}

pub fn request() -> JobRequest {
    JobRequest {
        job_id: JobId::from_bytes([1; 16]),
        publisher: "acme-ai".into(),
        trainer: "chest-xray-classifier".into(),
        bundle_manifest: Digest::of(b"manifest"),
        query: CohortQuery {
            study_date: Some("20240101-20241230".into()),
            modalities: vec!["CR".into()],
            limit: Some(400),
            ..CohortQuery::default()
        },
        requested_fields: vec!["PatientAge".into()],
        validation_percent: 20,
        fee: "120".parse::<Usdc>().unwrap(),
        chain_id: 137,
        depositor: "0x0000000000000000000000000000000000000001".into(),
        linkage: None,
    }
}

pub fn outputs() -> Vec<OutputDecl> {
    vec![
        OutputDecl {
            name: "model.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 50_000_000,
            tensors: vec![],
        },
        OutputDecl {
            name: "metrics.json".into(),
            kind: OutputKind::MetricsJson,
            max_bytes: 65_536,
            tensors: vec![],
        },
    ]
}

/// What the test bundle declares: `outputs` and the default resources.
pub fn declared(outputs: &[OutputDecl]) -> Declared<'_> {
    static RESOURCES: std::sync::OnceLock<ResourceLimits> = std::sync::OnceLock::new();
    Declared {
        outputs,
        resources: RESOURCES.get_or_init(ResourceLimits::default),
    }
}

/// An earlier admitted job of the publisher.
pub fn past_job(admitted_at: u64) -> PastJob {
    PastJob {
        admitted_at,
        outcome: None,
        patients: None,
        query_digest: request().query.digest(),
    }
}

pub fn admission_input() -> AdmissionInput {
    let history = vec![past_job(NOW - 3_000_000), past_job(NOW - 10)];
    AdmissionInput::new(&request(), declared(&outputs()), NOW, history).unwrap()
}

pub fn job() -> Digest {
    Digest::of(b"job")
}

pub fn final_input() -> FinalInput {
    FinalInput {
        job_digest: job(),
        now: NOW,
        approval: Some(ApprovalFacts {
            job_digest: job(),
            signature_valid: true,
            signer_trusted: true,
            expires_at: NOW + 3600,
            revoked: false,
        }),
        attestation: AttestationFacts {
            present: true,
            verified: true,
        },
        cohort: CohortFacts {
            patients: 120,
            validation_patients: 24,
        },
    }
}
