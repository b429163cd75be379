//! Arbitrary quote and signature bytes presented under the recorded swtpm AK (testdata/tpm):
//! the TPMS_ATTEST / TPMT_SIGNATURE parsing never panics, and only the recorded quote verifies.
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
    // First byte: length of the quote part; the rest is quote bytes then signature bytes.
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let recorded = ev.attest.clone();
    let split = usize::from(*first).min(rest.len());
    ev.attest = rest[..split].to_vec();
    ev.signature = rest[split..].to_vec();
    // Only the recorded quote itself (with a valid signature over it) may verify.
    if verifier
        .verify(&ev, &Digest::of(b"rapha fixture job"))
        .is_ok()
    {
        assert_eq!(ev.attest, recorded);
    }
});
