//! Arbitrary bytes as an SGX quote, with the real sample collateral: never a panic, never
//! verified.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rapha_attest::sgx::{verify_quote, SgxEvidence};

const COLLATERAL: &[u8] = include_bytes!("../../testdata/sgx_quote_collateral.json");
/// Inside the sample collateral's validity (see testdata/README.md).
const AT: u64 = 1_751_328_000;

fuzz_target!(|data: &[u8]| {
    let Ok(collateral) = serde_json::from_slice::<dcap_qvl::QuoteCollateralV3>(COLLATERAL) else {
        return;
    };
    let ev = SgxEvidence {
        quote: data.to_vec(),
        collateral,
    };
    assert!(verify_quote(&ev, AT).is_err());
});
