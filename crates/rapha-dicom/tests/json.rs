//! Strict DICOM JSON (PS3.18 Annex F): good documents parse, every malformed shape is a typed
//! error located in the document, and the fuzz entry points hold over a seed corpus.

use dicom_dictionary_std::tags;
use proptest::prelude::*;
use rapha_dicom::attrs::tag;
use rapha_dicom::json::{parse_datasets, JsonErrorKind};

const GOOD: &str = r#"[{
  "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
  "00080060": {"vr": "CS", "Value": ["CT"]},
  "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN", "Ideographic": "X"}]},
  "00100020": {"vr": "LO", "Value": ["P1"]},
  "00280010": {"vr": "US", "Value": [512]},
  "00280030": {"vr": "DS", "Value": [0.5, "0.25"]},
  "00200032": {"vr": "DS", "Value": [-125, -125.5, 3]},
  "00081115": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.9"]}}]},
  "00081030": {"vr": "LO"},
  "00209165": {"vr": "AT", "Value": ["00100020"]},
  "7FE00010": {"vr": "OW", "BulkDataURI": "http://pacs/bulk/1"},
  "00282000": {"vr": "OB", "InlineBinary": "AAEC"}
}]"#;

#[test]
fn well_formed_dicom_json_parses_into_typed_attributes() {
    let ds = parse_datasets(GOOD.as_bytes()).unwrap();
    assert_eq!(ds.len(), 1);
    let a = &ds[0];
    assert_eq!(a.text(tag::MODALITY), Some("CT"));
    assert_eq!(a.text(tag::PATIENT_NAME), Some("DOE^JOHN=X"));
    assert_eq!(a.u16(tag::ROWS), Some(512));
    assert_eq!(a.f64s(tag::PIXEL_SPACING), Some(vec![0.5, 0.25]));
    assert_eq!(
        a.f64s(tag::IMAGE_POSITION_PATIENT),
        Some(vec![-125.0, -125.5, 3.0])
    );
    assert_eq!(
        a.items(tag::u32_of(tags::REFERENCED_SERIES_SEQUENCE))[0]
            .text(tag::REFERENCED_SOP_INSTANCE_UID),
        Some("1.2.9")
    );
    assert_eq!(a.text(tag::STUDY_DESCRIPTION), None);
    assert_eq!(parse_datasets(b"[]").unwrap().len(), 0);
}

fn kind(doc: &str) -> JsonErrorKind {
    parse_datasets(doc.as_bytes()).expect_err(doc).kind
}

#[test]
fn malformed_dicom_json_gives_typed_errors() {
    assert!(matches!(kind("[{"), JsonErrorKind::Syntax(_)));
    assert_eq!(kind("{}"), JsonErrorKind::NotArray);
    assert_eq!(kind("[1]"), JsonErrorKind::NotObject);
    assert_eq!(kind(r#"[{"0010002":{"vr":"LO"}}]"#), JsonErrorKind::BadTag);
    assert_eq!(kind(r#"[{"0010002G":{"vr":"LO"}}]"#), JsonErrorKind::BadTag);
    assert_eq!(
        kind(r#"[{"00100020":{"Value":["x"]}}]"#),
        JsonErrorKind::MissingVr
    );
    assert_eq!(
        kind(r#"[{"00100020":{"vr":"XX"}}]"#),
        JsonErrorKind::UnknownVr("XX".into())
    );
    assert_eq!(kind(r#"[{"00100020":"P1"}]"#), JsonErrorKind::NotObject);
    assert_eq!(
        kind(r#"[{"00100020":{"vr":"LO","Value":"P1"}}]"#),
        JsonErrorKind::ValueNotArray
    );
    assert!(matches!(
        kind(r#"[{"00280010":{"vr":"US","Value":["512"]}}]"#),
        JsonErrorKind::WrongValueType { .. }
    ));
    assert!(matches!(
        kind(r#"[{"00280030":{"vr":"DS","Value":["abc"]}}]"#),
        JsonErrorKind::WrongValueType { .. }
    ));
    assert!(matches!(
        kind(r#"[{"00100020":{"vr":"LO","Value":[5]}}]"#),
        JsonErrorKind::WrongValueType { .. }
    ));
    assert!(matches!(
        kind(r#"[{"7FE00010":{"vr":"OW","Value":[1,2]}}]"#),
        JsonErrorKind::WrongValueType { .. }
    ));
    assert_eq!(
        kind(r#"[{"00100010":{"vr":"PN","Value":["DOE^JOHN"]}}]"#),
        JsonErrorKind::BadPersonName
    );
    assert_eq!(
        kind(r#"[{"00100010":{"vr":"PN","Value":[{"Nickname":"J"}]}}]"#),
        JsonErrorKind::BadPersonName
    );
    assert_eq!(
        kind(r#"[{"00209165":{"vr":"AT","Value":["0010"]}}]"#),
        JsonErrorKind::BadAttributeTag
    );
    assert_eq!(
        kind(r#"[{"00100020":{"vr":"LO","Value":["a"],"BulkDataURI":"u"}}]"#),
        JsonErrorKind::ConflictingValues
    );
    assert_eq!(
        kind(r#"[{"00100020":{"vr":"LO","InlineBinary":"AA=="}}]"#),
        JsonErrorKind::BinaryOnTextVr("LO".into())
    );
    assert_eq!(
        kind(r#"[{"00100020":{"vr":"LO","Extra":1}}]"#),
        JsonErrorKind::UnexpectedMember("Extra".into())
    );
    assert!(matches!(
        kind(r#"[{"00081115":{"vr":"SQ","Value":[5]}}]"#),
        JsonErrorKind::NotObject
    ));
    let deep = format!(
        "[{}{}]",
        r#"{"00081115":{"vr":"SQ","Value":["#.repeat(40),
        r#"]}}"#.repeat(40)
    );
    let deep = deep.replacen(r#"]}}"#, r#"{}]}}"#, 1);
    assert_eq!(kind(&deep), JsonErrorKind::TooDeep);
    // The error says where.
    let e = parse_datasets(
        br#"[{},{"00081115":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":[3]}}]}}]"#,
    )
    .unwrap_err();
    assert_eq!(e.at, "[1].00081115[0].00081155", "{e}");
}

/// Seed corpus for the fuzz entry points: the good document, pieces of it, and the fixtures of
/// the malformed test above.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![GOOD.as_bytes().to_vec(), b"[]".to_vec(), b"[{}]".to_vec()];
    // Nesting at the limit and one level past it, so mutations probe the depth bound.
    let id = rapha_testkit::crafted::Identity::ct(1);
    for depth in [16, 17] {
        v.push(rapha_testkit::crafted::deep_json(&id, depth));
    }
    for dir in [concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/json")] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                v.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The same entry point cargo-fuzz drives: never panics on mutated DICOM JSON, and any
    /// record it builds carries no raw identifier of the input.
    #[test]
    fn json_and_record_entry_points_never_panic(
        seed in prop::sample::select(seeds()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = seed.clone();
        for (i, b) in flips {
            if !data.is_empty() {
                let at = i.index(data.len());
                data[at] = b;
            }
        }
        if !data.is_empty() && cut.index(4) == 0 {
            let n = cut.index(data.len());
            data.truncate(n);
        }
        rapha_dicom::fuzzing::dicom_json(&data);
        rapha_dicom::fuzzing::record_from_json(&data);
    }
}

/// Part 10 seeds: a synthetic instance written by the tests, plus a few corpus files when the
/// corpus is installed.
fn part10_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seed.dcm");
    crate::common::write_instance(&p, &crate::common::Inst::ct(1));
    let mut v = vec![std::fs::read(&p).unwrap()];
    // Crafted objects at the structural bounds: nesting at and past the depth limit (plain and
    // deflated), a deflated data set, and a deflated false length claim.
    use rapha_testkit::crafted::{self, Identity};
    let id = Identity::ct(2);
    v.push(crafted::deep_part10(&id, 16));
    v.push(crafted::deep_part10(&id, 17));
    v.push(crafted::deflated(
        &id,
        &crafted::deep_dataset_bytes(&id, 17),
    ));
    v.push(crafted::deflated(&id, &crafted::deep_dataset_bytes(&id, 3)));
    v.push(crafted::deflated(
        &id,
        &crafted::huge_length_claim(&id, 0x6000_0000),
    ));
    if let Some(c) = std::env::var_os("RAPHA_PYDICOM_CORPUS") {
        for name in [
            "CT_small.dcm",
            "MR_small_RLE.dcm",
            "SC_rgb_rle_2frame.dcm",
            "nested_priv_SQ.dcm",
        ] {
            if let Ok(b) = std::fs::read(std::path::Path::new(&c).join(name)) {
                v.push(b);
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// The Part 10 entry point (header parse, record, pixel decode) never panics on mutated
    /// files and never lets a raw identifier into a record.
    #[test]
    fn part10_entry_point_never_panics(
        seed in prop::sample::select(part10_seeds()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut data = seed.clone();
        for (i, b) in flips {
            let at = i.index(data.len());
            data[at] = b;
        }
        rapha_dicom::fuzzing::record_from_part10(&data);
    }
}

/// WADO-RS response seeds (`fuzz/seeds/wado`): a Content-Type line, then the multipart body.
fn wado_seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/wado");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn wado_response_seeds_give_their_first_part() {
    let seeds = wado_seeds();
    assert_eq!(seeds.len(), 2);
    let parts: Vec<_> = seeds
        .iter()
        .map(|s| rapha_dicom::fuzzing::wado_response(s))
        .collect();
    assert_eq!(parts, [Ok(4), Ok(14)]);
    // A part that is not DICOM, or a response that is not multipart DICOM, is refused.
    let html = String::from_utf8(seeds[1].clone()).unwrap().replace(
        "Content-Type: application/dicom;",
        "Content-Type: text/html;",
    );
    assert_eq!(
        rapha_dicom::fuzzing::wado_response(html.as_bytes()),
        Err("part Content-Type is \"text/html\", expected application/dicom".into())
    );
    assert_eq!(
        rapha_dicom::fuzzing::wado_response(b"application/dicom\nDICM"),
        Err("Content-Type is \"application/dicom\", expected multipart/related".into())
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The same entry point cargo-fuzz drives (`wado_response`): mutated Content-Types and
    /// multipart bodies never panic, and a part read is never longer than the body it came in.
    #[test]
    fn wado_response_entry_point_never_panics(
        seed in prop::sample::select(wado_seeds()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = seed.clone();
        for (i, b) in flips {
            let at = i.index(data.len());
            data[at] = b;
        }
        if cut.index(4) == 0 {
            let n = cut.index(data.len());
            data.truncate(n);
        }
        if let Ok(n) = rapha_dicom::fuzzing::wado_response(&data) {
            prop_assert!(n < data.len());
        }
    }
}

/// The functional-group and cine seed (`fuzz/seeds/json/multiframe_groups.json`) gives the
/// record the fuzzers start from: the shared group's spacing and rescale and the one window at
/// top level, the nominal frame time, and per frame only its position and time increment. A
/// FrameTimeVector of another length than NumberOfFrames describes no frame and is left out.
#[test]
fn functional_groups_and_a_frame_time_vector_give_per_frame_record_values() {
    use rapha_dicom::frames::FrameAttrs;
    use rapha_dicom::record::extract;

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/seeds/json/multiframe_groups.json"
    );
    let doc = std::fs::read(path).unwrap();
    let pseudo = crate::common::key(1);
    let fields = rapha_dicom::DicomConfig::default().fields;
    let sets = parse_datasets(&doc).unwrap();
    let r = extract(&sets[0], None, &pseudo, &fields).unwrap().record;
    assert_eq!(r.number_of_frames, Some(3));
    assert_eq!(r.frame_time, Some(66.7));
    assert_eq!(
        (r.pixel_spacing, r.slice_thickness, r.rescale_intercept),
        (Some([0.5, 0.5]), Some(1.0), Some(-1024.0))
    );
    assert_eq!(r.rescale_type.as_deref(), Some("HU"));
    let frame = |z: f64, t: f64| FrameAttrs {
        image_position_patient: Some([0.0, 0.0, z]),
        frame_time_increment: Some(t),
        ..FrameAttrs::default()
    };
    // The window is in the first frame's item only: not common to every frame, so per frame.
    let mut first = frame(0.0, 0.0);
    first.window_center = Some(vec![40.0]);
    first.window_width = Some(vec![400.0]);
    assert_eq!(r.frames, [first, frame(1.0, 66.7), frame(2.0, 133.4)]);

    let short = String::from_utf8(doc)
        .unwrap()
        .replace("[0,66.7,133.4]", "[0,66.7]");
    let sets = parse_datasets(short.as_bytes()).unwrap();
    let r = extract(&sets[0], None, &pseudo, &fields).unwrap().record;
    assert!(
        r.frames.iter().all(|f| f.frame_time_increment.is_none()),
        "{:?}",
        r.frames
    );
}
