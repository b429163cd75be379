//! The fuzz entry points (`fuzz/fuzz_targets/verify_receipt.rs`, `body_bytes.rs`) driven on
//! stable by proptest over the seed corpus in `tests/data/corpus/`: arbitrary edits of real
//! receipt files never panic, and never verify unless they leave the signed content intact.

use proptest::prelude::*;
use rapha_receipt::{verify, SignedTreeHead, VerifyOptions};

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/corpus");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

#[test]
fn seed_corpus_receipts_verify() {
    for seed in corpus() {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&seed) {
            if v.get("format").is_some() {
                verify(&seed, &VerifyOptions::default()).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_receipt_files_never_panic(seed_pick in any::<prop::sample::Index>(),
                                         edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                         truncate in any::<Option<prop::sample::Index>>()) {
        let seeds = corpus();
        let mut data = seed_pick.get(&seeds[..]).clone();
        for (at, byte) in &edits {
            let i = at.index(data.len());
            data[i] = *byte;
        }
        if let Some(t) = truncate {
            data.truncate(t.index(data.len() + 1));
        }
        // The fuzz target's body: must not panic. A byte edit that survives verification can
        // only have touched insignificant JSON (whitespace, key order of the copy...).
        if let Ok(v) = verify(&data, &VerifyOptions::default()) {
            let seed: &Vec<u8> = seed_pick.get(&seeds[..]);
            let original = verify(seed, &VerifyOptions::default()).unwrap();
            prop_assert_eq!(v.body_bytes, original.body_bytes);
            prop_assert_eq!(v.head, original.head);
        }
        let _ = SignedTreeHead::from_json(&data);
    }
}

fn seed_body() -> Vec<u8> {
    use base64::Engine as _;
    let seed = &corpus()[0];
    let file = rapha_receipt::ReceiptFile::from_json(seed).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(file.body_b64)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The `body_bytes` fuzz target: body bytes are refused, or are canonical and re-serialise
    /// to exactly themselves.
    #[test]
    fn mutated_body_bytes_are_refused_or_exactly_canonical(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut data = seed_body();
        for (at, byte) in &edits {
            let i = at.index(data.len());
            data[i] = *byte;
        }
        if let Ok(body) = rapha_receipt::ReceiptBody::from_canonical_bytes(&data) {
            prop_assert_eq!(body.canonical_bytes().unwrap(), data);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The WebAuthn fuzz entry point on arbitrary bytes and on edits of a real registration
    /// (attestation object then client data) never panics.
    #[test]
    fn webauthn_parsers_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        seed in 0u64..4,
    ) {
        rapha_receipt::webauthn::fuzz_entry(&bytes);
        let alg = if seed % 2 == 0 { crate::softauth::Alg::Es256 } else { crate::softauth::Alg::EdDsa };
        let mut a = crate::softauth::SoftAuthenticator::new(alg, seed, "localhost", "http://localhost");
        let (obj, client) = a.register(&[0; 32], crate::softauth::Format::PackedSelf);
        let mut data = [obj.as_slice(), client.as_slice()].concat();
        for (at, byte) in &edits {
            let i = at.index(data.len());
            data[i] = *byte;
        }
        rapha_receipt::webauthn::fuzz_entry(&data);
        let _ = rapha_receipt::webauthn::cbor::decode(&obj);
    }
}
