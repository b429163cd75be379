//! The evidence bundle end to end: real swtpm quote + real SGX sample quote under one binding,
//! and everything production refuses.

use rapha_attest::sgx::SgxVerifier;
use rapha_attest::{
    AttestError, AttestationLevel, BindingInputs, Evidence, EvidenceVerifier, SimulatedEvidence,
    EVIDENCE_VERSION, SIMULATED_MARKER,
};
use rapha_core::{Digest, JobId};

use crate::sgx::{sample, sample_binding, sample_policy, SAMPLE_TIME};
use crate::tpm::{enrolled, quote};

fn simulated() -> SimulatedEvidence {
    SimulatedEvidence {
        marker: SIMULATED_MARKER.into(),
        note: "rapha-demo without TPM or SGX".into(),
    }
}

fn inputs() -> BindingInputs {
    BindingInputs {
        job_id: JobId::from_bytes([7; 16]),
        bundle_manifest: Digest::of(b"manifest"),
        cohort_commitment: Digest::of(b"cohort"),
        runtime_public_key: vec![9; 32],
    }
}

/// The real SGX sample carries a fixed report data, so this test binds the TPM quote to that
/// same value: both hardware sections then attest one binding, as in production.
#[test]
fn honest_tpm_and_sgx_evidence_verifies_in_production() {
    let Some(e) = enrolled() else { return };
    let binding = sample_binding();
    let mut ev = Evidence::new(binding);
    ev.tpm = Some(quote(&e, &binding));
    ev.sgx = Some(sample());
    let ev = Evidence::from_json(&ev.to_json()).unwrap();
    let verifier = EvidenceVerifier::production(
        e.verifier,
        SgxVerifier::new(sample_policy()).at_time(SAMPLE_TIME),
    );
    let ok = verifier.verify_bound(&ev, &binding).unwrap();
    assert_eq!(ok.level, AttestationLevel::Hardware);
    assert_eq!(ok.digests, ev.digests());
    assert_eq!(
        ok.digests.tpm_quote,
        Some(Digest::of(&ev.tpm.as_ref().unwrap().attest))
    );
    assert_eq!(
        ok.digests.sgx_quote,
        Some(Digest::of(&ev.sgx.as_ref().unwrap().quote))
    );
    assert!(!ok.digests.simulated);
    // Presented again, the same evidence is a replay.
    let err = verifier.verify_bound(&ev, &binding).unwrap_err();
    assert!(matches!(err, AttestError::QuoteReplayed { .. }), "{err}");
}

#[test]
fn production_refuses_simulated_evidence_even_next_to_real_quotes() {
    let Some(e) = enrolled() else { return };
    let binding = sample_binding();
    let mut ev = Evidence::new(binding);
    ev.tpm = Some(quote(&e, &binding));
    ev.sgx = Some(sample());
    ev.simulated = Some(simulated());
    let verifier = EvidenceVerifier::production(
        e.verifier,
        SgxVerifier::new(sample_policy()).at_time(SAMPLE_TIME),
    );
    let err = verifier.verify_bound(&ev, &binding).unwrap_err();
    assert!(
        matches!(err, AttestError::SimulatedEvidenceRefused),
        "{err}"
    );
}

#[test]
fn production_refuses_evidence_for_another_job_or_missing_sections() {
    let Some(e) = enrolled() else { return };
    let binding = sample_binding();
    let tpm_quote = quote(&e, &binding);
    let verifier = EvidenceVerifier::production(
        e.verifier,
        SgxVerifier::new(sample_policy()).at_time(SAMPLE_TIME),
    );
    let mut ev = Evidence::new(binding);
    ev.sgx = Some(sample());
    let err = verifier.verify_bound(&ev, &binding).unwrap_err();
    assert!(matches!(err, AttestError::MissingTpmEvidence), "{err}");

    let mut ev = Evidence::new(binding);
    ev.tpm = Some(tpm_quote);
    let err = verifier.verify_bound(&ev, &binding).unwrap_err();
    assert!(matches!(err, AttestError::MissingSgxEvidence), "{err}");

    // Evidence made for the sample binding, presented for this job's binding.
    let err = verifier.verify(&ev, &inputs()).unwrap_err();
    assert!(
        matches!(err, AttestError::EvidenceBindingMismatch { .. }),
        "{err}"
    );
}

#[test]
fn development_reports_simulated_and_absent_evidence_explicitly() {
    let binding = inputs().binding();
    let dev = EvidenceVerifier::development();
    let mut ev = Evidence::new(binding);
    let ok = dev.verify(&ev, &inputs()).unwrap();
    assert_eq!(ok.level, AttestationLevel::NoneDevelopment);
    assert_eq!(ok.level.as_str(), "none-development");

    ev.simulated = Some(simulated());
    let ok = dev.verify(&ev, &inputs()).unwrap();
    assert_eq!(ok.level, AttestationLevel::Simulated);
    assert_eq!(ok.level.as_str(), "simulated");
    assert!(ok.digests.simulated);
    assert!(ok.tpm.is_none() && ok.sgx.is_none());

    // Still bound to the job, even in development.
    let mut other = inputs();
    other.job_id = JobId::from_bytes([8; 16]);
    let err = dev.verify(&ev, &other).unwrap_err();
    assert!(
        matches!(err, AttestError::EvidenceBindingMismatch { .. }),
        "{err}"
    );

    ev.simulated = Some(SimulatedEvidence {
        marker: "looks real".into(),
        note: String::new(),
    });
    let err = dev.verify(&ev, &inputs()).unwrap_err();
    assert!(matches!(err, AttestError::EvidenceMalformed(_)), "{err}");
}

#[test]
fn evidence_json_is_versioned_and_strict() {
    let mut ev = Evidence::new(inputs().binding());
    ev.simulated = Some(simulated());
    let json = String::from_utf8(ev.to_json()).unwrap();
    assert!(
        json.starts_with(&format!("{{\"version\":{EVIDENCE_VERSION},")),
        "{json}"
    );
    assert_eq!(Evidence::from_json(json.as_bytes()).unwrap(), ev);

    let v2 = json.replacen("\"version\":1", "\"version\":2", 1);
    assert!(matches!(
        Evidence::from_json(v2.as_bytes()),
        Err(AttestError::UnsupportedEvidenceVersion(2))
    ));
    let extra = json.replacen('{', "{\"debug\":true,", 1);
    assert!(matches!(
        Evidence::from_json(extra.as_bytes()),
        Err(AttestError::EvidenceMalformed(_))
    ));
}

#[test]
fn evidence_digest_changes_with_every_section() {
    let base = Evidence::new(inputs().binding());
    let mut with_sgx = base.clone();
    with_sgx.sgx = Some(sample());
    let mut with_sim = base.clone();
    with_sim.simulated = Some(simulated());
    let d = [base.digests(), with_sgx.digests(), with_sim.digests()];
    assert_ne!(d[0].evidence, d[1].evidence);
    assert_ne!(d[0].evidence, d[2].evidence);
    assert_ne!(d[1].evidence, d[2].evidence);
    assert_eq!(d[1].sgx_quote, Some(Digest::of(&sample().quote)));
    assert!(d[2].simulated && !d[1].simulated);
}
