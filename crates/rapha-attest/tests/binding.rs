use rapha_attest::{binding, BindingInputs};
use rapha_core::{Digest, JobId};

fn inputs() -> BindingInputs {
    BindingInputs {
        job_id: JobId::from_bytes([0x11; 16]),
        bundle_manifest: Digest::from_bytes([0x22; 32]),
        cohort_commitment: Digest::from_bytes([0x33; 32]),
        runtime_public_key: vec![0x44; 32],
    }
}

/// Known-answer vector computed independently (Python hashlib) from the documented layout.
#[test]
fn binding_matches_the_documented_layout() {
    assert_eq!(
        inputs().binding().to_hex(),
        "4937cf7e2e26ff5c7ec325323b234ae5517f669827298a61cfb9e36d1a7ded77"
    );
}

#[test]
fn every_binding_input_changes_the_binding() {
    let base = inputs().binding();
    let mut i = inputs();
    i.job_id = JobId::from_bytes([0x12; 16]);
    assert_ne!(i.binding(), base);
    let mut i = inputs();
    i.bundle_manifest = Digest::from_bytes([0x23; 32]);
    assert_ne!(i.binding(), base);
    let mut i = inputs();
    i.cohort_commitment = Digest::from_bytes([0x34; 32]);
    assert_ne!(i.binding(), base);
    let mut i = inputs();
    i.runtime_public_key[31] ^= 1;
    assert_ne!(i.binding(), base);
}

#[test]
fn public_key_length_is_part_of_the_binding() {
    let i = inputs();
    let short = binding(
        &i.job_id,
        &i.bundle_manifest,
        &i.cohort_commitment,
        &[0x44; 31],
    );
    let empty = binding(&i.job_id, &i.bundle_manifest, &i.cohort_commitment, &[]);
    assert_ne!(short, i.binding());
    assert_ne!(empty, short);
}
