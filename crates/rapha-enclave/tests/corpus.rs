//! The output guard on real model files: safetensors and `torch.save` archives of ResNet-18,
//! a ViT (`blocks.*`, `head`), GPT-2 (`lm_head`), BERT (`LayerNorm`) and two UNets
//! (`down_blocks`, `mid_block`, `inc`/`outc`), written by `scripts/model_corpus.py` with
//! Debian's python3-torch into `$RAPHA_MODEL_CORPUS` (`scripts/lib.sh`).
//!
//! An honest trainer must not be refused because a patient is named Head or Block or a study
//! is numbered like a tensor offset; a raw identifier planted in any part of the same files
//! must still be refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rapha_core::{OutputDecl, OutputKind};
use rapha_enclave::fingerprint::Fingerprints;
use rapha_enclave::guard::{Guard, Rejection};
use rapha_enclave::{IdentifierKind, RawIdentifiers, Verdict};

/// Patient names that are also words of model code.
const AWKWARD_NAMES: [&str; 8] = [
    "Head", "Block", "Layer", "Conv", "Norm", "Attn", "Weight", "Bias",
];
/// Short numeric StudyIDs, of the sizes tensor shapes and offsets have.
const SHORT_STUDY_IDS: [&str; 8] = [
    "1000", "1024", "2048", "3072", "4096", "8192", "0001", "5120",
];

/// The corpus directory, or `None` (skipped loudly; a failure with RAPHA_REQUIRE_SERVICES=1).
fn corpus() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("RAPHA_MODEL_CORPUS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rapha/model-corpus"))
        })?;
    if !dir.join(".complete").exists() {
        let required = std::env::var("RAPHA_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "the model corpus is required but missing at {} (scripts/lib.sh: generate_model_corpus)",
            dir.display()
        );
        eprintln!("SKIPPED: no model corpus at {}", dir.display());
        return None;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| kind_of(p).is_some())
        .collect();
    files.sort();
    assert!(files.len() >= 12, "corpus too small: {files:?}");
    Some(files)
}

fn kind_of(p: &Path) -> Option<OutputKind> {
    match p.extension()?.to_str()? {
        "safetensors" => Some(OutputKind::Safetensors),
        "pt" => Some(OutputKind::PytorchZip),
        _ => None,
    }
}

/// Every number of at least four digits in a safetensors header (shapes and offsets).
fn header_numbers(bytes: &[u8]) -> Vec<String> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]).into_owned();
    header
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| s.len() >= 4)
        .map(str::to_owned)
        .collect()
}

/// A cohort whose names are model words and whose study ids are the corpus's own numbers,
/// next to ordinary identifiers.
fn awkward_cohort(files: &[PathBuf]) -> RawIdentifiers {
    let mut ids = RawIdentifiers::new();
    for name in AWKWARD_NAMES {
        ids.add(IdentifierKind::PatientName, &format!("{name}^Alex"));
        // rapha-dicom's expansion: each name component alone, as written and upper case.
        ids.add_expanded([name, name.to_ascii_uppercase().as_str()]);
    }
    let mut numbers: BTreeSet<String> = SHORT_STUDY_IDS.iter().map(|s| s.to_string()).collect();
    for f in files {
        if kind_of(f) == Some(OutputKind::Safetensors) {
            numbers.extend(header_numbers(&std::fs::read(f).unwrap()));
        }
    }
    assert!(numbers.len() > 100, "only {} numbers", numbers.len());
    ids.add_expanded(numbers.iter().map(String::as_str));
    ids.add(IdentifierKind::PatientId, "MRN4471923");
    ids.add(IdentifierKind::PatientName, "Walsh^Bridget");
    ids.add(IdentifierKind::BirthDate, "19610407");
    ids.add(IdentifierKind::AccessionNumber, "A20240117");
    ids.add(IdentifierKind::Uid, "1.2.826.0.1.3680043.8.498.77");
    ids
}

/// The guard's verdict on one file written to an empty `/out` under `name`.
fn check_one(ids: &RawIdentifiers, name: &str, kind: OutputKind, bytes: &[u8]) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let decls = [OutputDecl {
        name: name.into(),
        kind,
        max_bytes: 16 << 20,
        tensors: vec![],
    }];
    let searcher = ids.searcher().unwrap();
    let fp = Fingerprints::default();
    let guard = Guard {
        outputs: &decls,
        total_cap: 16 << 20,
        identifiers: &searcher,
        fingerprints: &fp,
    };
    guard.check(dir.path(), &[])
}

#[test]
fn every_corpus_model_passes_with_a_cohort_named_like_model_code() {
    let Some(files) = corpus() else { return };
    let ids = awkward_cohort(&files);
    let mut refused = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let v = check_one(&ids, name, kind_of(f).unwrap(), &std::fs::read(f).unwrap());
        if !v.accepted {
            refused.push(format!("{name}: {:?}", v.rejections));
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {} honest model files refused:\n{}",
        refused.len(),
        files.len(),
        refused.join("\n")
    );
}

/// A safetensors file with its header rewritten by `edit` (tensor data unchanged).
fn edit_safetensors(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    // `@W` stands for a JSON escape of `W` (serde_json writes ASCII unescaped).
    let mut h = serde_json::to_string(&header)
        .unwrap()
        .replace("@W", "\\u0057")
        .into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// The same archive with `edit` applied to its entries, stored again.
fn edit_zip(bytes: &[u8], edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = rapha_enclave::formats::read_zip(bytes, 1 << 30)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.data))
        .collect();
    edit(&mut entries);
    let refs: Vec<(&str, &[u8], bool)> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), false))
        .collect();
    crate::guard::zip(&refs)
}

/// Overwrites the start of the first pickled string of at least `at_least` bytes that ends
/// in `.weight` (a tensor name) with `with`, keeping the pickle's layout.
fn plant_in_pickled_name(pkl: &mut [u8], with: &[u8]) {
    let at = rapha_enclave::formats::pickle_strings(pkl)
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.len() >= with.len() + 2 && s.ends_with(b".weight"))
        .map(|(at, _)| at)
        .expect("a tensor name long enough");
    pkl[at..at + with.len()].copy_from_slice(with);
}

type Planted = (&'static str, Vec<u8>, IdentifierKind);

fn planted_safetensors(bytes: &[u8]) -> Vec<Planted> {
    let rename = |to: &'static str| {
        edit_safetensors(bytes, |h| {
            let first = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
            let v = h.remove(&first).unwrap();
            h.insert(to.into(), v);
        })
    };
    let metadata = |note: &'static str| {
        edit_safetensors(bytes, |h| {
            h["__metadata__"]["note"] = note.into();
        })
    };
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let in_data = |what: &[u8]| {
        let mut b = bytes.to_vec();
        b[8 + n + 16..8 + n + 16 + what.len()].copy_from_slice(what);
        b
    };
    vec![
        (
            "patient id as a tensor name",
            rename("MRN4471923.weight"),
            IdentifierKind::PatientId,
        ),
        // A name component as the hospital wrote it, as a module name.
        (
            "name component as a tensor name",
            rename("HEAD.weight"),
            IdentifierKind::Other,
        ),
        (
            "full name in the metadata",
            metadata("Walsh^Bridget"),
            IdentifierKind::PatientName,
        ),
        // JSON escapes do not hide it: the header's strings are searched decoded.
        (
            "escaped name in the metadata",
            metadata("Bridget @Walsh"),
            IdentifierKind::PatientName,
        ),
        (
            "accession number in tensor bytes",
            in_data(b"A20240117"),
            IdentifierKind::AccessionNumber,
        ),
        (
            "birth date in tensor bytes",
            in_data(b"\x0019610407\x00"),
            IdentifierKind::BirthDate,
        ),
    ]
}

fn planted_torch(bytes: &[u8]) -> Vec<Planted> {
    let dir = |entries: &Vec<(String, Vec<u8>)>| entries[0].0.split('/').next().unwrap().to_owned();
    vec![
        (
            "patient id in a pickled tensor name",
            edit_zip(bytes, |e| {
                let pkl = e
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("/data.pkl"))
                    .unwrap();
                plant_in_pickled_name(&mut pkl.1, b"MRN4471923");
            }),
            IdentifierKind::PatientId,
        ),
        (
            "name component in a pickled tensor name",
            edit_zip(bytes, |e| {
                let pkl = e
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("/data.pkl"))
                    .unwrap();
                plant_in_pickled_name(&mut pkl.1, b"BLOCK.");
            }),
            IdentifierKind::Other,
        ),
        (
            "full name in an extra zip entry",
            edit_zip(bytes, |e| {
                let d = dir(e);
                e.push((
                    format!("{d}/notes.txt"),
                    b"reviewed: Walsh, Bridget".to_vec(),
                ));
            }),
            IdentifierKind::PatientName,
        ),
        (
            "accession number as a zip entry name",
            edit_zip(bytes, |e| {
                let d = dir(e);
                e.push((format!("{d}/data/A20240117"), Vec::new()));
            }),
            IdentifierKind::AccessionNumber,
        ),
        (
            "UID in a tensor storage",
            edit_zip(bytes, |e| {
                let s = e
                    .iter_mut()
                    .find(|(n, d)| n.ends_with("/data/0") && d.len() >= 64)
                    .unwrap();
                s.1[8..36].copy_from_slice(b"1.2.826.0.1.3680043.8.498.77");
            }),
            IdentifierKind::Uid,
        ),
    ]
}

#[test]
fn identifiers_planted_in_corpus_models_are_refused() {
    let Some(files) = corpus() else { return };
    let ids = awkward_cohort(&files);
    let mut missed = Vec::new();
    let mut checked = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let kind = kind_of(f).unwrap();
        let bytes = std::fs::read(f).unwrap();
        let planted = match kind {
            OutputKind::Safetensors => planted_safetensors(&bytes),
            _ => planted_torch(&bytes),
        };
        for (what, bytes, want) in planted {
            checked += 1;
            let v = check_one(&ids, name, kind, &bytes);
            let found = v
                .rejections
                .iter()
                .any(|r| matches!(r, Rejection::Identifier { kind, .. } if *kind == want));
            if v.accepted || !found {
                missed.push(format!("{name}, {what}: {:?}", v.rejections));
            }
        }
    }
    assert!(checked >= 60, "{checked}");
    assert!(
        missed.is_empty(),
        "planted identifiers missed:\n{}",
        missed.join("\n")
    );
}
