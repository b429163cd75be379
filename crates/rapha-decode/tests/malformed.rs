//! A malformed compressed stream in each syntax issue 17 added (JPEG-LS, 12-bit JPEG, JPEG
//! 2000, HTJ2K), written by the encoders `rapha-testkit cohort --transfer-syntax` uses and then
//! broken three ways: cut in half, noise after the codec's start marker, and a DICOM header that
//! names another image size than the codestream's own. Each is refused with the typed reason
//! the feed counts (`malformed-pixel-data`): never a panic, never an image of another size.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use rapha_dicom::pixels::{decode, Output, PixelError};
use rapha_testkit::cohort::{generate, transcode_cohort, CohortError, CohortSpec};
use rapha_testkit::services::services_required;

use crate::support::{first_fragment, install_worker, with_fragments};

const SYNTAXES: [&str; 8] = [
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// `path`'s object with its pixel data replaced by `frame` and, when given, its Rows.
fn rewritten(path: &std::path::Path, frame: Vec<u8>, rows: Option<u16>) -> Vec<u8> {
    let bytes = with_fragments(path, vec![frame]);
    let Some(rows) = rows else { return bytes };
    let mut obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(rows),
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

#[test]
fn a_malformed_stream_in_each_new_syntax_is_refused_as_malformed_pixel_data() {
    install_worker();
    let mut checked = Vec::new();
    for ts in SYNTAXES {
        let dir = tempfile::tempdir().unwrap();
        generate(&CohortSpec::new(2, 31, dir.path())).unwrap();
        let written = transcode_cohort(dir.path(), ts);
        if let Err(e @ CohortError::Tool { .. }) = &written {
            if !services_required() {
                eprintln!("SKIPPED {ts}: {e}");
                continue;
            }
        }
        let manifest = written.unwrap();
        // A grayscale instance of one frame (every generated modality but the RGB SC).
        let inst = manifest
            .studies
            .iter()
            .flat_map(|s| &s.instances)
            .find(|i| i.samples_per_pixel == 1 && i.bits_allocated == 16)
            .expect("a 16-bit grayscale instance");
        let path = dir.path().join(&inst.path);
        let bytes = std::fs::read(&path).unwrap();
        let good = decode(&bytes, Output::Stored).unwrap_or_else(|e| panic!("{ts}: {e}"));
        assert_eq!(good.rows, u32::from(inst.rows), "{ts}");

        let frame = first_fragment(&path);
        let marker: &[u8] = if ts.contains(".4.5") || ts.contains(".4.8") {
            &[0xFF, 0xD8]
        } else {
            &[0xFF, 0x4F, 0xFF, 0x51]
        };
        assert!(frame.starts_with(marker), "{ts}");
        let mut noise = marker.to_vec();
        noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        for (what, broken) in [
            (
                "truncated",
                rewritten(&path, frame[..frame.len() / 2].to_vec(), None),
            ),
            ("garbage", rewritten(&path, noise, None)),
            (
                "another size in the DICOM header",
                rewritten(&path, frame.clone(), Some(inst.rows / 2)),
            ),
        ] {
            match decode(&broken, Output::Stored) {
                Err(e @ PixelError::Malformed(_)) => {
                    assert_eq!(e.reason(), "malformed-pixel-data", "{ts} {what}");
                }
                other => panic!("{ts} {what}: {other:?}"),
            }
        }
        checked.push(ts);
    }
    assert!(
        checked.len() == SYNTAXES.len() || !services_required(),
        "{checked:?}"
    );
}
