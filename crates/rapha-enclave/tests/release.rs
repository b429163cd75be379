//! What leaves a job (**I4**, issue 19): a trainer hides data in the bytes a released file lets
//! it choose, and only the node's re-serialisation of the declared tensors and the fixed
//! metrics leaves. Each test shows exactly what is released, or which rule refused it.

use rapha_core::release::{TensorDecl, TensorDtype};
use rapha_core::{Digest, OutputDecl, OutputKind};
use rapha_enclave::fingerprint::Fingerprints;
use rapha_enclave::guard::Guard;
use rapha_enclave::RawIdentifiers;

/// One tensor of a hand-written safetensors file: name, dtype, shape, little-endian data.
struct T<'a>(&'a str, &'a str, &'a [u64], Vec<u8>);

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A safetensors file laid out as given: `header` JSON as written (spacing, key order,
/// metadata), `pad` spaces after it, the tensors' data in the order given, then `trailing`.
fn file(tensors: &[T<'_>], metadata: Option<&str>, pad: usize, gap: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    if let Some(m) = metadata {
        entries.push(format!(r#""__metadata__": {{"note": {m:?}}}"#));
    }
    let mut at = 0;
    let mut data = Vec::new();
    for T(name, dtype, shape, bytes) in tensors {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            r#"{name:?}: {{"shape": [{}], "dtype": "{dtype}", "data_offsets": [{at}, {}]}}"#,
            shape.join(", "),
            at + bytes.len()
        ));
        data.extend_from_slice(bytes);
        at += bytes.len();
        data.extend(std::iter::repeat_n(0xA5, gap));
        at += gap;
    }
    let mut hdr = format!("{{ {} }}", entries.join(", "));
    hdr.push_str(&" ".repeat(pad));
    let mut out = (hdr.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// The file the node writes for `tensors` (sorted by name), as the format's documentation in
/// `docs/trainer-protocol.md` describes it: minimal JSON, spaces up to a multiple of 8.
fn canonical(tensors: &[T<'_>]) -> Vec<u8> {
    let mut sorted: Vec<&T<'_>> = tensors.iter().collect();
    sorted.sort_by_key(|t| t.0);
    let mut at = 0;
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for T(name, dtype, shape, bytes) in sorted {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{at},{}]}}"#,
            shape.join(","),
            at + bytes.len()
        ));
        data.extend_from_slice(bytes);
        at += bytes.len();
    }
    let mut hdr = format!("{{{}}}", entries.join(","));
    while hdr.len() % 8 != 0 {
        hdr.push(' ');
    }
    let mut out = (hdr.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn decls() -> Vec<OutputDecl> {
    vec![
        OutputDecl {
            name: "model.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 1 << 20,
            tensors: vec![
                TensorDecl {
                    name: "fc.weight".into(),
                    dtype: TensorDtype::F32,
                    shape: vec![2, 3],
                },
                TensorDecl {
                    name: "fc.bias".into(),
                    dtype: TensorDtype::F32,
                    shape: vec![2],
                },
            ],
        },
        OutputDecl {
            name: "metrics.json".into(),
            kind: OutputKind::MetricsJson,
            max_bytes: 1 << 16,
            tensors: vec![],
        },
    ]
}

fn weight() -> T<'static> {
    T(
        "fc.weight",
        "F32",
        &[2, 3],
        f32s(&[0.5, -1.0, 2.0, 0.25, 3.5, -0.125]),
    )
}
fn bias() -> T<'static> {
    T("fc.bias", "F32", &[2], f32s(&[0.75, -0.5]))
}

/// Runs the guard on `files` as the node does after an accepted run, and returns what is
/// released (name, bytes, the digest the manifest signs), or the rules that refused the set.
fn released(
    decls: &[OutputDecl],
    files: &[(&str, Vec<u8>)],
) -> Result<Vec<(String, Vec<u8>)>, Vec<&'static str>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let searcher = RawIdentifiers::new().searcher().unwrap();
    let fingerprints = Fingerprints::default();
    let guard = Guard {
        outputs: decls,
        total_cap: 2 << 20,
        identifiers: &searcher,
        fingerprints: &fingerprints,
    };
    let verdict = guard.check(dir.path(), &[]);
    if !verdict.accepted {
        return Err(verdict.rules());
    }
    let (verdict, bytes) = guard.release(dir.path(), verdict);
    if !verdict.accepted {
        return Err(verdict.rules());
    }
    Ok(verdict
        .files
        .iter()
        .zip(bytes)
        .map(|(f, bytes)| {
            assert_eq!(
                Digest::of(&bytes),
                f.digest,
                "the signed digest is of the released bytes"
            );
            assert_eq!(bytes.len() as u64, f.size);
            (f.name.clone(), bytes)
        })
        .collect())
}

fn model_released(files: &[(&str, Vec<u8>)]) -> Result<Vec<u8>, Vec<&'static str>> {
    let out = released(&decls(), files)?;
    Ok(out
        .into_iter()
        .find(|(n, _)| n == "model.safetensors")
        .map(|(_, b)| b)
        .unwrap())
}

const METRICS: &[u8] = br#"{"epochs":3,"loss":0.25}"#;

#[test]
fn an_honest_model_leaves_as_the_canonical_file_of_its_declared_tensors() {
    let wrote = file(&[weight(), bias()], None, 3, 0);
    let out = released(
        &decls(),
        &[
            ("model.safetensors", wrote.clone()),
            ("metrics.json", METRICS.to_vec()),
        ],
    )
    .unwrap();
    assert_eq!(out[0].0, "metrics.json");
    assert_eq!(out[0].1, br#"{"epochs":3.0,"loss":0.25}"#.to_vec());
    assert_eq!(out[1].0, "model.safetensors");
    assert_ne!(out[1].1, wrote);
    assert_eq!(out[1].1, canonical(&[weight(), bias()]));
}

#[test]
fn a_metadata_string_is_stripped_from_what_leaves() {
    let secret = "MRN-like payload: 4f3c9a1be2";
    let wrote = file(&[weight(), bias()], Some(secret), 0, 0);
    let out = model_released(&[("model.safetensors", wrote)]).unwrap();
    assert_eq!(out, canonical(&[weight(), bias()]));
    assert!(!out.windows(10).any(|w| w == &secret.as_bytes()[..10]));
}

#[test]
fn header_padding_chosen_by_the_trainer_does_not_leave() {
    // 61 spaces of padding: 61 is the trainer's choice of a number (bits); the node's padding
    // is the format's minimum.
    let out =
        model_released(&[("model.safetensors", file(&[weight(), bias()], None, 61, 0))]).unwrap();
    assert_eq!(out, canonical(&[weight(), bias()]));
}

#[test]
fn an_undeclared_tensor_is_refused() {
    let hidden = T("fc.extra", "U8", &[16], b"XOR-ed pixel run".to_vec());
    let r = model_released(&[(
        "model.safetensors",
        file(&[weight(), bias(), hidden], None, 0, 0),
    )]);
    assert_eq!(r, Err(vec!["undeclared-tensor"]));
}

#[test]
fn a_tensor_named_with_free_text_is_refused() {
    // The trainer's tensor name carries the text; only declared names may appear.
    let named = T(
        "patient-Walsh-Bridget-1961",
        "F32",
        &[2],
        f32s(&[0.75, -0.5]),
    );
    let r = model_released(&[("model.safetensors", file(&[weight(), named], None, 0, 0))]);
    assert_eq!(r, Err(vec!["missing-tensor", "undeclared-tensor"]));
}

#[test]
fn a_missing_declared_tensor_is_refused() {
    let r = model_released(&[("model.safetensors", file(&[weight()], None, 0, 0))]);
    assert_eq!(r, Err(vec!["missing-tensor"]));
}

#[test]
fn a_tensor_of_another_dtype_or_shape_is_refused() {
    let as_f64 = T("fc.bias", "F64", &[2], vec![0; 16]);
    let r = model_released(&[("model.safetensors", file(&[weight(), as_f64], None, 0, 0))]);
    assert_eq!(r, Err(vec!["tensor-mismatch"]));
    let wider = T("fc.bias", "F32", &[4], f32s(&[0.75, -0.5, 1.0, 2.0]));
    let r = model_released(&[("model.safetensors", file(&[weight(), wider], None, 0, 0))]);
    assert_eq!(r, Err(vec!["tensor-mismatch"]));
    let transposed = T("fc.weight", "F32", &[3, 2], weight().3);
    let r = model_released(&[("model.safetensors", file(&[transposed, bias()], None, 0, 0))]);
    assert_eq!(r, Err(vec!["tensor-mismatch"]));
}

#[test]
fn nan_and_infinities_are_refused() {
    for bad in [
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        let b = T("fc.bias", "F32", &[2], f32s(&[0.75, bad]));
        let r = model_released(&[("model.safetensors", file(&[weight(), b], None, 0, 0))]);
        assert_eq!(r, Err(vec!["non-finite"]), "{:#x}", bad.to_bits());
    }
}

#[test]
fn gaps_and_trailing_bytes_are_refused() {
    let r = model_released(&[("model.safetensors", file(&[weight(), bias()], None, 0, 4))]);
    assert_eq!(r, Err(vec!["bad-format"]));
    let mut trailing = file(&[weight(), bias()], None, 0, 0);
    trailing.extend_from_slice(b"tail");
    let r = model_released(&[("model.safetensors", trailing)]);
    assert_eq!(r, Err(vec!["bad-format"]));
}

#[test]
fn metrics_leave_re_emitted_with_fixed_keys_and_precision() {
    let wrote = br#"{ "loss" : 0.123456789012345, "epochs": 3, "auc":0.5 ,
        "loss_curve": [1e0, 0.5000000001] }"#;
    let out = released(&decls(), &[("metrics.json", wrote.to_vec())]).unwrap();
    assert_eq!(
        String::from_utf8(out[0].1.clone()).unwrap(),
        r#"{"auc":0.5,"epochs":3.0,"loss":0.12345679,"loss_curve":[1.0,0.5]}"#
    );
}

#[test]
fn metrics_with_an_extra_key_a_string_or_a_huge_number_are_refused() {
    for wrote in [
        br#"{"loss":0.5,"note":1}"#.to_vec(),
        br#"{"loss":"0.5"}"#.to_vec(),
        br#"{"loss":1e39}"#.to_vec(),
        br#"{"loss_curve":[0.5,"x"]}"#.to_vec(),
    ] {
        let r = released(&decls(), &[("metrics.json", wrote.clone())]);
        assert!(r.is_err(), "{}", String::from_utf8_lossy(&wrote));
    }
}

#[test]
fn metrics_with_thousands_of_repeated_keys_leave_one_value_each() {
    let mut wrote = String::from("{");
    for i in 0..4000 {
        wrote.push_str(&format!("\"loss\":{i},"));
    }
    wrote.push_str("\"loss\":0.5}");
    let out = released(&decls(), &[("metrics.json", wrote.into_bytes())]).unwrap();
    assert_eq!(out[0].1, br#"{"loss":0.5}"#.to_vec());
}

#[test]
fn pickles_onnx_and_models_without_declared_tensors_are_not_released() {
    let undeclared = vec![OutputDecl {
        name: "model.safetensors".into(),
        kind: OutputKind::Safetensors,
        max_bytes: 1 << 20,
        tensors: vec![],
    }];
    let r = released(
        &undeclared,
        &[("model.safetensors", file(&[bias()], None, 0, 0))],
    );
    assert_eq!(r, Err(vec!["not-releasable"]));
    let onnx = vec![OutputDecl {
        name: "model.onnx".into(),
        kind: OutputKind::Onnx,
        max_bytes: 1 << 20,
        tensors: vec![],
    }];
    let r = released(&onnx, &[("model.onnx", vec![0x08, 0x07, 0x12, 0x01, b'x'])]);
    assert_eq!(r, Err(vec!["not-releasable"]));
}
