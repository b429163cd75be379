use rapha_protocol::{
    error_header, parse_request, Dtype, ErrorCode, Prediction, Request, Split, UnknownDtype,
};
use serde_json::json;

#[test]
fn dtype_names_are_their_serialized_names_and_parse_back() {
    for d in Dtype::ALL {
        assert_eq!(serde_json::to_value(d).unwrap(), d.name());
        assert_eq!(Dtype::parse(d.name()), Ok(d));
        assert_eq!(d.to_string(), d.name());
        assert_eq!(serde_json::from_value::<Dtype>(json!(d.name())).unwrap(), d);
    }
    let sizes: Vec<usize> = Dtype::ALL.iter().map(|d| d.size()).collect();
    assert_eq!(sizes, [1, 2, 2, 4, 4, 4]);
}

#[test]
fn unknown_dtype_is_refused_with_at_most_16_characters_of_its_name() {
    assert_eq!(Dtype::parse("f64"), Err(UnknownDtype("f64".into())));
    assert_eq!(
        Dtype::parse(&"x".repeat(1000)),
        Err(UnknownDtype("x".repeat(16)))
    );
    assert_eq!(Dtype::parse("U8"), Err(UnknownDtype("U8".into())));
}

#[test]
fn split_and_error_code_names_are_their_serialized_names() {
    for s in Split::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        assert_eq!(Split::parse(s.name()), Some(s));
    }
    assert_eq!(Split::parse("test"), None);
    for c in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
}

/// The bytes of an `ok:false` header: the three fields in one of the two orders serde_json
/// writes an object in (sorted keys, or as written when a crate of the build enables its
/// `preserve_order`), nothing else.
#[test]
fn error_header_bytes() {
    let h = error_header(ErrorCode::NoSuchRecord, "record 12 is out of range (0..10)");
    let sorted =
        br#"{"error":"no_such_record","message":"record 12 is out of range (0..10)","ok":false}"#;
    let as_written =
        br#"{"ok":false,"error":"no_such_record","message":"record 12 is out of range (0..10)"}"#;
    assert!(
        h == sorted || h == as_written,
        "{}",
        String::from_utf8_lossy(&h)
    );
}

#[test]
fn requests_parse_and_unknown_fields_and_ops_are_refused() {
    assert_eq!(
        parse_request(br#"{"op":"hello","protocol":1,"trainer":"t"}"#).unwrap(),
        Request::Hello {
            protocol: 1,
            trainer: "t".into()
        }
    );
    assert_eq!(
        parse_request(br#"{"op":"predict","predictions":[{"index":3,"score":0.25}]}"#).unwrap(),
        Request::Predict {
            predictions: vec![Prediction {
                index: 3,
                score: 0.25
            }]
        }
    );
    assert_eq!(parse_request(br#"{"op":"done"}"#).unwrap(), Request::Done);
    for bad in [
        &br#"{"op":"fetch","index":1,"path":"/etc/passwd"}"#[..],
        br#"{"op":"predict","predictions":[{"index":3,"score":0.25,"label":1}]}"#,
        br#"{"op":"shell"}"#,
        br#"{"index":1}"#,
        b"not json",
    ] {
        assert!(
            parse_request(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
