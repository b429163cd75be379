//! Arbitrary quote and signature bytes presented under the recorded swtpm AK (testdata/tpm):
//! the TPMS_ATTEST / TPMT_SIGNATURE parsing never panics and never verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rapha_attest::tpm::{AkRecord, PcrPolicy, TpmEvidence, TpmVerifier, VendorRoots};
use rapha_core::Digest;

const CA: &[u8] = include_bytes!("../../testdata/tpm/ek_ca.pem");
const RECORD: &[u8] = include_bytes!("../../testdata/tpm/ak_record.json");
const POLICY: &[u8] = include_bytes!("../../testdata/tpm/pcr_policy.json");
const EVIDENCE: &[u8] = include_bytes!("../../testdata/tpm/evidence.json");

fuzz_target!(|data: &[u8]| {
    let (Ok(roots), Ok(policy), Ok(record), Ok(mut ev)) = (
        VendorRoots::from_pem(CA),
        serde_json::from_slice::<PcrPolicy>(POLICY),
        serde_json::from_slice::<AkRecord>(RECORD),
        serde_json::from_slice::<TpmEvidence>(EVIDENCE),
    ) else {
        return;
    };
    let mut verifier = TpmVerifier::new(roots, policy);
    if verifier.trust_ak(record).is_err() {
        return;
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    ev.attest = data[..split].to_vec();
    ev.signature = data[split..].to_vec();
    assert!(verifier
        .verify(&ev, &Digest::of(b"rapha fixture job"))
        .is_err());
});
