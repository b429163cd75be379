//! Evidence JSON from outside (a receipt bundle, the node's job store) parsed and run through
//! the development verifier: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rapha_attest::{Evidence, EvidenceVerifier};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Evidence::from_json(data) {
        let _ = EvidenceVerifier::development().verify_bound(&ev, &ev.binding);
        let _ = ev.digests();
    }
});
