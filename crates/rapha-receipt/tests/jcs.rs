//! Receipt bodies in RFC 8785 canonical form, against an independent implementation (the
//! `rfc8785` Python package).

use rapha_receipt::{jcs, ReceiptError};
use serde_json::Value;

use crate::common;

/// Receipt bodies canonicalize through `rapha_core::jcs` (its RFC examples, edge numbers and
/// the comparison with the Python `rfc8785` package are in rapha-core's tests); here the bodies
/// the node writes are compared with that package.
#[test]
fn receipt_bodies_match_the_independent_rfc8785_package() {
    let Some(py) = common::python() else { return };
    let values: Vec<Value> = (0..8)
        .map(|i| {
            serde_json::to_value(common::sample_body(common::node_key().address(), i)).unwrap()
        })
        .collect();
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
fn integers_outside_the_exact_range_are_refused_not_rounded() {
    let v = serde_json::json!({ "fee": 9_007_199_254_740_992u64 });
    assert!(matches!(
        jcs::to_vec(&v),
        Err(ReceiptError::Canonicalize(_))
    ));
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
