//! Crafted DICOM from a hostile PACS (issue 18, item 4): deep nesting in Part 10 and DICOM
//! JSON, deflate bombs. The code under attack runs in a child process with a memory cap
//! (`rapha_testkit::victim`), so a stack overflow or a huge allocation is an outcome this test
//! reports, not the end of the test binary.

use rapha_dicom::attrs::tag;
use rapha_dicom::pixels::{decode, Output};
use rapha_testkit::crafted::{self, Identity};
use rapha_testkit::victim::{isolate, isolate_measured, Ended, Limits};

/// What a decode returned, as text the parent can compare (`ok` or the error's message).
fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// The file: ~720 KB of nested sequences (20 000 levels).
const DEEP: usize = 20_000;

#[test]
fn deeply_nested_part10_is_refused_before_parsing_naming_the_depth_limit() {
    let bytes = crafted::deep_part10(&Identity::ct(1), DEEP);
    assert!(bytes.len() > 700_000, "{} bytes", bytes.len());
    let ended = isolate(
        concat!(
            module_path!(),
            "::deeply_nested_part10_is_refused_before_parsing_naming_the_depth_limit"
        ),
        Limits::default(),
        || outcome(decode(&bytes, Output::Stored)),
    );
    assert_eq!(
        ended,
        Ended::Returned(
            "DICOM object refused: sequences nested deeper than 16 levels (refused before parsing)"
                .into()
        )
    );
}

#[test]
fn deeply_nested_part10_header_read_is_refused_naming_the_depth_limit() {
    // The cohort-from-files path (`cohort preview --dicom-dir`) reads headers only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.dcm");
    std::fs::write(&path, crafted::deep_part10(&Identity::ct(2), DEEP)).unwrap();
    let ended = isolate(
        concat!(
            module_path!(),
            "::deeply_nested_part10_header_read_is_refused_naming_the_depth_limit"
        ),
        Limits::default(),
        || outcome(rapha_dicom::cohort::read_header(&path)),
    );
    let text = ended.returned();
    assert!(
        text.ends_with("sequences nested deeper than 16 levels (refused before parsing)"),
        "{text}"
    );
}

#[test]
fn nesting_up_to_the_limit_is_read_and_one_level_more_is_refused() {
    let id = Identity::ct(3);
    let ok = crafted::deep_part10(&id, 16);
    let px = decode(&ok, Output::Stored).unwrap();
    assert_eq!(px.shape(), [1, 4, 4, 1]);
    let (attrs, _) = rapha_dicom::cohort::read_header_bytes(&ok).unwrap();
    assert_eq!(attrs.text(tag::PATIENT_ID), Some(id.patient_id.as_str()));
    let deep = crafted::deep_part10(&id, 17);
    assert_eq!(
        decode(&deep, Output::Stored).unwrap_err().to_string(),
        "DICOM object refused: sequences nested deeper than 16 levels (refused before parsing)"
    );
}

#[test]
fn deflated_dataset_claiming_1_5_gb_is_refused_without_allocating_it() {
    // ~500 bytes: a deflated data set whose pixel data claims 1.5 GB it does not hold. The
    // child may use 2 GiB, so an allocation of the claimed size shows in its peak memory.
    let id = Identity::ct(4);
    let bytes = crafted::deflated(&id, &crafted::huge_length_claim(&id, 0x6000_0000));
    assert!(bytes.len() < 600, "{} bytes", bytes.len());
    let (ended, peak) = isolate_measured(
        concat!(
            module_path!(),
            "::deflated_dataset_claiming_1_5_gb_is_refused_without_allocating_it"
        ),
        Limits {
            memory: 2 << 30,
            ..Limits::default()
        },
        || outcome(decode(&bytes, Output::Stored)),
    );
    let peak = peak.unwrap_or(u64::MAX);
    eprintln!("{ended:?}, peak RSS {} MiB", peak >> 20);
    assert_eq!(
        ended,
        Ended::Returned(
            "malformed DICOM pixel data: element (7FE0,0010) length 1610612736 runs past the end"
                .into()
        )
    );
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn deflate_bomb_is_refused_at_the_inflation_cap() {
    // ~1 MB that inflates to 1 GiB of honest zero bytes: past the 256 MiB cap.
    let id = Identity::ct(5);
    let bytes = crafted::deflate_bomb(&id, 1 << 30);
    assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
    let (ended, peak) = isolate_measured(
        concat!(
            module_path!(),
            "::deflate_bomb_is_refused_at_the_inflation_cap"
        ),
        Limits {
            memory: 2 << 30,
            ..Limits::default()
        },
        || outcome(decode(&bytes, Output::Stored)),
    );
    eprintln!("{ended:?}, peak RSS {} MiB", peak.unwrap_or(0) >> 20);
    assert_eq!(
        ended,
        Ended::Returned(
            "DICOM object refused: the deflated data set inflates past 268435456 bytes (refused)"
                .into()
        )
    );
    let peak = peak.unwrap_or(u64::MAX);
    eprintln!("peak RSS of the refusing process: {} MiB", peak >> 20);
    assert!(peak < 400 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn honest_deflated_instance_still_decodes_and_reads_its_header() {
    let id = Identity::ct(6);
    let plain = crafted::plain_part10(&id);
    // The data set of the plain file (after the 132-byte prefix and its meta group).
    let meta_len = u32::from_le_bytes(plain[140..144].try_into().unwrap()) as usize;
    let dataset = &plain[144 + meta_len..];
    let deflated = crafted::deflated(&id, dataset);
    assert_eq!(
        decode(&deflated, Output::Stored).unwrap(),
        decode(&plain, Output::Stored).unwrap()
    );
    let (attrs, ts) = rapha_dicom::cohort::read_header_bytes(&deflated).unwrap();
    assert_eq!(ts.as_deref(), Some(crafted::DEFLATED));
    assert_eq!(
        attrs.text(tag::STUDY_INSTANCE_UID),
        Some(id.study_uid.as_str())
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.dcm"), &deflated).unwrap();
    let (attrs, ts) = rapha_dicom::cohort::read_header(&dir.path().join("d.dcm")).unwrap();
    assert_eq!(ts.as_deref(), Some(crafted::DEFLATED));
    assert_eq!(attrs.text(tag::SOP_INSTANCE_UID), Some(id.sop_uid.as_str()));
}

#[test]
fn deeply_nested_dicom_json_is_refused_naming_the_depth_limit() {
    let doc = crafted::deep_json(&Identity::ct(7), DEEP);
    let ended = isolate(
        concat!(
            module_path!(),
            "::deeply_nested_dicom_json_is_refused_naming_the_depth_limit"
        ),
        Limits::default(),
        || outcome(rapha_dicom::json::parse_datasets(&doc)),
    );
    assert_eq!(
        ended,
        Ended::Returned(
            "at document: sequences nested deeper than 16 levels (refused before parsing)".into()
        )
    );
    // Within the limit the same document parses.
    let ok = crafted::deep_json(&Identity::ct(7), 16);
    assert_eq!(rapha_dicom::json::parse_datasets(&ok).unwrap().len(), 1);
}

#[test]
fn rle_file_claiming_a_huge_image_is_refused_before_allocating_it() {
    // ~600 bytes asking for 46 000 x 46 000 16-bit pixels (4 GiB).
    let bytes = crafted::rle_claiming(&Identity::ct(8), 46_000, 46_000);
    let (ended, peak) = isolate_measured(
        concat!(
            module_path!(),
            "::rle_file_claiming_a_huge_image_is_refused_before_allocating_it"
        ),
        Limits {
            memory: 1 << 30,
            ..Limits::default()
        },
        || outcome(decode(&bytes, Output::Stored)),
    );
    eprintln!("{ended:?}, peak RSS {} MiB", peak.unwrap_or(0) >> 20);
    assert_eq!(
        ended,
        Ended::Returned(
            "decoded pixel data would take 4232000000 bytes, more than the limit of 536870912"
                .into()
        )
    );
    // Within the output limit, a frame far too short to expand to its size is refused before
    // the output is allocated.
    let short = crafted::rle_claiming(&Identity::ct(8), 8_000, 8_000);
    assert_eq!(
        decode(&short, Output::Stored).unwrap_err().to_string(),
        "malformed DICOM pixel data: RLE frame too short for the image the header describes"
    );
}

#[test]
fn jpeg_frame_claiming_more_pixels_than_the_header_is_refused_before_decoding() {
    let Some(dir) = crate::common::corpus() else {
        return;
    };
    let mut bytes = std::fs::read(dir.join("SC_rgb_jpeg_dcmtk.dcm")).unwrap();
    // The baseline frame header (SOF0) of the embedded JPEG: claim 60 000 x 60 000.
    let pixel_data = bytes
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    let sof = pixel_data
        + bytes[pixel_data..]
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let (ended, peak) = isolate_measured(
        concat!(
            module_path!(),
            "::jpeg_frame_claiming_more_pixels_than_the_header_is_refused_before_decoding"
        ),
        Limits {
            memory: 1 << 30,
            ..Limits::default()
        },
        || outcome(decode(&bytes, Output::Stored)),
    );
    eprintln!("{ended:?}, peak RSS {} MiB", peak.unwrap_or(0) >> 20);
    assert_eq!(
        ended,
        Ended::Returned(
            "malformed DICOM pixel data: a JPEG image in the pixel data claims more rows or \
             columns than the DICOM header"
                .into()
        )
    );
}
