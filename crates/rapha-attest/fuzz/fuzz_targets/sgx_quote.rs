//! Arbitrary bytes as an SGX quote, with the real sample collateral: never a panic, and a quote
//! that verifies is the sample itself in everything that is signed (header, report body,
//! signature, attestation key, QE report and its signature, at bytes 0..1046). Only the
//! certification data's PEM framing and its copy of Intel's root may differ: the pinned root
//! is used.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rapha_attest::sgx::{verify_quote, SgxEvidence};

const QUOTE: &[u8] = include_bytes!("../../testdata/sgx_quote");
const COLLATERAL: &[u8] = include_bytes!("../../testdata/sgx_quote_collateral.json");
/// Inside the sample collateral's validity (see testdata/README.md).
const AT: u64 = 1_751_328_000;
const SIGNED_END: usize = 1046;

fuzz_target!(|data: &[u8]| {
    let Ok(collateral) = serde_json::from_slice::<dcap_qvl::QuoteCollateralV3>(COLLATERAL) else {
        return;
    };
    let ev = SgxEvidence {
        quote: data.to_vec(),
        collateral,
    };
    if verify_quote(&ev, AT).is_ok() {
        assert_eq!(data.get(..SIGNED_END), QUOTE.get(..SIGNED_END));
    }
});
