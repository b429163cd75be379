//! RFC 8785 canonicalization (`rapha_core::jcs`) against the RFC's published examples, the v1
//! receipts written before issue 18 (their bytes must never change), and an independent
//! implementation (the Python `rfc8785` package) on a corpus of edge values and random ones.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use rapha_core::jcs::{self, JcsError};
use serde_json::{json, Value};

use crate::common;

/// RFC 8785 §3.2.2 (sample input and its canonical output) and §3.2.3 (sorting of property
/// names by UTF-16 code units), copied from the RFC text.
#[test]
fn rfc8785_published_examples_canonicalize_exactly() {
    let input_322 = r#"{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"#;
    let want_322 = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
    let v: Value = serde_json::from_str(input_322).unwrap();
    assert_eq!(
        String::from_utf8(jcs::to_vec(&v).unwrap()).unwrap(),
        want_322
    );

    let input_323 = r#"{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    let v: Value = serde_json::from_str(input_323).unwrap();
    let bytes = String::from_utf8(jcs::to_vec(&v).unwrap()).unwrap();
    let order = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ];
    let positions: Vec<usize> = order.iter().map(|s| bytes.find(s).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "order in {bytes}"
    );
}

/// RFC 8785 Appendix B: IEEE-754 doubles (as hex bit patterns) and their canonical strings.
#[test]
fn rfc8785_appendix_b_numbers() {
    let cases: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, want) in cases {
        assert_eq!(
            jcs::format_double(f64::from_bits(*bits)).unwrap(),
            *want,
            "{bits:016x}"
        );
    }
    for bits in [
        0x7fffffffffffffffu64,
        0x7ff0000000000000,
        0xfff0000000000000,
    ] {
        assert_eq!(
            jcs::format_double(f64::from_bits(bits)),
            Err(JcsError::NotFinite)
        );
    }
}

#[test]
fn integers_outside_the_exact_range_are_refused_not_rounded() {
    for n in [(1u64 << 53) + 1, 1u64 << 53, u64::MAX] {
        assert!(
            matches!(
                jcs::to_vec(&json!({ "fee": n })),
                Err(JcsError::IntegerOutOfRange(_))
            ),
            "{n}"
        );
    }
    assert!(matches!(
        jcs::to_vec(&json!(-(1i64 << 53))),
        Err(JcsError::IntegerOutOfRange(_))
    ));
    let ok = json!({ "fee": (1u64 << 53) - 1, "debt": -((1i64 << 53) - 1) });
    assert_eq!(
        jcs::to_vec(&ok).unwrap(),
        br#"{"debt":-9007199254740991,"fee":9007199254740991}"#
    );
}

/// The receipts the node wrote before issue 18 (`testdata/v1`): their canonical bytes are what
/// was signed, so canonicalizing their decoded bodies must give those bytes exactly, forever.
#[test]
fn v1_fixture_receipt_bodies_canonicalize_to_their_signed_bytes() {
    for outcome in ["completed", "refused", "failed"] {
        let body = v1_receipt_body_bytes(outcome);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            jcs::to_vec(&value).unwrap(),
            body,
            "v1 {outcome} receipt body"
        );
    }
}

fn v1_receipt_body_bytes(outcome: &str) -> Vec<u8> {
    use base64::Engine as _;
    let path = format!(
        "{}/../../testdata/v1/receipts/{outcome}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(file["body_b64"].as_str().unwrap())
        .unwrap()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::collection::vec(0u32..0x300, 0..8)
            .prop_map(|cs| Value::String(cs.into_iter().filter_map(char::from_u32).collect())),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Edge values: the number boundaries of ECMAScript formatting and of the exact integer range,
/// every escape, long and astral Unicode, and keys whose UTF-16 order differs from UTF-8's.
fn edge_values() -> Vec<Value> {
    let two53 = 1u64 << 53;
    let mut v = vec![
        json!(1e21),
        json!(1e20),
        json!(1e-7),
        json!(1e-6),
        json!(-0.0),
        json!(0.0),
        json!(5e-324),
        json!(-5e-324),
        json!(f64::MAX),
        json!(f64::MIN_POSITIVE),
        json!(0.1),
        json!(0.1 + 0.2),
        json!(1.0),
        json!(-1.5),
        json!(123456789012345680000.0),
        json!(two53 - 1),
        json!(two53),
        json!(two53 + 1),
        json!(-(two53 as i64) + 1),
        json!(-(two53 as i64)),
        json!(-(two53 as i64) - 1),
        json!(two53 as f64),
        json!((two53 - 1) as f64),
        json!((two53 + 2) as f64),
        json!(u64::MAX),
        json!(i64::MIN),
    ];
    let controls: String = (0u32..0x20).filter_map(char::from_u32).collect();
    v.push(json!(controls));
    v.push(json!("\"\\/\u{7f}\u{80}\u{2028}\u{2029}\u{feff}\u{fffd}"));
    let long: String = "Ærø €𝄞 😀 ǅ ﷺ a\u{301} ق 中文 🏳️‍🌈 "
        .chars()
        .cycle()
        .take(20_000)
        .collect();
    v.push(json!(long));
    let mut keys = serde_json::Map::new();
    for k in [
        "\u{e000}",
        "\u{1f600}",
        "\u{ffff}",
        "\u{10000}",
        "",
        "a",
        "A",
        "\u{7f}",
        "\u{100}",
        "\n",
    ] {
        keys.insert(k.to_owned(), json!(k));
    }
    v.push(Value::Object(keys));
    v.push(json!({"nested": [{"b": [1e21, {"z": null, "a": []}], "a": {}}]}));
    v
}

/// Random finite doubles spread over every exponent (a fixed xorshift sequence).
fn random_doubles(n: usize) -> Vec<Value> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let f = f64::from_bits(s);
        if f.is_finite() {
            out.push(json!(f));
        }
    }
    out
}

#[test]
fn canonical_bytes_match_the_independent_rfc8785_package() {
    let Some(py) = common::python() else { return };
    let mut runner = TestRunner::new(Config {
        cases: 1,
        ..Config::default()
    });
    let mut values = proptest::collection::vec(arb_json(), 200)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    // Doubles exactly halfway between two shortest candidates (ties go to even in
    // ECMAScript): quarters and eighths near 2^50..2^53, where the spacing of doubles is 1/4..1.
    for i in 0..100u64 {
        values.push(json!(
            ((1u64 << 50) + i * 7919) as f64 + 0.25 * (i % 4) as f64
        ));
        values.push(json!(
            ((1u64 << 49) + i * 104_729) as f64 + 0.125 * (i % 8) as f64
        ));
    }
    values.extend(edge_values());
    values.extend(random_doubles(20_000));
    for outcome in ["completed", "refused", "failed"] {
        values.push(serde_json::from_slice(&v1_receipt_body_bytes(outcome)).unwrap());
    }
    let want = common::run_python(&py, "jcs_ref.py", &[], &Value::Array(values.clone()));
    let want = want.as_array().unwrap();
    assert_eq!(want.len(), values.len());
    let mut refused = 0;
    for (v, w) in values.iter().zip(want) {
        match (jcs::to_vec(v), w.get("hex").and_then(Value::as_str)) {
            (Ok(ours), Some(theirs)) => assert_eq!(hex::encode(ours), theirs, "value {v}"),
            (Err(e), None) => {
                refused += 1;
                assert!(
                    matches!(e, JcsError::IntegerOutOfRange(_)),
                    "value {v}: {e} (Python: {w})"
                );
            }
            (ours, _) => panic!("value {v}: ours {ours:?}, Python {w}"),
        }
    }
    // 2^53, 2^53 + 1, -2^53, -2^53 - 1, u64::MAX, i64::MIN: refused by both.
    assert_eq!(refused, 6);
}

/// `testdata/v1` is what the pre-issue-18 code wrote; it is never regenerated or edited
/// (`testdata/v1/SHA256SUMS`, written once with the fixtures).
#[test]
fn v1_fixtures_are_byte_for_byte_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1");
    let sums = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    let mut n = 0;
    for line in sums.lines() {
        let (want, path) = line.split_once("  ").unwrap();
        let got = rapha_core::Digest::of(&std::fs::read(root.join(path)).unwrap());
        assert_eq!(
            got.to_hex(),
            want,
            "{path} changed: the v1 fixtures must never change"
        );
        n += 1;
    }
    assert_eq!(n, 70);
}
