//! The pydicom corpus: malformed files give typed errors (never a panic), every transfer
//! syntax either decodes with the header's shape or is reported unsupported, and native/RLE
//! decodes match pydicom's arrays bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rapha_dicom::cohort::read_header;
use rapha_dicom::pixels::{decode, Output, PixelError};
use sha2::{Digest, Sha256};

use crate::common::{corpus, pydicom_reference, python};

fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm")
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("IM"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Transfer syntaxes this build reports as unsupported (their decoders are C/C++ only).
const UNSUPPORTED_PREFIXES: [&str; 3] = [
    "1.2.840.10008.1.2.4.8",  // JPEG-LS (80, 81)
    "1.2.840.10008.1.2.4.92", // JPEG 2000 Part 2 multi-component (92, 93)
    "1.2.840.10008.1.2.4.93",
];

/// JPEG 2000 lossy: compared with pydicom's values within this absolute difference. Both sides
/// run OpenJPEG's irreversible 9/7 wavelet in floating point (C vs its Rust port), which may
/// round a sample the other way; in practice they agree exactly.
const J2K_LOSSY_TOLERANCE: f64 = 1.0;

#[test]
fn malformed_corpus_files_give_typed_errors_not_panics() {
    let Some(dir) = corpus() else { return };
    let mut ok = 0;
    let mut bad = BTreeMap::new();
    for f in dicom_files(&dir) {
        match read_header(&f) {
            Ok(_) => ok += 1,
            Err(rapha_dicom::DicomError::MalformedFile { path, reason }) => {
                assert_eq!(path, f);
                assert!(!reason.is_empty());
                bad.insert(f.file_name().unwrap().to_string_lossy().to_string(), reason);
            }
            Err(other) => panic!("{}: unexpected error kind {other}", f.display()),
        }
    }
    assert!(ok > 60, "most corpus files parse ({ok})");
    // Known-broken files are refused with a typed error.
    for name in [
        "no_meta.dcm",
        "ExplVR_BigEndNoMeta.dcm",
        "ExplVR_LitEndNoMeta.dcm",
    ] {
        assert!(
            bad.contains_key(name),
            "{name} has no file meta group and must be refused; refused: {bad:?}"
        );
    }
    // Truncated files: the header may parse (truncation hits the pixel data) but decoding must
    // be a typed error, never a panic or a short buffer.
    for name in ["MR_truncated.dcm", "rtplan_truncated.dcm"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let r = decode(&bytes, Output::Stored);
        assert!(matches!(r, Err(PixelError::Malformed(_))), "{name}: {r:?}");
    }
    // Truncating any good file anywhere is a typed error too.
    let ct = std::fs::read(dir.join("CT_small.dcm")).unwrap();
    for cut in [0, 10, 131, 132, 200, 400, 800, ct.len() / 2, ct.len() - 1] {
        assert!(decode(&ct[..cut], Output::Stored).is_err(), "cut at {cut}");
        rapha_dicom::fuzzing::record_from_part10(&ct[..cut]);
    }
}

fn sha_of(p: &rapha_dicom::pixels::Pixels) -> String {
    let mut h = Sha256::new();
    for i in 0..p.data.len() {
        h.update(p.data.get_f64(i).unwrap().to_le_bytes());
    }
    hex::encode(h.finalize())
}

#[test]
fn every_transfer_syntax_decodes_with_the_right_shape_or_is_reported_unsupported() {
    let Some(dir) = corpus() else { return };
    let mut by_ts: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut decoded = Vec::new();
    for f in dicom_files(&dir) {
        let Ok((attrs, Some(ts))) = read_header(&f) else {
            continue;
        };
        if attrs.get(rapha_dicom::attrs::tag::ROWS).is_none() {
            continue; // not an image (RT plan, SR, DICOMDIR)
        }
        let bytes = std::fs::read(&f).unwrap();
        let entry = by_ts.entry(ts.clone()).or_default();
        match decode(&bytes, Output::Stored) {
            Ok(px) => {
                entry.0 += 1;
                let rows = u32::from(attrs.u16(rapha_dicom::attrs::tag::ROWS).unwrap());
                let cols = u32::from(attrs.u16(rapha_dicom::attrs::tag::COLUMNS).unwrap());
                let frames = attrs
                    .u32(rapha_dicom::attrs::tag::NUMBER_OF_FRAMES)
                    .unwrap_or(1)
                    .max(1);
                let spp = attrs
                    .u16(rapha_dicom::attrs::tag::SAMPLES_PER_PIXEL)
                    .unwrap_or(1);
                assert_eq!(
                    (px.rows, px.columns, px.frames, px.samples_per_pixel),
                    (rows, cols, frames, spp),
                    "{}",
                    f.display()
                );
                assert_eq!(px.data.len(), px.shape().iter().product::<usize>());
                decoded.push((f.clone(), ts.clone(), px));
            }
            Err(PixelError::Unsupported(t)) => {
                entry.1 += 1;
                assert!(t.starts_with(&ts), "{t} names the transfer syntax {ts}");
                let twelve_bit_extended = t == "1.2.840.10008.1.2.4.51 with 12-bit precision";
                assert!(
                    twelve_bit_extended || UNSUPPORTED_PREFIXES.iter().any(|p| ts.starts_with(p)),
                    "{}: {ts} should decode",
                    f.display()
                );
            }
            Err(e) => {
                entry.1 += 1;
                eprintln!("not decoded: {} ({ts}): {e}", f.display());
            }
        }
    }
    eprintln!("transfer syntax -> (decoded, not decoded): {by_ts:#?}");
    for ts in [
        "1.2.840.10008.1.2",      // implicit VR LE
        "1.2.840.10008.1.2.1",    // explicit VR LE
        "1.2.840.10008.1.2.2",    // explicit VR BE
        "1.2.840.10008.1.2.5",    // RLE
        "1.2.840.10008.1.2.4.50", // JPEG baseline
        "1.2.840.10008.1.2.4.70", // JPEG lossless SV1
        "1.2.840.10008.1.2.4.90", // JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91", // JPEG 2000 lossy
    ] {
        assert!(
            by_ts.get(ts).is_some_and(|(ok, _)| *ok > 0),
            "no corpus file in {ts} decoded: {by_ts:?}"
        );
    }
    // Multi-frame decodes.
    assert!(decoded.iter().any(|(_, _, p)| p.frames > 1));

    // Bit-exact comparison with pydicom for the native and RLE files pydicom decodes alone,
    // and JPEG 2000 lossless ones it decodes with pylibjpeg-openjpeg (the colour transform of
    // YBR_RCT is undone by the decoder on both sides).
    let Some(py) = python() else { return };
    let compare: Vec<&(PathBuf, String, rapha_dicom::pixels::Pixels)> = decoded
        .iter()
        .filter(|(_, ts, p)| {
            let native_or_rle = matches!(
                ts.as_str(),
                "1.2.840.10008.1.2"
                    | "1.2.840.10008.1.2.1"
                    | "1.2.840.10008.1.2.2"
                    | "1.2.840.10008.1.2.5"
            ) && matches!(
                p.photometric_interpretation.as_str(),
                "MONOCHROME1" | "MONOCHROME2" | "RGB" | "PALETTE COLOR"
            );
            native_or_rle || ts == "1.2.840.10008.1.2.4.90"
        })
        .collect();
    let files: Vec<&PathBuf> = compare.iter().map(|(f, _, _)| f).collect();
    let (mut matched, mut j2k_matched) = (0, 0);
    for (v, (f, ts, px)) in pydicom_reference(&py, &files, false).iter().zip(&compare) {
        if v.get("error").is_some() {
            eprintln!("pydicom could not decode {}: {}", f.display(), v["error"]);
            continue;
        }
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
        assert_eq!(shape, px.shape(), "{}", f.display());
        assert_eq!(
            v["sha256"].as_str().unwrap(),
            sha_of(px),
            "{}: pixel values differ from pydicom",
            f.display()
        );
        matched += 1;
        j2k_matched += usize::from(ts == "1.2.840.10008.1.2.4.90");
    }
    assert!(matched >= 10, "compared {matched} files with pydicom");
    assert!(
        j2k_matched >= 4,
        "compared {j2k_matched} JPEG 2000 lossless files"
    );

    // JPEG 2000 lossy: within the tolerance, value by value.
    let lossy: Vec<&(PathBuf, String, rapha_dicom::pixels::Pixels)> = decoded
        .iter()
        .filter(|(_, ts, _)| ts == "1.2.840.10008.1.2.4.91")
        .collect();
    let files: Vec<&PathBuf> = lossy.iter().map(|(f, _, _)| f).collect();
    let mut lossy_matched = 0;
    for (v, (f, _, px)) in pydicom_reference(&py, &files, true).iter().zip(&lossy) {
        if v.get("error").is_some() {
            eprintln!("pydicom could not decode {}: {}", f.display(), v["error"]);
            continue;
        }
        let reference: Vec<f64> = serde_json::from_value(v["values"].clone()).unwrap();
        assert_eq!(reference.len(), px.data.len(), "{}", f.display());
        let worst = reference
            .iter()
            .enumerate()
            .map(|(i, r)| (px.data.get_f64(i).unwrap() - r).abs())
            .fold(0.0, f64::max);
        eprintln!("{}: largest difference from pydicom {worst}", f.display());
        assert!(
            worst <= J2K_LOSSY_TOLERANCE,
            "{}: differs from pydicom by {worst}",
            f.display()
        );
        lossy_matched += 1;
    }
    assert!(
        lossy_matched >= 3,
        "compared {lossy_matched} JPEG 2000 lossy files"
    );
}

#[test]
fn rescaled_output_applies_the_modality_lut() {
    let Some(dir) = corpus() else { return };
    let bytes = std::fs::read(dir.join("CT_small.dcm")).unwrap();
    let stored = decode(&bytes, Output::Stored).unwrap();
    let hu = decode(&bytes, Output::Rescaled).unwrap();
    let (attrs, _) = read_header(&dir.join("CT_small.dcm")).unwrap();
    let slope = attrs.f64(rapha_dicom::attrs::tag::RESCALE_SLOPE).unwrap();
    let icpt = attrs
        .f64(rapha_dicom::attrs::tag::RESCALE_INTERCEPT)
        .unwrap();
    assert!(matches!(
        stored.data,
        rapha_dicom::pixels::Samples::I16(_) | rapha_dicom::pixels::Samples::U16(_)
    ));
    for i in [0, 100, 4000] {
        let want = stored.data.get_f64(i).unwrap() * slope + icpt;
        assert!((hu.data.get_f64(i).unwrap() - want).abs() < 1e-3);
    }
}
