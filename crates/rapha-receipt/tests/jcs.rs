//! RFC 8785 canonicalization against the RFC's published examples and against an independent
//! implementation (the `rfc8785` Python package).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use rapha_receipt::{jcs, ReceiptError};
use serde_json::Value;

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
    let out: Value = serde_json::from_slice(&jcs::to_vec(&v).unwrap()).unwrap();
    let values: Vec<&str> = out
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    // serde_json's Map keeps insertion order only with preserve_order; check the byte order.
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
    assert_eq!(values.len(), 7);
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
        assert!(matches!(
            jcs::format_double(f64::from_bits(bits)),
            Err(ReceiptError::Canonicalize(_))
        ));
    }
}

#[test]
fn integers_beyond_two_to_the_53_are_refused_not_rounded() {
    let v = serde_json::json!({ "fee": 9_007_199_254_740_993u64 });
    assert!(matches!(
        jcs::to_vec(&v),
        Err(ReceiptError::Canonicalize(_))
    ));
    let ok = serde_json::json!({ "fee": 9_007_199_254_740_992u64 });
    assert_eq!(jcs::to_vec(&ok).unwrap(), br#"{"fee":9007199254740992}"#);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
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

#[test]
fn canonical_bytes_match_the_independent_rfc8785_package() {
    let Some(py) = common::python() else { return };
    let mut runner = TestRunner::new(Config {
        cases: 1,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(arb_json(), 200);
    let mut values = strategy.new_tree(&mut runner).unwrap().current();
    // Doubles exactly halfway between two shortest candidates (ties go to even in
    // ECMAScript): quarters and eighths near 2^50..2^53, where the spacing of doubles is 1/4..1.
    for i in 0..100u64 {
        values.push(Value::from(
            ((1u64 << 50) + i * 7919) as f64 + 0.25 * (i % 4) as f64,
        ));
        values.push(Value::from(
            ((1u64 << 49) + i * 104_729) as f64 + 0.125 * (i % 8) as f64,
        ));
    }
    // The receipt body itself, as the node writes it.
    values
        .push(serde_json::to_value(common::sample_body(common::node_key().address(), 7)).unwrap());
    let want = common::run_python(&py, "jcs_ref.py", &Value::Array(values.clone()));
    for (v, w) in values.iter().zip(want.as_array().unwrap()) {
        assert_eq!(
            hex::encode(jcs::to_vec(v).unwrap()),
            w.as_str().unwrap(),
            "value {v}"
        );
    }
}

#[test]
fn body_canonical_bytes_round_trip_and_noncanonical_bytes_are_refused() {
    let body = common::sample_body(common::node_key().address(), 1);
    let bytes = body.canonical_bytes().unwrap();
    assert_eq!(
        rapha_receipt::ReceiptBody::from_canonical_bytes(&bytes).unwrap(),
        body
    );
    let pretty = serde_json::to_vec_pretty(&body).unwrap();
    assert!(matches!(
        rapha_receipt::ReceiptBody::from_canonical_bytes(&pretty),
        Err(ReceiptError::NotCanonical)
    ));
}

#[test]
fn non_finite_metric_is_refused_before_signing() {
    let mut body = common::sample_body(common::node_key().address(), 1);
    body.outputs
        .as_mut()
        .unwrap()
        .metrics
        .insert("auroc".into(), f64::NAN);
    assert!(
        matches!(body.canonical_bytes(), Err(ReceiptError::InconsistentBody(m)) if m.contains("auroc"))
    );
}
