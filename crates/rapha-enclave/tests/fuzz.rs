//! The fuzz entry points (`fuzz/`), driven on stable by proptest: seeds of every accepted
//! format and message, then random mutations of them. Any panic fails the test.

use proptest::prelude::*;
use rapha_enclave::fuzzing;

use crate::guard::{safetensors, zip};

fn format_seeds() -> Vec<Vec<u8>> {
    let mut dcm = vec![0u8; 160];
    dcm[128..132].copy_from_slice(b"DICM");
    vec![
        safetensors(&[1, 2, 3, 4, 5, 6, 7, 8]),
        zip(&[
            ("archive/data.pkl", b"\x80\x02}q\x00.", true),
            ("archive/data/0", b"abcd", false),
        ]),
        vec![0x08, 0x07, 0x12, 0x00],
        br#"{"loss":0.1,"loss_curve":[1,2]}"#.to_vec(),
        dcm,
        b"\x08\x00\x16\x00UI\x04\x001.2\0".to_vec(),
        b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0\x08\x00\x18\x00\x02\x00\x00\x00ab".to_vec(),
    ]
}

fn request_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"op":"hello","protocol":1,"trainer":"t"}"#,
        r#"{"op":"list","offset":0,"limit":10}"#,
        r#"{"op":"fetch","index":3}"#,
        r#"{"op":"progress","epoch":1,"loss":0.2,"metrics":{"a":1}}"#,
        r#"{"op":"predict","predictions":[{"index":1,"score":0.5}]}"#,
        r#"{"op":"done"}"#,
    ]
    .iter()
    .map(|s| {
        let mut f = (s.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(s.as_bytes());
        f
    })
    .collect()
}

fn mutate(seed: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(at, b) in edits {
        if !v.is_empty() {
            let i = at % v.len();
            v[i] ^= b;
        }
    }
    v.truncate(v.len().saturating_sub(cut % 8));
    v
}

#[test]
fn seeds_parse_as_expected() {
    let s = format_seeds();
    assert!(rapha_enclave::formats::check_safetensors(&s[0]).is_ok());
    assert!(rapha_enclave::formats::read_zip(&s[1], 1 << 20).is_ok());
    assert!(rapha_enclave::formats::check_onnx(&s[2]).is_ok());
    assert!(rapha_enclave::formats::check_metrics_json(&s[3]).is_ok());
    assert!(rapha_enclave::formats::has_dicm_magic(&s[4]));
    assert!(rapha_enclave::formats::looks_like_dicom_dataset(&s[5]));
    assert!(
        rapha_enclave::formats::looks_like_dicom_dataset(&s[6]),
        "implicit VR dataset"
    );
    for r in request_seeds() {
        assert!(rapha_enclave::protocol::parse_request(&r[4..]).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn output_format_parsers_never_panic(pick in 0usize..7, edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let seeds = format_seeds();
        fuzzing::output_formats(&mutate(&seeds[pick % seeds.len()], &edits, cut));
    }

    #[test]
    fn output_format_parsers_never_panic_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::output_formats(&data);
    }

    #[test]
    fn protocol_parser_never_panics(pick in 0usize..6, edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>()) {
        let seeds = request_seeds();
        fuzzing::protocol_request(&mutate(&seeds[pick % seeds.len()], &edits, cut));
    }
}

#[test]
fn read_ahead_counts_only_whole_frames_and_stops_at_an_oversized_one() {
    use rapha_enclave::protocol::{complete_requests, request_frame_len, MAX_REQUEST_HEADER};
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let one = frame(br#"{"op":"fetch","index":1}"#);
    let mut bytes = [one.clone(), one.clone(), one.clone()].concat();
    assert_eq!(complete_requests(&bytes), 3);
    bytes.truncate(bytes.len() - 1); // the third is not all here yet
    assert_eq!(complete_requests(&bytes), 2);
    assert_eq!(complete_requests(&bytes[..3]), 0); // not even a length prefix
    assert_eq!(request_frame_len(&one).unwrap(), Some(one.len()));
    let huge = ((MAX_REQUEST_HEADER + 1) as u32).to_le_bytes();
    assert!(request_frame_len(&huge).is_err());
    assert_eq!(
        complete_requests(&[one.clone(), huge.to_vec(), one].concat()),
        1
    );
}
