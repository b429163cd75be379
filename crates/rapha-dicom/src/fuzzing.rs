//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and the proptest runs in the
//! crate's tests, so CI on stable drives exactly what the fuzzer drives.
//!
//! Each one must never panic on any input; `record_from_*` also checks **I1** on what it
//! builds (a record never carries one of the instance's raw identifiers) and panics if not,
//! which is how a fuzzer reports a finding.

use rapha_core::HmacKey;

use crate::attrs::Attrs;
use crate::config::DicomConfig;
use crate::pseudonym::Pseudonymizer;
use crate::record::{extract, Record};

/// Parses a DICOM JSON document.
pub fn dicom_json(data: &[u8]) {
    let _ = crate::json::parse_datasets(data);
}

/// Parses DICOM JSON and builds a record from every dataset, with every optional field opted
/// in, checking that no raw identifier reaches the record.
pub fn record_from_json(data: &[u8]) {
    if let Ok(sets) = crate::json::parse_datasets(data) {
        for attrs in &sets {
            check_record(attrs, None);
        }
    }
}

/// Parses a Part 10 file (header only) and builds a record, with the same check.
pub fn record_from_part10(data: &[u8]) {
    if let Ok((attrs, ts)) = crate::cohort::read_header_bytes(data) {
        check_record(&attrs, ts.as_deref());
    }
    let _ = crate::pixels::decode(data, crate::pixels::Output::Stored);
}

fn check_record(attrs: &Attrs, ts: Option<&str>) {
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes([0x5a; 32]));
    let mut config = DicomConfig::default();
    config.fields.sex = true;
    config.fields.manufacturer_model = true;
    config.fields.free_text = crate::record::OPTIONAL_TEXT_FIELDS
        .iter()
        .map(|(k, _)| (*k).to_owned())
        .collect();
    let _ = config.exclusions.check(attrs, ts);
    if let Ok(ex) = extract(attrs, ts, &pseudo, &config.fields) {
        let leaked = leaked_identifier(&ex.record, &ex.raw_identifiers);
        assert!(
            leaked.is_none(),
            "record carries a raw identifier: {leaked:?}"
        );
    }
}

/// The first raw identifier (with a letter, 6+ characters, so numbers that legitimately equal a
/// pixel spacing or a hash fragment are not reported) found in the record's non-hash fields.
pub fn leaked_identifier<'a>(record: &Record, raw: &'a [String]) -> Option<&'a str> {
    let mut v = serde_json::to_value(record).ok()?;
    if let Some(m) = v.as_object_mut() {
        for k in crate::record::HASHED_ID_FIELDS {
            m.remove(k);
        }
    }
    let text = v.to_string().to_lowercase();
    raw.iter()
        .map(String::as_str)
        .filter(|r| r.chars().count() >= 6 && r.chars().any(char::is_alphabetic))
        .find(|r| text.contains(&r.to_lowercase()))
}

/// Decodes a bare JPEG 2000 / HTJ2K codestream (the decoder behind transfer syntaxes
/// `.4.90`, `.4.91` and `.4.201`–`.4.203`) as an image of at most 2^20 samples.
pub fn jpeg2000_codestream(data: &[u8]) {
    let _ = crate::pixels::j2k::decode_codestream(data, 1 << 20);
}

/// Decodes a frame as JPEG-LS, as 12-bit JPEG and as HTJ2K, each as a 64 x 64 image of one
/// 16-bit sample, in the sandboxed worker (the decoders behind `.4.80`, `.4.81`, 12-bit `.4.51`
/// and `.4.201`–`.4.203`; the HTJ2K frame goes to the worker as it is, without the node's own
/// checks of its SIZ and coding styles, so the worker's checks are what is fuzzed); nothing
/// without an installed worker. Returns what each decode produced (its length or its
/// refusal), for the proptest driver to check.
pub fn sandboxed_frame(data: &[u8]) -> [Result<usize, crate::pixels::PixelError>; 3] {
    use rapha_decode::Codec;
    [Codec::JpegLs, Codec::Jpeg12, Codec::Htj2k].map(|codec| {
        crate::pixels::sandboxed::decode_frame(codec, (64, 64, 1), 2, data).map(|v| v.len())
    })
}

/// A WADO-RS instance response as the client reads it (the transfer-syntax negotiation's
/// answer): the first line of `data` is the response's Content-Type, the rest its body. The
/// Content-Type's boundary and type, the preamble and the first part's headers are checked and
/// the part read whole; returns its length, or the refusal. Memory stays within a small
/// multiple of the input (the reader holds back one boundary's length).
///
/// # Errors
/// What the client refuses: the Content-Type, or the multipart framing.
pub fn wado_response(data: &[u8]) -> Result<usize, String> {
    use std::io::Read as _;
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = String::from_utf8_lossy(head);
    let boundary = crate::multipart::boundary_of(content_type.trim_end_matches('\r'))?;
    let mut part = Vec::new();
    crate::multipart::FirstPart::new(body, &boundary)
        .read_to_end(&mut part)
        .map_err(|e| e.to_string())?;
    Ok(part.len())
}

/// [`sandboxed_frame`] through one job's long-lived workers (`job`, kept by the caller across
/// inputs as a job keeps them across its frames): the same answers as a worker per frame, and
/// a failed worker replaced before the next input.
pub fn sandboxed_frame_in_job(
    job: &crate::pixels::JobDecoders,
    data: &[u8],
) -> [Result<usize, crate::pixels::PixelError>; 3] {
    use rapha_decode::Codec;
    [Codec::JpegLs, Codec::Jpeg12, Codec::Htj2k].map(|codec| {
        crate::pixels::sandboxed::decode_frame_in_job(job, codec, (64, 64, 1), 2, data)
            .map(|v| v.len())
    })
}
