//! Stable-toolchain drive of the fuzz entry points (see `fuzz/`): parsers of outside input
//! never panic, and what parses round-trips.

use proptest::prelude::*;
use rapha_policy::{date_range_days, Approval, ReviewRequest};

/// Seed corpus: real shapes plus near misses.
const SEEDS: &[&str] = &[
    "20240101-20241231",
    "20240101-",
    "-20240101",
    "20240229",
    "2024013-20240101",
    "99999999-00000000",
    r#"{"job_digest":"00","issued_at":1,"expires_at":2,"dpo_key":"00","signature":"00"}"#,
    r#"{"job":{},"cohort":{}}"#,
];

fn fuzz_one(bytes: &[u8]) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if let Ok(Some(days)) = date_range_days(s) {
            assert!(days >= 1);
        }
    }
    if let Ok(a) = serde_json::from_slice::<Approval>(bytes) {
        let _ = a.verify();
        let back: Approval = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
    if let Ok(r) = serde_json::from_slice::<ReviewRequest>(bytes) {
        let _ = r.job_digest();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(seed in 0..SEEDS.len(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let mut bytes = SEEDS[seed].as_bytes().to_vec();
        for (at, b) in edits {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = b;
            }
        }
        fuzz_one(&bytes);
    }

    #[test]
    fn every_valid_pair_of_dates_gives_a_positive_count(y in 1900u32..2100, m in 1u32..13, d in 1u32..29, extra in 0u32..3000) {
        let start = format!("{y:04}{m:02}{d:02}");
        let end_y = y + extra / 365;
        let end = format!("{end_y:04}{m:02}{d:02}");
        let days = date_range_days(&format!("{start}-{end}")).unwrap().unwrap();
        prop_assert!(days > 365 * u64::from(extra / 365));
    }
}
