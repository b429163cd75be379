//! The fuzz entry point for signed-settlement JSON, driven on stable over the seed corpus.

use proptest::prelude::*;
use rapha_settle::{SettleError, SignedSettlement};

const SEED: &[u8] = include_bytes!("../fuzz/corpus/settlement_json/seed.json");

#[test]
fn seed_parses_and_a_bad_v_or_length_is_refused() {
    let s = SignedSettlement::from_json(SEED).unwrap();
    assert_eq!(s.fields.fee.base_units(), 120_000_000);
    let text = std::str::from_utf8(SEED).unwrap();
    let bad_v = text.replace("1b\"", "1d\"");
    assert!(matches!(
        SignedSettlement::from_json(bad_v.as_bytes()),
        Err(SettleError::BadSettlement(_))
    ));
    let short = text.replace("1b\"", "\"");
    assert!(matches!(
        SignedSettlement::from_json(short.as_bytes()),
        Err(SettleError::BadSettlement(_))
    ));
    // A settlement naming no depositor settles nothing (the escrow keys deposits by it).
    let no_depositor = text.replace(
        "\"depositor\": \"0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc\", ",
        "",
    );
    assert!(matches!(
        SignedSettlement::from_json(no_depositor.as_bytes()),
        Err(SettleError::BadSettlement(_))
    ));
    let seven_decimals_fee = text.replace("120000000", "-1");
    assert!(SignedSettlement::from_json(seven_decimals_fee.as_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_settlement_json_never_panics(pos in 0usize..SEED.len(), byte in any::<u8>(), cut in 0usize..SEED.len()) {
        let mut m = SEED.to_vec();
        m[pos] = byte;
        let _ = SignedSettlement::from_json(&m);
        let _ = SignedSettlement::from_json(&SEED[..cut]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedSettlement::from_json(&data);
    }
}
