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

mod tpm_fixture {
    //! One honest quote recorded from swtpm (testdata/tpm, made by
    //! `examples/record_tpm_fixture.rs`): the TPM verifier attacked offline.
    use super::*;
    use rapha_attest::tpm::{AkRecord, PcrPolicy, TpmEvidence, TpmVerifier, VendorRoots};
    use rapha_attest::AttestError;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tpm/");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DIR}{name}")).unwrap()
    }

    pub fn verifier() -> TpmVerifier {
        let roots = VendorRoots::from_pem(&read("ek_ca.pem")).unwrap();
        let policy: PcrPolicy = serde_json::from_slice(&read("pcr_policy.json")).unwrap();
        let record: AkRecord = serde_json::from_slice(&read("ak_record.json")).unwrap();
        let mut v = TpmVerifier::new(roots, policy);
        v.trust_ak(record).unwrap();
        v
    }

    pub fn evidence() -> TpmEvidence {
        serde_json::from_slice(&read("evidence.json")).unwrap()
    }

    pub fn binding() -> Digest {
        String::from_utf8(read("binding.txt"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn recorded_swtpm_quote_verifies_offline_without_a_tpm() {
        verifier().verify(&evidence(), &binding()).unwrap();
        let err = verifier()
            .verify(&evidence(), &Digest::of(b"x"))
            .unwrap_err();
        assert!(matches!(err, AttestError::QuoteWrongNonce { .. }), "{err}");
    }

    #[test]
    fn replay_mark_survives_a_verifier_restart() {
        let first = verifier();
        first.verify(&evidence(), &binding()).unwrap();
        let saved = serde_json::to_string(&first.freshness_marks()).unwrap();
        drop(first);
        let mut restarted = verifier();
        restarted.restore_freshness_marks(&serde_json::from_str(&saved).unwrap());
        let err = restarted.verify(&evidence(), &binding()).unwrap_err();
        assert!(matches!(err, AttestError::QuoteReplayed { .. }), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn mutated_tpm_quote_never_verifies(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut ev = evidence();
            let i = pos.index(ev.attest.len());
            ev.attest[i] ^= flip;
            prop_assert!(matches!(
                verifier().verify(&ev, &binding()),
                Err(AttestError::QuoteSignatureInvalid)
            ));
        }

        #[test]
        fn mutated_tpm_signature_never_verifies(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut ev = evidence();
            let i = pos.index(ev.signature.len());
            ev.signature[i] ^= flip;
            prop_assert!(verifier().verify(&ev, &binding()).is_err());
        }

        #[test]
        fn arbitrary_tpm_quote_bytes_never_verify(attest in prop::collection::vec(any::<u8>(), 0..200),
                                                   signature in prop::collection::vec(any::<u8>(), 0..100)) {
            let mut ev = evidence();
            ev.attest = attest;
            ev.signature = signature;
            prop_assert!(verifier().verify(&ev, &binding()).is_err());
        }
    }
}
