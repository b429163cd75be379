//! Output guard rules checked directly on output directories (the sandboxed attacks in
//! `attacks.rs` cover the same rules end to end).

use std::io::Write;
use std::path::Path;

use rapha_core::{OutputDecl, OutputKind};
use rapha_enclave::fingerprint::Fingerprints;
use rapha_enclave::guard::{BudgetKind, Guard, GuardBudget, LogStream, Place, Rejection};
use rapha_enclave::{IdentifierKind, RawIdentifiers};

pub fn safetensors(data: &[u8]) -> Vec<u8> {
    let mut hdr = format!(
        r#"{{"w":{{"dtype":"U8","shape":[{}],"data_offsets":[0,{}]}}}}"#,
        data.len(),
        data.len()
    );
    while hdr.len() % 8 != 0 {
        hdr.push(' ');
    }
    let mut out = (hdr.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A zip archive (as `torch.save` writes it, optionally with deflated entries).
pub fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, deflate) in entries {
        let body = if *deflate {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.to_vec()
        };
        let method: u16 = if *deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut local = b"PK\x03\x04".to_vec();
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(&method.to_le_bytes());
        local.extend_from_slice(&[0; 8]); // time, date, crc (not checked by the guard)
        local.extend_from_slice(&(body.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(&body);
        let mut c = b"PK\x01\x02".to_vec();
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&method.to_le_bytes());
        c.extend_from_slice(&[0; 8]);
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]); // extra, comment, disk, int attr, ext attr(4)
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&c);
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn decls() -> Vec<OutputDecl> {
    vec![
        OutputDecl {
            name: "model.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 1 << 20,
            tensors: vec![],
        },
        OutputDecl {
            name: "model.pt".into(),
            kind: OutputKind::PytorchZip,
            max_bytes: 1 << 20,
            tensors: vec![],
        },
        OutputDecl {
            name: "model.onnx".into(),
            kind: OutputKind::Onnx,
            max_bytes: 1 << 20,
            tensors: vec![],
        },
        OutputDecl {
            name: "metrics.json".into(),
            kind: OutputKind::MetricsJson,
            max_bytes: 4096,
            tensors: vec![],
        },
    ]
}

fn ids() -> RawIdentifiers {
    let mut ids = RawIdentifiers::new();
    ids.add(IdentifierKind::PatientId, "MRN4471923");
    ids.add(IdentifierKind::PatientName, "Walsh^Bridget");
    ids.add(IdentifierKind::BirthDate, "19610407");
    ids.add(IdentifierKind::AccessionNumber, "A20240117");
    ids.add(IdentifierKind::Uid, "1.2.826.0.1.3680043.8.498.77");
    ids.add(IdentifierKind::PatientId, "42"); // too short to search for
    ids
}

fn check_dir(
    dir: &Path,
    fingerprints: &Fingerprints,
    logs: &[LogStream<'_>],
) -> rapha_enclave::Verdict {
    let searcher = ids().searcher().unwrap();
    let decls = decls();
    let guard = Guard {
        outputs: &decls,
        total_cap: 2 << 20,
        identifiers: &searcher,
        fingerprints,
    };
    guard.check(dir, logs)
}

fn check_files(files: &[(&str, Vec<u8>)]) -> rapha_enclave::Verdict {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    check_dir(dir.path(), &Fingerprints::default(), &[])
}

const GOOD_METRICS: &[u8] = br#"{"epochs":3,"loss":0.25,"loss_curve":[0.9,0.5,0.25]}"#;

fn onnx() -> Vec<u8> {
    vec![0x08, 0x07, 0x12, 0x04, b't', b'e', b's', b't']
}

#[test]
fn honest_outputs_in_every_accepted_format_pass() {
    let pt = zip(&[
        ("archive/data.pkl", b"\x80\x02}q\x00.", true),
        ("archive/data/0", &[1u8, 2, 3, 4], false),
    ]);
    let v = check_files(&[
        ("model.safetensors", safetensors(&[9u8; 64])),
        ("model.pt", pt),
        ("model.onnx", onnx()),
        ("metrics.json", GOOD_METRICS.to_vec()),
    ]);
    assert!(v.accepted, "{:?}", v.rejections);
    assert_eq!(v.files.len(), 4);
    assert_eq!(v.files[0].digest, rapha_core::Digest::of(GOOD_METRICS));
}

#[test]
fn identifier_deflated_inside_a_pytorch_zip_is_found() {
    let pt = zip(&[(
        "archive/data.pkl",
        b"\x80\x02X\x0a\x00\x00\x00MRN4471923q\x00.",
        true,
    )]);
    let v = check_files(&[("model.pt", pt.clone())]);
    // Deflated: the raw bytes alone would not show it.
    assert!(!pt.windows(10).any(|w| w == b"MRN4471923"));
    // Found in the bytes of a zip entry, which is named by its index, never its name.
    assert!(
        v.rejections.iter().any(|r| matches!(
            r,
            Rejection::Identifier {
                stream: Place { file, entry: Some(_), in_name: false },
                kind: IdentifierKind::PatientId,
                offset: 7
            } if file == "model.pt"
        )),
        "{:?}",
        v.rejections
    );
    assert!(!v.accepted);
}

#[test]
fn birth_dates_are_found_in_common_written_formats() {
    for written in [
        "1961-04-07",
        "07/04/1961",
        "04/07/1961",
        "07.04.1961",
        "19610407",
    ] {
        let v = check_files(&[
            (
                "metrics.json",
                format!("{{\"seconds\":{}}}", 1).into_bytes(),
            ),
            ("model.onnx", [onnx(), written.as_bytes().to_vec()].concat()),
        ]);
        assert!(
            v.rejections.iter().any(|r| matches!(
                r,
                Rejection::Identifier {
                    kind: IdentifierKind::BirthDate,
                    ..
                }
            )),
            "{written}: {:?}",
            v.rejections
        );
    }
}

#[test]
fn names_are_found_case_insensitively_and_in_written_order() {
    for written in ["WALSH^BRIDGET", "Bridget Walsh", "walsh, bridget"] {
        let v = check_files(&[("model.onnx", [onnx(), written.as_bytes().to_vec()].concat())]);
        assert!(
            v.rejections.iter().any(|r| matches!(
                r,
                Rejection::Identifier {
                    kind: IdentifierKind::PatientName,
                    ..
                }
            )),
            "{written}: {:?}",
            v.rejections
        );
    }
}

#[test]
fn numeric_identifier_in_metrics_is_found() {
    // Numbers can carry PHI too: the accession's digits as a number, a UID as a number key.
    let v = check_files(&[("metrics.json", br#"{"loss":19610407}"#.to_vec())]);
    assert!(v.rejections.iter().any(|r| matches!(
        r,
        Rejection::Identifier {
            kind: IdentifierKind::BirthDate,
            ..
        }
    )));
}

#[test]
fn identifiers_too_short_to_search_are_skipped_not_matched() {
    let searcher = ids().searcher().unwrap();
    assert_eq!(searcher.skipped_short(), 1);
    let v = check_files(&[("model.safetensors", safetensors(b"42424242"))]);
    assert!(v.accepted, "{:?}", v.rejections);
}

#[test]
fn embedded_part10_file_anywhere_is_dicom_content() {
    let mut data = vec![0u8; 300];
    data[100..106].copy_from_slice(b"DICM\x02\x00");
    let v = check_files(&[("model.safetensors", safetensors(&data))]);
    assert!(
        v.rejections
            .iter()
            .any(|r| matches!(r, Rejection::DicomContent { how, .. } if how.contains("embedded"))),
        "{:?}",
        v.rejections
    );
}

#[test]
fn dicom_inside_a_zip_entry_is_rejected() {
    let mut dcm = vec![0u8; 140];
    dcm[128..132].copy_from_slice(b"DICM");
    let pt = zip(&[
        ("archive/data.pkl", b".", false),
        ("archive/scan", &dcm, true),
    ]);
    let v = check_files(&[("model.pt", pt)]);
    assert!(
        v.rejections.iter().any(
            |r| matches!(r, Rejection::DicomContent { name, .. } if *name == Place::entry("model.pt", 1))
        ),
        "{:?}",
        v.rejections
    );
}

#[test]
fn zip_bomb_is_refused() {
    let big = vec![0u8; 3 << 20]; // inflates past the 2 MiB total cap
    let pt = zip(&[("archive/data.pkl", &big, true)]);
    let v = check_files(&[("model.pt", pt)]);
    assert!(v.rejections.iter().any(|r| matches!(r, Rejection::BadFormat { detail, .. } if detail.contains("beyond the output cap"))), "{:?}", v.rejections);
}

#[test]
fn pytorch_zip_without_data_pkl_is_refused() {
    let v = check_files(&[("model.pt", zip(&[("weights.bin", b"1234", false)]))]);
    assert!(v.rejections.iter().any(|r| matches!(
        r,
        Rejection::BadFormat {
            kind: OutputKind::PytorchZip,
            ..
        }
    )));
}

#[test]
fn safetensors_with_hidden_trailing_bytes_is_refused() {
    let mut st = safetensors(&[1u8; 16]);
    st.extend_from_slice(b"hidden payload");
    let v = check_files(&[("model.safetensors", st)]);
    assert!(
        v.rejections.iter().any(
            |r| matches!(r, Rejection::BadFormat { detail, .. } if detail.contains("trailing"))
        ),
        "{:?}",
        v.rejections
    );
}

#[test]
fn safetensors_with_a_bad_header_is_refused() {
    for bad in [
        b"\xff\xff\xff\xff\xff\xff\xff\x7f{}".to_vec(),
        [8u64.to_le_bytes().to_vec(), b"not json".to_vec()].concat(),
        safetensors(&[0u8; 8])
            .into_iter()
            .map(|b| if b == b'U' { b'Q' } else { b })
            .collect(),
    ] {
        let v = check_files(&[("model.safetensors", bad)]);
        assert!(
            v.rejections.iter().any(|r| matches!(
                r,
                Rejection::BadFormat {
                    kind: OutputKind::Safetensors,
                    ..
                }
            )),
            "{:?}",
            v.rejections
        );
    }
}

#[test]
fn onnx_that_is_not_a_model_proto_is_refused() {
    let v = check_files(&[("model.onnx", b"hello world".to_vec())]);
    assert!(v.rejections.iter().any(|r| matches!(
        r,
        Rejection::BadFormat {
            kind: OutputKind::Onnx,
            ..
        }
    )));
}

#[test]
fn metrics_with_unknown_keys_or_nested_values_are_refused() {
    for bad in [
        &br#"{"Walsh":1}"#[..],
        br#"{"loss":{"a":1}}"#,
        br#"[1,2]"#,
        br#"{"loss_curve":["x"]}"#,
        br#"{"loss":true}"#,
    ] {
        let v = check_files(&[("metrics.json", bad.to_vec())]);
        assert!(
            v.rejections.iter().any(|r| matches!(
                r,
                Rejection::BadFormat {
                    kind: OutputKind::MetricsJson,
                    ..
                }
            )),
            "{}",
            String::from_utf8_lossy(bad)
        );
        // Rejection text never repeats the offending key or value.
        assert!(!v.rejections.iter().any(|r| r.to_string().contains("Walsh")));
    }
}

#[test]
fn undeclared_names_and_control_characters_are_refused() {
    let v = check_files(&[
        ("notes.txt", b"x".to_vec()),
        ("model\x07.onnx", onnx()),
        ("model.onnx\\..", onnx()),
    ]);
    assert!(v.rejections.contains(&Rejection::Undeclared {
        name: "notes.txt".into()
    }));
    assert_eq!(
        v.rejections
            .iter()
            .filter(|r| matches!(r, Rejection::BadName { .. }))
            .count(),
        2,
        "{:?}",
        v.rejections
    );
}

#[test]
fn subdirectory_in_out_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model.safetensors")).unwrap();
    let v = check_dir(dir.path(), &Fingerprints::default(), &[]);
    assert!(v
        .rejections
        .iter()
        .any(|r| matches!(r, Rejection::NotRegular { kind, .. } if kind == "directory")));
}

#[test]
fn total_cap_is_enforced_across_files() {
    let decls = vec![
        OutputDecl {
            name: "a.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 1000,
            tensors: vec![],
        },
        OutputDecl {
            name: "b.safetensors".into(),
            kind: OutputKind::Safetensors,
            max_bytes: 1000,
            tensors: vec![],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.safetensors"), safetensors(&[1u8; 600])).unwrap();
    std::fs::write(dir.path().join("b.safetensors"), safetensors(&[2u8; 600])).unwrap();
    let searcher = ids().searcher().unwrap();
    let fp = Fingerprints::default();
    let guard = Guard {
        outputs: &decls,
        total_cap: 1000,
        identifiers: &searcher,
        fingerprints: &fp,
    };
    let v = guard.check(dir.path(), &[]);
    assert!(
        v.rejections
            .iter()
            .any(|r| matches!(r, Rejection::TotalTooLarge { cap: 1000, .. })),
        "{:?}",
        v.rejections
    );
}

#[test]
fn pixel_block_is_found_at_any_offset_and_small_copies_of_flat_regions_are_not() {
    let mut st = 0x9e3779b97f4a7c15u64;
    let pixels: Vec<u8> = (0..32 * 1024)
        .map(|_| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st as u8
        })
        .collect();
    // Record 1 is flat background: never fingerprinted.
    let fp = Fingerprints::of([(0, &pixels[..]), (1, &[0u8; 8192][..])]);
    assert!(!fp.is_empty());
    for (offset, len) in [(0usize, 4096usize), (777, 4096), (20_000, 8192)] {
        let mut data = vec![0x55u8; 333];
        data.extend_from_slice(&pixels[offset..offset + len]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), safetensors(&data)).unwrap();
        let v = check_dir(dir.path(), &fp, &[]);
        assert!(
            v.rejections
                .iter()
                .any(|r| matches!(r, Rejection::PixelBlock { .. })),
            "copy at {offset}+{len} missed"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors(&[0u8; 8192]),
    )
    .unwrap();
    assert!(check_dir(dir.path(), &fp, &[]).accepted);
}

#[test]
fn logs_are_scanned_and_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let logs = [
        LogStream {
            name: "stdout",
            bytes: b"epoch 1 A20240117 loss 0.3",
            overflowed: false,
            cap: 100,
        },
        LogStream {
            name: "stderr",
            bytes: b"ok",
            overflowed: true,
            cap: 100,
        },
    ];
    let v = check_dir(dir.path(), &Fingerprints::default(), &logs);
    assert!(v.rejections.contains(&Rejection::Identifier {
        stream: Place::file("stdout"),
        kind: IdentifierKind::AccessionNumber,
        offset: 8
    }));
    assert!(v.rejections.contains(&Rejection::LogOverflow {
        stream: "stderr".into(),
        cap: 100
    }));
}

#[test]
fn short_identifiers_are_searched_in_text_but_not_in_tensor_data() {
    let mut ids = RawIdentifiers::new();
    ids.add(IdentifierKind::PatientId, "QX7Z2"); // 5 bytes: text only
    let searcher = ids.searcher().unwrap();
    let decls = decls();
    let fp = Fingerprints::default();
    let guard = Guard {
        outputs: &decls,
        total_cap: 2 << 20,
        identifiers: &searcher,
        fingerprints: &fp,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors(b"..qx7z2.."),
    )
    .unwrap();
    assert!(
        guard.check(dir.path(), &[]).accepted,
        "tensor bytes matching a short id by chance"
    );
    let log = [LogStream {
        name: "stdout",
        bytes: b"patient QX7Z2",
        overflowed: false,
        cap: 100,
    }];
    let v = guard.check(dir.path(), &log);
    assert_eq!(
        v.rejections,
        vec![Rejection::Identifier {
            stream: Place::file("stdout"),
            kind: IdentifierKind::PatientId,
            offset: 8
        }]
    );
    assert_eq!(
        v.rejections[0].to_string(),
        "stdout contains a raw patient id of this cohort (offset 8)"
    );
}

mod prefilter {
    use proptest::prelude::*;
    use rapha_enclave::{IdentifierKind, RawIdentifiers};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The binary-stream search (6-byte prefix filter + anchored confirmation) finds every
        /// planted identifier, in any case, at any offset, that the plain text search finds.
        #[test]
        fn binary_search_finds_what_text_search_finds(
            noise in prop::collection::vec(any::<u8>(), 0..4096),
            at in any::<usize>(),
            which in 0usize..4,
            upper in any::<bool>(),
        ) {
            let values = ["MRN4471923", "Walsh^Bridget", "1.2.826.0.1.3680043.8.498.77", "A20240117X"];
            let mut ids = RawIdentifiers::new();
            for v in values {
                ids.add(IdentifierKind::Other, v);
            }
            let s = ids.searcher().unwrap();
            let planted = if upper { values[which].to_ascii_uppercase() } else { values[which].to_ascii_lowercase() };
            let at = if noise.is_empty() { 0 } else { at % noise.len() };
            let mut hay = noise[..at].to_vec();
            hay.extend_from_slice(planted.as_bytes());
            hay.extend_from_slice(&noise[at..]);
            let text = s.find_each_kind(&hay, false);
            let binary = s.find_each_kind(&hay, true);
            prop_assert_eq!(text.len(), 1);
            prop_assert_eq!(&binary, &text);
            prop_assert!(binary[0].offset <= at);
        }
    }
}

/// How a match counts by the identifier's shape (crate::identifiers): model code and log
/// numbers that merely contain a short name or number pass; the identifier as written is
/// refused.
mod shapes {
    use rapha_enclave::{IdentifierKind, RawIdentifiers};

    fn searcher() -> rapha_enclave::identifiers::IdentifierSearcher {
        let mut ids = RawIdentifiers::new();
        ids.add_expanded(["Head", "BLOCK", "4471923", "QX7Z2"]);
        ids.add(IdentifierKind::PatientName, "Walsh^Bridget");
        ids.searcher().unwrap()
    }

    fn found(text: &str) -> bool {
        !searcher().find_each_kind(text.as_bytes(), false).is_empty()
    }

    #[test]
    fn a_name_that_is_a_code_word_is_found_only_as_written() {
        for honest in [
            "lm_head.weight",
            "head.weight",
            "blocks.0.attn",
            "mid_block.attentions.0",
            "freezing the backbone, training the head",
            "Headroom",
        ] {
            assert!(!found(honest), "{honest}");
        }
        for leak in [
            "patient Head",
            "HEAD",
            "name=Block.",
            "BLOCK^X",
            "Head.weight",
        ] {
            assert!(found(leak), "{leak}");
        }
    }

    #[test]
    fn a_number_is_found_only_as_a_whole_number() {
        for honest in [
            "loss 0.4471923",
            "step 44719230",
            "uid 1.2.4471923.5",
            "record 9f3e4471923ab0c1d2e3f4a5b6c7d8e9",
        ] {
            assert!(!found(honest), "{honest}");
        }
        for leak in [
            "mrn 4471923",
            "MRN4471923",
            "[4471923]",
            "4471923.",
            "id=4471923,",
        ] {
            assert!(found(leak), "{leak}");
        }
    }

    #[test]
    fn a_short_code_is_found_as_a_whole_token_and_a_full_name_anywhere() {
        assert!(!found("hash a1qx7z2b9"));
        assert!(found("patient qx7z2 seen"));
        assert!(found("xxwalsh^bridgetxx"));
        assert!(found("BRIDGET WALSH"));
    }
}

/// A trainer that fills `/out` with zip bombs: each archive inflates to just under the output
/// cap (so each alone is a well-formed archive), 200 of them to 200 times the cap. The guard
/// stops at its budget instead of inflating and scanning all of them.
#[test]
fn many_zip_bombs_are_refused_within_the_guards_budget() {
    const CAP: u64 = 64 << 20;
    let bomb = zip(&[(
        "archive/data.pkl",
        &vec![0u8; (CAP - (1 << 10)) as usize],
        true,
    )]);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(dir.path().join(format!("bomb{i}.pt")), &bomb).unwrap();
    }
    let decls = decls();
    let searcher = ids().searcher().unwrap();
    let fp = Fingerprints::default();
    let guard = Guard {
        outputs: &decls,
        total_cap: CAP,
        identifiers: &searcher,
        fingerprints: &fp,
    };
    let started = std::time::Instant::now();
    let v = guard.check(dir.path(), &[]);
    let took = started.elapsed();
    eprintln!(
        "guard on 200 zip bombs of {} KiB (each inflating to ~64 MiB): {took:?}",
        bomb.len() >> 10
    );
    assert!(!v.accepted);
    assert_eq!(
        v.rejections.last(),
        Some(&Rejection::Budget {
            what: BudgetKind::Inflate,
            limit: CAP
        }),
        "{:?}",
        v.rejections
    );
    assert_eq!(
        v.rejections.last().unwrap().to_string(),
        "the guard's inflate budget (67108864 bytes) ran out before the whole output set was \
         checked"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the guard took {took:?}"
    );
}

fn guard_on<'a>(
    decls: &'a [OutputDecl],
    searcher: &'a rapha_enclave::identifiers::IdentifierSearcher,
    fp: &'a Fingerprints,
) -> Guard<'a> {
    Guard {
        outputs: decls,
        total_cap: 2 << 20,
        identifiers: searcher,
        fingerprints: fp,
    }
}

#[test]
fn searching_past_the_scan_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors(&[7u8; 4096]),
    )
    .unwrap();
    std::fs::write(dir.path().join("metrics.json"), GOOD_METRICS).unwrap();
    let (decls, searcher, fp) = (decls(), ids().searcher().unwrap(), Fingerprints::default());
    let guard = guard_on(&decls, &searcher, &fp);
    let roomy = GuardBudget::for_outputs(2 << 20, 0);
    assert!(guard.check_within(dir.path(), &[], roomy).accepted);
    let tight = GuardBudget {
        scan_bytes: 4096,
        ..roomy
    };
    let v = guard.check_within(dir.path(), &[], tight);
    assert_eq!(
        v.rejections,
        vec![Rejection::Budget {
            what: BudgetKind::Scan,
            limit: 4096
        }]
    );
    assert!(!v.accepted);
}

#[test]
fn a_guard_past_its_wall_time_refuses_the_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.json"), GOOD_METRICS).unwrap();
    let (decls, searcher, fp) = (decls(), ids().searcher().unwrap(), Fingerprints::default());
    let guard = guard_on(&decls, &searcher, &fp);
    let none_left = GuardBudget {
        wall: std::time::Duration::ZERO,
        ..GuardBudget::for_outputs(2 << 20, 0)
    };
    let v = guard.check_within(dir.path(), &[], none_left);
    assert_eq!(
        v.rejections,
        vec![Rejection::Budget {
            what: BudgetKind::Time,
            limit: 0
        }]
    );
    // A wall time too long to add to the clock is no time limit, not a panic.
    let endless = GuardBudget {
        wall: std::time::Duration::MAX,
        ..GuardBudget::for_outputs(2 << 20, 0)
    };
    assert!(guard.check_within(dir.path(), &[], endless).accepted);
}

#[test]
fn audit_lines_name_places_by_the_node_or_by_digest_never_by_trainer_bytes() {
    // A trainer names files and zip entries after an MRN and hex-encoded pixels, hoping the
    // hospital's audit trail (which may be shipped to an audit repository) carries them out.
    let planted = ["MRN000091171", "00c8ff1a2b3c4d5e"];
    let rejections = [
        Rejection::Undeclared {
            name: format!("px-{}.bin", planted[1]),
        },
        Rejection::Identifier {
            stream: Place::entry_name(format!("model-{}.pt", planted[0]), 3),
            kind: IdentifierKind::PatientId,
            offset: 7,
        },
        Rejection::PixelBlock {
            stream: Place::file("model.safetensors"),
            offset: 4096,
        },
        Rejection::BadFormat {
            name: "model.onnx".into(),
            kind: OutputKind::Onnx,
            detail: format!("unexpected tensor {}", planted[0]),
        },
        Rejection::LogOverflow {
            stream: "stderr".into(),
            cap: 65536,
        },
    ];
    let lines: Vec<String> = rejections.iter().map(|r| r.audit_line(&decls())).collect();
    for (line, r) in lines.iter().zip(&rejections) {
        assert!(line.starts_with(r.rule()), "{line}");
        for p in planted {
            assert!(!line.contains(p), "trainer bytes in the audit line: {line}");
        }
    }
    let undeclared = format!("px-{}.bin", planted[1]);
    let digest = rapha_core::Digest::of(undeclared.as_bytes()).to_hex();
    assert_eq!(
        lines[0],
        format!("undeclared-output: sha256:{}", &digest[..16])
    );
    assert!(
        lines[1].starts_with("identifier: a raw patient id in sha256:")
            && lines[1].ends_with("!\"<entry 3>\" name at offset 7"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "pixel-block: \"model.safetensors\" at offset 4096"
    );
    assert_eq!(
        lines[3],
        "bad-format: \"model.onnx\" is not a valid Onnx file"
    );
    assert_eq!(lines[4], "log-overflow: \"stderr\" over 65536 bytes");
}
