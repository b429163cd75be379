//! The fuzz entry points (crates/rapha-attest/fuzz) driven on stable by proptest over a seed
//! corpus: outside bytes never panic the parsers, and mutated quotes never verify.

use proptest::prelude::*;
use rapha_attest::sgx::verify_quote;
use rapha_attest::{Evidence, SimulatedEvidence, SIMULATED_MARKER};
use rapha_core::Digest;

use crate::sgx::{sample, SAMPLE_TIME};

fn seed_evidence_json() -> Vec<u8> {
    let mut ev = Evidence::new(Digest::of(b"seed"));
    ev.sgx = Some(sample());
    ev.simulated = Some(SimulatedEvidence {
        marker: SIMULATED_MARKER.into(),
        note: "seed".into(),
    });
    ev.to_json()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mutated_evidence_json_never_panics(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut json = seed_evidence_json();
        let i = pos.index(json.len());
        json[i] = byte;
        let _ = Evidence::from_json(&json);
    }

    /// Any change to the signed quote, its signature, attestation key, QE report or QE report
    /// signature (everything before the certification data at byte 1046) is refused.
    #[test]
    fn mutated_sgx_quote_never_verifies(pos in 0usize..1046, flip in 1u8..=255) {
        let mut ev = sample();
        let i = pos;
        ev.quote[i] ^= flip;
        prop_assert!(verify_quote(&ev, SAMPLE_TIME).is_err());
    }

    #[test]
    fn truncated_sgx_quote_never_verifies(len in 0usize..4600) {
        let mut ev = sample();
        ev.quote.truncate(len.min(ev.quote.len().saturating_sub(1)));
        prop_assert!(verify_quote(&ev, SAMPLE_TIME).is_err());
    }
}
