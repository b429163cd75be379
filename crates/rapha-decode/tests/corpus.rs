//! Every JPEG-LS and 12-bit JPEG file of pydicom's corpus decodes through the sandboxed worker,
//! and matches pydicom with pylibjpeg-libjpeg (the reference decoder) wherever it decodes the
//! file: JPEG-LS lossless and near-lossless bit for bit (the decoder undoes the same NEAR
//! quantization the reference does), 12-bit JPEG within one unit (two implementations of the
//! inverse DCT, each within the accuracy JPEG requires of it, may round a sample apart).

use std::path::PathBuf;

use rapha_dicom::cohort::read_header;
use rapha_dicom::pixels::{decode, Output, Pixels};
use sha2::{Digest, Sha256};

use crate::dicom_common::{corpus, pydicom_reference, python};
use crate::support::{first_fragment, install_worker, with_frames};

/// 12-bit JPEG: largest difference from the reference decoder, per sample.
const JPEG12_TOLERANCE: f64 = 1.0;

fn sha_of(p: &Pixels) -> String {
    let mut h = Sha256::new();
    for i in 0..p.data.len() {
        h.update(p.data.get_f64(i).unwrap().to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The corpus files in JPEG-LS or 12-bit JPEG, with their transfer syntax.
fn sandboxed_files() -> Vec<(PathBuf, String)> {
    let Some(dir) = corpus() else { return vec![] };
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    entries.sort();
    for f in entries {
        let Ok((attrs, Some(ts))) = read_header(&f) else {
            continue;
        };
        let bits = attrs
            .u16(rapha_dicom::attrs::tag::BITS_ALLOCATED)
            .unwrap_or(0);
        if ts.starts_with("1.2.840.10008.1.2.4.8") || (ts == "1.2.840.10008.1.2.4.51" && bits > 8) {
            out.push((f, ts));
        }
    }
    out
}

#[test]
fn every_jpeg_ls_and_12_bit_jpeg_file_matches_the_reference_decoder() {
    let files = sandboxed_files();
    if files.is_empty() {
        return;
    }
    install_worker();
    let decoded: Vec<(PathBuf, String, Pixels)> = files
        .into_iter()
        .map(|(f, ts)| {
            let px = decode(&std::fs::read(&f).unwrap(), Output::Stored)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(px.data.len(), px.shape().iter().product::<usize>());
            (f, ts, px)
        })
        .collect();
    let jpeg_ls = decoded
        .iter()
        .filter(|(_, ts, _)| ts != "1.2.840.10008.1.2.4.51")
        .count();
    assert!(jpeg_ls >= 5, "{jpeg_ls} JPEG-LS files decoded");
    let Some(py) = python() else { return };
    let paths: Vec<&PathBuf> = decoded.iter().map(|(f, _, _)| f).collect();
    let (mut exact, mut within) = (0, 0);
    for (v, (f, ts, px)) in pydicom_reference(&py, &paths, true).iter().zip(&decoded) {
        if let Some(e) = v.get("error") {
            eprintln!("the reference decoder refuses {}: {e}", f.display());
            continue;
        }
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
        assert_eq!(shape, px.shape(), "{}", f.display());
        if ts == "1.2.840.10008.1.2.4.51" {
            let reference: Vec<f64> = serde_json::from_value(v["values"].clone()).unwrap();
            assert_eq!(reference.len(), px.data.len(), "{}", f.display());
            let (mut worst, mut differ) = (0.0f64, 0usize);
            for (i, r) in reference.iter().enumerate() {
                let d = (px.data.get_f64(i).unwrap() - r).abs();
                worst = worst.max(d);
                differ += usize::from(d > 0.0);
            }
            eprintln!(
                "{}: {differ} of {} samples differ from the reference, by at most {worst}",
                f.display(),
                reference.len()
            );
            assert!(worst <= JPEG12_TOLERANCE, "{}: {worst}", f.display());
            within += 1;
        } else {
            assert_eq!(
                v["sha256"].as_str().unwrap(),
                sha_of(px),
                "{}: samples differ from the reference decoder",
                f.display()
            );
            exact += 1;
        }
    }
    assert!(exact >= 5, "{exact} JPEG-LS files compared bit for bit");
    assert!(within >= 1, "{within} 12-bit JPEG files compared");
}

#[test]
fn each_frame_of_a_multi_frame_object_is_decoded_in_its_own_worker() {
    let Some(dir) = crate::dicom_common::corpus() else {
        return;
    };
    install_worker();
    let path = dir.join("MR_small_jpeg_ls_lossless.dcm");
    let one = decode(&std::fs::read(&path).unwrap(), Output::Stored).unwrap();
    let frame = first_fragment(&path);
    // Three frames, one fragment each; then the third split over two fragments, which the
    // split joins again because the second part does not begin a codestream.
    // (At an even offset: fragments have even lengths, an odd one would be padded.)
    let (head, tail) = frame.split_at(frame.len() / 4 * 2);
    for fragments in [
        vec![frame.clone(), frame.clone(), frame.clone()],
        vec![frame.clone(), frame.clone(), head.to_vec(), tail.to_vec()],
    ] {
        let px = decode(&with_frames(&path, fragments, Some(3)), Output::Stored).unwrap();
        assert_eq!(px.shape(), [3, 64, 64, 1]);
        for f in 0..3 {
            for i in 0..one.data.len() {
                assert_eq!(px.data.get_f64(f * one.data.len() + i), one.data.get_f64(i));
            }
        }
    }
    // Two codestreams for three frames: refused, not padded.
    let r = decode(
        &with_frames(&path, vec![frame.clone(), frame], Some(3)),
        Output::Stored,
    );
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("2 JPEG-LS codestreams in the pixel data for 3 frames")),
        "{r:?}"
    );
}
