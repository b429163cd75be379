//! Hostile DICOM, built byte by byte: what a compromised or broken PACS could serve the node.
//!
//! Each builder writes a complete Part 10 file (preamble, `DICM`, file meta group) or a DICOM
//! JSON document around one attack, with the identity of an ordinary CT image so it passes
//! every check that comes before the one under attack:
//!
//! - [`deep_part10`]: sequences nested `depth` levels (undefined lengths, 36 bytes a level);
//!   about 20 000 levels (720 KB) overflow an 8 MiB main-thread stack in a recursive parser;
//! - [`deep_json`]: the same nesting as DICOM JSON (PS3.18 Annex F);
//! - [`deflated`]: a deflated-transfer-syntax file (1.2.840.10008.1.2.1.99) whose compressed
//!   data set is any bytes, e.g. [`huge_length_claim`] (an element claiming 1.5 GB that the
//!   file does not hold, ~350 bytes once deflated) or [`zero_fill`] (an honest element of
//!   N zero bytes; [`deflate_bomb`] builds it deflated without holding the N bytes: a bomb of
//!   ~N/1000 bytes).
//!
//! The identity is [`Identity`]: tests that swap an instance under the same SOP Instance UID
//! build the replacement from the same values with one field changed.

use std::io::Write;

use dicom_core::Tag;
use dicom_dictionary_std::tags;

/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// RLE Lossless.
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// Deflated Explicit VR Little Endian.
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
/// CT Image Storage.
pub const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Secondary Capture Image Storage (excluded by default: burned-in text is routine).
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Bytes one nesting level adds to [`deep_part10`].
pub const PART10_BYTES_PER_LEVEL: usize = 36;
/// The element the nesting is built from: (0040,A730) ContentSequence.
const NEST_TAG: Tag = tags::CONTENT_SEQUENCE;
const IMPLEMENTATION_CLASS_UID: &str = "2.25.245593941358163263460126094128453957712";

/// Who and what an instance says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class: String,
    pub modality: String,
    pub accession: String,
    pub study_date: String,
    /// BurnedInAnnotation: `Some("YES")`, `Some("NO")` or absent.
    pub burned_in: Option<String>,
}

impl Identity {
    /// An ordinary CT image of patient `CRAFT-<n>` with UIDs under a fixed test root.
    pub fn ct(n: u32) -> Identity {
        Identity {
            patient_id: format!("CRAFT-{n:04}"),
            patient_name: format!("CRAFTED^PATIENT{n}"),
            study_uid: format!("1.2.826.0.1.3680043.8.498.77.{n}"),
            series_uid: format!("1.2.826.0.1.3680043.8.498.77.{n}.1"),
            sop_uid: format!("1.2.826.0.1.3680043.8.498.77.{n}.1.1"),
            sop_class: CT_IMAGE.to_owned(),
            modality: "CT".to_owned(),
            accession: format!("CRAFTACC{n:04}"),
            study_date: "20240105".to_owned(),
            burned_in: Some("NO".to_owned()),
        }
    }
}

/// Little-endian explicit-VR element with a 2-byte length.
fn short(out: &mut Vec<u8>, tag: Tag, vr: &[u8; 2], value: &[u8]) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
    }
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(vr);
    // Test values are short: a value over 64 KiB is a bug in the caller.
    let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&v);
}

/// Little-endian explicit-VR element with a 4-byte length (OB, OW, SQ, UN, UT…).
fn long_header(out: &mut Vec<u8>, tag: Tag, vr: &[u8; 2], len: u32) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
}

fn us(out: &mut Vec<u8>, tag: Tag, v: u16) {
    short(out, tag, b"US", &v.to_le_bytes());
}

/// The file preamble, `DICM` and the file meta group for `ts`.
fn preamble_and_meta(id: &Identity, ts: &str) -> Vec<u8> {
    let mut meta = Vec::new();
    long_header(&mut meta, tags::FILE_META_INFORMATION_VERSION, b"OB", 2);
    meta.extend_from_slice(&[0, 1]);
    short(
        &mut meta,
        tags::MEDIA_STORAGE_SOP_CLASS_UID,
        b"UI",
        id.sop_class.as_bytes(),
    );
    short(
        &mut meta,
        tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
        b"UI",
        id.sop_uid.as_bytes(),
    );
    short(&mut meta, tags::TRANSFER_SYNTAX_UID, b"UI", ts.as_bytes());
    short(
        &mut meta,
        tags::IMPLEMENTATION_CLASS_UID,
        b"UI",
        IMPLEMENTATION_CLASS_UID.as_bytes(),
    );
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    // Test meta groups are a few hundred bytes.
    let group_len = u32::try_from(meta.len()).unwrap_or(u32::MAX);
    short(
        &mut out,
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        b"UL",
        &group_len.to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    out
}

/// The identity and image-pixel elements of a 4x4 16-bit CT (explicit VR LE), in tag order up
/// to (0028,1053); callers append later tags and the pixel data.
fn header_elements(id: &Identity) -> Vec<u8> {
    let mut d = Vec::new();
    short(&mut d, tags::SOP_CLASS_UID, b"UI", id.sop_class.as_bytes());
    short(&mut d, tags::SOP_INSTANCE_UID, b"UI", id.sop_uid.as_bytes());
    short(&mut d, tags::STUDY_DATE, b"DA", id.study_date.as_bytes());
    short(
        &mut d,
        tags::ACCESSION_NUMBER,
        b"SH",
        id.accession.as_bytes(),
    );
    short(&mut d, tags::MODALITY, b"CS", id.modality.as_bytes());
    short(
        &mut d,
        tags::PATIENT_NAME,
        b"PN",
        id.patient_name.as_bytes(),
    );
    short(&mut d, tags::PATIENT_ID, b"LO", id.patient_id.as_bytes());
    short(
        &mut d,
        tags::STUDY_INSTANCE_UID,
        b"UI",
        id.study_uid.as_bytes(),
    );
    short(
        &mut d,
        tags::SERIES_INSTANCE_UID,
        b"UI",
        id.series_uid.as_bytes(),
    );
    us(&mut d, tags::SAMPLES_PER_PIXEL, 1);
    short(
        &mut d,
        tags::PHOTOMETRIC_INTERPRETATION,
        b"CS",
        b"MONOCHROME2",
    );
    us(&mut d, tags::ROWS, 4);
    us(&mut d, tags::COLUMNS, 4);
    us(&mut d, tags::BITS_ALLOCATED, 16);
    us(&mut d, tags::BITS_STORED, 12);
    us(&mut d, tags::HIGH_BIT, 11);
    us(&mut d, tags::PIXEL_REPRESENTATION, 0);
    if let Some(b) = &id.burned_in {
        short(&mut d, tags::BURNED_IN_ANNOTATION, b"CS", b.as_bytes());
    }
    d
}

/// 4x4 16-bit pixel data (values 0, 100, … 1500).
fn pixel_data(d: &mut Vec<u8>) {
    long_header(d, tags::PIXEL_DATA, b"OW", 32);
    for v in 0..16u16 {
        d.extend_from_slice(&(v * 100).to_le_bytes());
    }
}

/// An RLE Lossless (1.2.840.10008.1.2.5) instance whose header claims `rows` x `columns`
/// 16-bit pixels and whose one fragment is a valid RLE header with two segments of a few
/// bytes: a small file that asks the decoder for `2 * rows * columns` bytes.
pub fn rle_claiming(id: &Identity, rows: u16, columns: u16) -> Vec<u8> {
    let mut d = header_elements(id);
    // Rows (0028,0010) and Columns (0028,0011) are US elements: value after an 8-byte header.
    for (elem, value) in [(0x10u8, rows), (0x11, columns)] {
        let tag = [0x28, 0x00, elem, 0x00, b'U', b'S'];
        if let Some(at) = d.windows(6).position(|w| w == tag) {
            d[at + 8..at + 10].copy_from_slice(&value.to_le_bytes());
        }
    }
    long_header(&mut d, tags::PIXEL_DATA, b"OB", u32::MAX);
    // Empty basic offset table.
    d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    let mut frame = vec![0u8; 64];
    frame[..4].copy_from_slice(&2u32.to_le_bytes());
    frame[4..8].copy_from_slice(&64u32.to_le_bytes());
    frame[8..12].copy_from_slice(&66u32.to_le_bytes());
    // Each segment: one replicate run of 128 zero bytes.
    frame.extend_from_slice(&[0x81, 0x00, 0x81, 0x00]);
    d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    // A fragment is a few dozen bytes.
    d.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    d.extend_from_slice(&frame);
    d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let mut out = preamble_and_meta(id, RLE_LOSSLESS);
    out.extend_from_slice(&d);
    out
}

/// A 4x4 16-bit CT instance of this identity in the encapsulated transfer syntax `ts`, its
/// pixel data the one fragment `frame` (a codestream, or anything a test wants the decoder
/// to meet).
pub fn encapsulated_part10(id: &Identity, ts: &str, frame: &[u8]) -> Vec<u8> {
    let mut d = header_elements(id);
    long_header(&mut d, tags::PIXEL_DATA, b"OB", u32::MAX);
    d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    let mut fragment = frame.to_vec();
    if fragment.len() % 2 == 1 {
        fragment.push(0);
    }
    d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    // Test fragments are a few hundred bytes.
    d.extend_from_slice(
        &u32::try_from(fragment.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    d.extend_from_slice(&fragment);
    d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let mut out = preamble_and_meta(id, ts);
    out.extend_from_slice(&d);
    out
}

/// An ordinary, valid 4x4 CT instance (explicit VR LE) with this identity.
pub fn plain_part10(id: &Identity) -> Vec<u8> {
    let mut out = preamble_and_meta(id, EXPLICIT_LE);
    out.extend_from_slice(&header_elements(id));
    pixel_data(&mut out);
    out
}

/// The data set bytes of [`deep_part10`] (no preamble or meta group).
fn deep_dataset(id: &Identity, depth: usize) -> Vec<u8> {
    let mut d = header_elements(id);
    d.reserve(depth * PART10_BYTES_PER_LEVEL + 64);
    for _ in 0..depth {
        long_header(&mut d, NEST_TAG, b"SQ", u32::MAX);
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        d.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    pixel_data(&mut d);
    d
}

/// A valid CT instance whose header holds a ContentSequence nested `depth` levels (each level
/// one item, undefined lengths), before the pixel data. Structurally valid DICOM: every
/// length is right and every sequence and item is closed.
pub fn deep_part10(id: &Identity, depth: usize) -> Vec<u8> {
    let mut out = preamble_and_meta(id, EXPLICIT_LE);
    out.extend_from_slice(&deep_dataset(id, depth));
    out
}

/// A DICOM JSON document (an array of one dataset, as QIDO-RS and WADO-RS metadata answer)
/// with this identity and a ContentSequence nested `depth` levels.
pub fn deep_json(id: &Identity, depth: usize) -> Vec<u8> {
    let key = |t: Tag| format!("{:04X}{:04X}", t.0, t.1);
    let text = |v: &str, vr: &str| format!(r#"{{"vr":"{vr}","Value":["{v}"]}}"#);
    let mut s = String::with_capacity(depth * 40 + 1024);
    s.push_str("[{");
    for (tag, vr, v) in [
        (tags::SOP_CLASS_UID, "UI", id.sop_class.as_str()),
        (tags::SOP_INSTANCE_UID, "UI", &id.sop_uid),
        (tags::STUDY_DATE, "DA", &id.study_date),
        (tags::ACCESSION_NUMBER, "SH", &id.accession),
        (tags::MODALITY, "CS", &id.modality),
        (tags::PATIENT_ID, "LO", &id.patient_id),
        (tags::STUDY_INSTANCE_UID, "UI", &id.study_uid),
        (tags::SERIES_INSTANCE_UID, "UI", &id.series_uid),
    ] {
        s.push_str(&format!("\"{}\":{},", key(tag), text(v, vr)));
    }
    for t in [tags::ROWS, tags::COLUMNS] {
        s.push_str(&format!(r#""{}":{{"vr":"US","Value":[4]}},"#, key(t)));
    }
    let open = format!(r#""{}":{{"vr":"SQ","Value":[{{"#, key(NEST_TAG));
    for _ in 0..depth {
        s.push_str(&open);
    }
    s.push_str(&format!(
        r#""{}":{{"vr":"SH","Value":["LEAF"]}}"#,
        key(tags::CODE_VALUE)
    ));
    for _ in 0..depth {
        s.push_str("}]}");
    }
    s.push_str("}]");
    s.into_bytes()
}

/// A data set (explicit VR LE) with this identity followed by an OB element that claims
/// `claimed` bytes and holds none: the file ends right after its header.
pub fn huge_length_claim(id: &Identity, claimed: u32) -> Vec<u8> {
    let mut d = header_elements(id);
    long_header(&mut d, tags::PIXEL_DATA, b"OB", claimed);
    d
}

/// A data set (explicit VR LE) with this identity whose pixel data is `bytes` zero bytes, all
/// honestly present (Rows and Columns stay 4x4: the element is just far too long).
pub fn zero_fill(id: &Identity, bytes: u32) -> Vec<u8> {
    let mut d = header_elements(id);
    long_header(&mut d, tags::PIXEL_DATA, b"OB", bytes);
    d.resize(d.len() + bytes as usize, 0);
    d
}

/// A Part 10 file in the Deflated Explicit VR Little Endian transfer syntax whose data set is
/// `dataset` (raw DEFLATE, RFC 1951, as PS3.5 A.5 specifies), compressed as hard as possible.
pub fn deflated(id: &Identity, dataset: &[u8]) -> Vec<u8> {
    let mut out = preamble_and_meta(id, DEFLATED);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(dataset);
    out.extend_from_slice(&z.finish().unwrap_or_default());
    out
}

/// [`deflated`] of [`zero_fill`], compressed as it is generated: the `bytes` zero bytes are
/// never held in memory (a 1 GiB bomb costs the generator a few MiB).
pub fn deflate_bomb(id: &Identity, bytes: u32) -> Vec<u8> {
    let mut out = preamble_and_meta(id, DEFLATED);
    let mut head = header_elements(id);
    long_header(&mut head, tags::PIXEL_DATA, b"OB", bytes);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(&head);
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes as usize;
    while left > 0 {
        let n = left.min(zeros.len());
        let _ = z.write_all(&zeros[..n]);
        left -= n;
    }
    out.extend_from_slice(&z.finish().unwrap_or_default());
    out
}

/// A Part 10 file of this identity whose data set is `dataset`, in the deflated transfer
/// syntax when `deflate` is set and explicit VR little endian otherwise.
pub fn with_dataset(id: &Identity, dataset: &[u8], deflate: bool) -> Vec<u8> {
    if deflate {
        return deflated(id, dataset);
    }
    let mut out = preamble_and_meta(id, EXPLICIT_LE);
    out.extend_from_slice(dataset);
    out
}

/// The data set of [`deep_part10`], for wrapping with [`deflated`].
pub fn deep_dataset_bytes(id: &Identity, depth: usize) -> Vec<u8> {
    deep_dataset(id, depth)
}
