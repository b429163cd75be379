//! JPEG 2000 and HTJ2K: HTJ2K files made with Debian's `ojph_compress` (OpenJPH, an encoder
//! independent of the decoder) decode to exactly the pixels that went in and to what pydicom's
//! pylibjpeg-openjpeg plugin decodes; hostile codestreams are refused with a typed error
//! before the decoder sizes anything from them, and never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use proptest::prelude::*;
use rapha_dicom::pixels::{decode, read_j2k_siz, Output, PixelError, Samples, MAX_J2K_TILES};

use crate::common::{pydicom_reference, python};

const HTJ2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.201";
const HTJ2K_RPCL: &str = "1.2.840.10008.1.2.4.202";
const HTJ2K_LOSSY: &str = "1.2.840.10008.1.2.4.203";
const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// `ojph_compress`, or `None` (loudly) when it is not installed and services are not required.
fn ojph_compress() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("ojph_compress"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("RAPHA_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "ojph_compress missing (Debian openjph-tools; scripts/lib.sh install_all)"
        );
        eprintln!("SKIPPED: ojph_compress (Debian openjph-tools) not installed");
    }
    found
}

/// A test image: a gradient with deterministic noise, every value within `bits` (signed
/// around zero when `signed`).
fn image(rows: usize, cols: usize, spp: usize, bits: u32, signed: bool) -> Vec<i32> {
    let mut state = 0x2545_f491_u32;
    let span = 1i64 << bits;
    (0..rows * cols * spp)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let (p, s) = (i / spp, i % spp);
            let (r, c) = (p / cols, p % cols);
            let smooth =
                (r * 7 + c * 3 + s * 50) as i64 * span / (rows * 7 + cols * 3 + 150) as i64;
            let v = (smooth + i64::from(state % 61) - 30).clamp(0, span - 1);
            (if signed { v - span / 2 } else { v }) as i32
        })
        .collect()
}

/// Encodes `px` (rows × cols × spp, interleaved) with `ojph_compress` into a bare codestream.
fn ojph(
    tool: &Path,
    dir: &Path,
    px: &[i32],
    (rows, cols, spp): (usize, usize, usize),
    bits: u32,
    signed: bool,
    extra: &[&str],
) -> Vec<u8> {
    let out = dir.join("frame.j2c");
    let mut cmd = Command::new(tool);
    if spp == 3 {
        // 8-bit RGB through a binary PPM (the colour transform applies to it).
        let input = dir.join("in.ppm");
        let mut data = format!("P6\n{cols} {rows}\n255\n").into_bytes();
        data.extend(px.iter().map(|v| *v as u8));
        std::fs::write(&input, data).unwrap();
        cmd.arg("-i").arg(&input);
    } else {
        // One component of raw samples: a byte each up to 8 bits, else 16-bit little endian.
        let input = dir.join("in.yuv");
        let data: Vec<u8> = if bits <= 8 {
            px.iter().map(|v| *v as u8).collect()
        } else {
            px.iter().flat_map(|v| (*v as i16).to_le_bytes()).collect()
        };
        std::fs::write(&input, data).unwrap();
        cmd.arg("-i").arg(&input).args([
            "-dims",
            &format!("{{{cols},{rows}}}"),
            "-num_comps",
            "1",
            "-signed",
            if signed { "true" } else { "false" },
            "-bit_depth",
            &bits.to_string(),
            "-downsamp",
            "{1,1}",
        ]);
    }
    let status = cmd.arg("-o").arg(&out).args(extra).output().unwrap();
    assert!(
        status.status.success(),
        "ojph_compress: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read(&out).unwrap()
}

/// A Part 10 secondary-capture-free CT/MR-like object with the given encapsulated frames.
#[allow(clippy::too_many_arguments)]
fn write_encapsulated(
    path: &Path,
    ts: &str,
    frames: Vec<Vec<u8>>,
    (rows, cols, spp): (u16, u16, u16),
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    photometric: &str,
) {
    let us = |v: u16| PrimitiveValue::from(v);
    let mut o = InMemDicomObject::new_empty();
    let sop_class = "1.2.840.10008.5.1.4.1.1.4";
    let sop = "1.2.826.0.1.3680043.8.498.77";
    o.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(sop_class),
    ));
    o.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop),
    ));
    o.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        PrimitiveValue::from("MR"),
    ));
    o.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(spp)));
    o.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(photometric),
    ));
    if spp == 3 {
        o.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, us(0)));
    }
    if frames.len() > 1 {
        o.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from(frames.len().to_string()),
        ));
    }
    o.put(DataElement::new(tags::ROWS, VR::US, us(rows)));
    o.put(DataElement::new(tags::COLUMNS, VR::US, us(cols)));
    o.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        us(bits_allocated),
    ));
    o.put(DataElement::new(tags::BITS_STORED, VR::US, us(bits_stored)));
    o.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        us(bits_stored - 1),
    ));
    o.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        us(u16::from(signed)),
    ));
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(vec![], frames)),
    ));
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

fn as_i64(s: &Samples) -> Vec<i64> {
    (0..s.len()).map(|i| s.get_f64(i).unwrap() as i64).collect()
}

/// pydicom's values for `files` (with the pylibjpeg plugins), in order.
fn pydicom_values(py: &Path, files: &[PathBuf]) -> Vec<Vec<f64>> {
    pydicom_reference(py, files, true)
        .into_iter()
        .map(|v| {
            assert!(v.get("error").is_none(), "pydicom could not decode: {v}");
            serde_json::from_value(v["values"].clone()).unwrap()
        })
        .collect()
}

struct Case {
    name: &'static str,
    ts: &'static str,
    shape: (usize, usize, usize),
    frames: usize,
    bits: u32,
    signed: bool,
    ojph_args: &'static [&'static str],
}

const CASES: [Case; 5] = [
    Case {
        name: "ct_12bit_unsigned",
        ts: HTJ2K_LOSSLESS,
        shape: (96, 128, 1),
        frames: 1,
        bits: 12,
        signed: false,
        ojph_args: &["-reversible", "true", "-prog_order", "LRCP"],
    },
    // Signed samples are covered by pydicom's JPEG 2000 files: OpenJPH 0.9 reads signed raw
    // input as unsigned (its own decoder gives the clipped values back too).
    Case {
        name: "mr_16bit_two_frames",
        ts: HTJ2K_LOSSLESS,
        shape: (64, 80, 1),
        frames: 2,
        bits: 16,
        signed: false,
        ojph_args: &["-reversible", "true", "-prog_order", "LRCP"],
    },
    Case {
        name: "cr_12bit_rpcl_tiled",
        ts: HTJ2K_RPCL,
        shape: (130, 150, 1),
        frames: 1,
        bits: 12,
        signed: false,
        ojph_args: &["-reversible", "true", "-tile_size", "{64,64}"],
    },
    Case {
        name: "rgb_8bit_colour_transform",
        ts: HTJ2K_LOSSLESS,
        shape: (40, 50, 3),
        frames: 1,
        bits: 8,
        signed: false,
        ojph_args: &["-reversible", "true", "-prog_order", "LRCP"],
    },
    Case {
        name: "ct_12bit_lossy",
        ts: HTJ2K_LOSSY,
        shape: (96, 128, 1),
        frames: 1,
        bits: 12,
        signed: false,
        ojph_args: &["-qstep", "0.002"],
    },
];

#[test]
fn htj2k_made_by_openjph_decodes_exactly_and_as_pydicom_does() {
    let Some(tool) = ojph_compress() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut ours = Vec::new();
    for case in &CASES {
        let (rows, cols, spp) = case.shape;
        let mut source = Vec::new();
        let mut frames = Vec::new();
        for f in 0..case.frames {
            let mut px = image(rows, cols, spp, case.bits, case.signed);
            px.rotate_left(f * 17);
            frames.push(ojph(
                &tool,
                dir.path(),
                &px,
                case.shape,
                case.bits,
                case.signed,
                case.ojph_args,
            ));
            source.extend(px.iter().map(|v| i64::from(*v)));
        }
        let path = dir.path().join(format!("{}.dcm", case.name));
        let ba = if case.bits <= 8 { 8 } else { 16 };
        let photometric = match (spp, case.ts) {
            (3, _) => "YBR_RCT",
            _ => "MONOCHROME2",
        };
        write_encapsulated(
            &path,
            case.ts,
            frames,
            (rows as u16, cols as u16, spp as u16),
            ba,
            case.bits as u16,
            case.signed,
            photometric,
        );
        let px = decode(&std::fs::read(&path).unwrap(), Output::Stored)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(px.shape(), [case.frames, rows, cols, spp], "{}", case.name);
        let got = as_i64(&px.data);
        if case.ts == HTJ2K_LOSSY {
            // Irreversible 9/7 with a fine step: close to the source (within 1% of the 12-bit
            // range, 0.1% on average), not equal; pydicom below must agree exactly.
            let errors: Vec<i64> = got
                .iter()
                .zip(&source)
                .map(|(a, b)| (a - b).abs())
                .collect();
            let worst = errors.iter().copied().max().unwrap();
            let mean = errors.iter().sum::<i64>() as f64 / errors.len() as f64;
            eprintln!(
                "{}: largest error {worst}, mean {mean:.2} against the source",
                case.name
            );
            assert!(
                worst > 0 && worst <= 40 && mean <= 4.0,
                "{}: worst {worst}, mean {mean}",
                case.name
            );
        } else {
            assert_eq!(
                got, source,
                "{}: lossless HTJ2K must give back the source",
                case.name
            );
        }
        files.push(path);
        ours.push(got);
    }
    let Some(py) = python() else { return };
    for ((reference, got), case) in pydicom_values(&py, &files).iter().zip(&ours).zip(&CASES) {
        let reference: Vec<i64> = reference.iter().map(|v| *v as i64).collect();
        assert_eq!(
            &reference, got,
            "{}: differs from pydicom + pylibjpeg-openjpeg",
            case.name
        );
    }
}

/// A small lossless HTJ2K MR frame (64 × 80, 16-bit signed) and its Part 10 bytes.
fn small_htj2k(tool: &Path, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let px = image(64, 80, 1, 16, true);
    let frame = ojph(
        tool,
        dir,
        &px,
        (64, 80, 1),
        16,
        true,
        &["-reversible", "true"],
    );
    let path = dir.join("small.dcm");
    write_encapsulated(
        &path,
        HTJ2K_LOSSLESS,
        vec![frame.clone()],
        (64, 80, 1),
        16,
        16,
        true,
        "MONOCHROME2",
    );
    (frame, std::fs::read(&path).unwrap())
}

/// The Part 10 bytes of `frame` under a header of `rows × cols`.
fn wrap(dir: &Path, frame: Vec<u8>, rows: u16, cols: u16) -> Vec<u8> {
    let path = dir.join("wrapped.dcm");
    write_encapsulated(
        &path,
        J2K_LOSSLESS,
        vec![frame],
        (rows, cols, 1),
        16,
        16,
        true,
        "MONOCHROME2",
    );
    std::fs::read(&path).unwrap()
}

fn malformed(bytes: &[u8]) -> String {
    match decode(bytes, Output::Stored) {
        Err(PixelError::Malformed(m)) => m,
        other => panic!("expected a malformed-pixel-data refusal, got {other:?}"),
    }
}

#[test]
fn a_codestream_larger_than_its_header_is_refused_before_decoding() {
    let Some(tool) = ojph_compress() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (frame, _) = small_htj2k(&tool, dir.path());
    let siz = read_j2k_siz(&frame).unwrap();
    assert_eq!((siz.width, siz.height, siz.components), (80, 64, 1));
    // The header claims a smaller image than the codestream would make the decoder allocate.
    let m = malformed(&wrap(dir.path(), frame.clone(), 32, 80));
    assert!(
        m.contains("codestream is 80x64, the DICOM header says 80x32"),
        "{m}"
    );
    // A SIZ that claims a 60000 × 60000 image under a 64 × 80 header.
    let mut huge = frame.clone();
    huge[8..12].copy_from_slice(&60_000u32.to_be_bytes());
    huge[12..16].copy_from_slice(&60_000u32.to_be_bytes());
    let m = malformed(&wrap(dir.path(), huge, 64, 80));
    assert!(m.contains("the DICOM header says 80x64"), "{m}");
    // A 1 × 1 tile grid: 5120 tiles of coding parameters for a 64 × 80 image.
    let mut tiny_tiles = frame.clone();
    tiny_tiles[24..28].copy_from_slice(&1u32.to_be_bytes());
    tiny_tiles[28..32].copy_from_slice(&1u32.to_be_bytes());
    let m = malformed(&wrap(dir.path(), tiny_tiles, 64, 80));
    assert!(
        m.contains(&format!("5120 tiles, more than the {MAX_J2K_TILES}")),
        "{m}"
    );
    // Anything but a codestream or a JP2 file in front.
    let mut junk = vec![0, 0, 0, 12];
    junk.extend_from_slice(&frame);
    let m = malformed(&wrap(dir.path(), junk, 64, 80));
    assert!(m.contains("begins with neither a codestream header"), "{m}");
    // A JP2 file whose boxes do not lead to a codestream box.
    let mut boxed = vec![0, 0, 0, 12, b'j', b'P', b' ', b' ', 13, 10, 0x87, 10];
    boxed.extend_from_slice(&frame);
    let m = malformed(&wrap(dir.path(), boxed.clone(), 64, 80));
    assert!(
        m.contains("JP2 boxes are broken or hold no codestream"),
        "{m}"
    );
    // The same codestream in a well-formed codestream box decodes as the bare one does.
    let mut jp2c = (8 + frame.len() as u32).to_be_bytes().to_vec();
    jp2c.extend_from_slice(b"jp2c");
    jp2c.extend_from_slice(&frame);
    boxed.truncate(12);
    boxed.extend_from_slice(&jp2c);
    let bare = decode(&wrap(dir.path(), frame, 64, 80), Output::Stored).unwrap();
    let wrapped = decode(&wrap(dir.path(), boxed, 64, 80), Output::Stored).unwrap();
    assert_eq!(bare, wrapped);
}

/// A marker segment: marker, length (counting itself), body.
fn segment(marker: u16, body: &[u8]) -> Vec<u8> {
    let mut v = marker.to_be_bytes().to_vec();
    v.extend_from_slice(&u16::try_from(body.len() + 2).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A hand-made 16-bit codestream of `side × side` in one tile: SOC, SIZ, the main header's COD
/// (`main_precincts`: one byte per resolution, or none), QCD, one tile-part whose header has
/// its own COD when `tile_precincts` is given, a few bytes of packet data, EOC.
fn crafted(side: u32, main_precincts: Option<&[u8]>, tile_precincts: Option<&[u8]>) -> Vec<u8> {
    let cod = |precincts: Option<&[u8]>| {
        // Scod, LRCP, 1 layer, no MCT; 5 levels, 64 × 64 code-blocks, no bypass, 5-3 reversible.
        let mut body = vec![u8::from(precincts.is_some()), 0, 0, 1, 0, 5, 4, 4, 0, 1];
        body.extend_from_slice(precincts.unwrap_or(&[]));
        segment(0xFF52, &body)
    };
    let mut siz = vec![0, 0];
    for v in [side, side, 0, 0, side, side, 0, 0] {
        siz.extend_from_slice(&v.to_be_bytes());
    }
    siz.extend_from_slice(&[0, 1, 15, 1, 1]);
    let mut tile_header = Vec::new();
    if let Some(p) = tile_precincts {
        tile_header = cod(Some(p));
    }
    let data = [0u8; 16];
    let psot = 12 + tile_header.len() + 2 + data.len();
    let mut sot = vec![0, 0];
    sot.extend_from_slice(&u32::try_from(psot).unwrap().to_be_bytes());
    sot.extend_from_slice(&[0, 1]);
    let mut out = vec![0xFF, 0x4F];
    out.extend(segment(0xFF51, &siz));
    out.extend(cod(main_precincts));
    out.extend(segment(
        0xFF5C,
        &[
            0x20, 0x48, 0x48, 0x50, 0x48, 0x48, 0x50, 0x48, 0x48, 0x50, 0x48, 0x48, 0x50, 0x48,
            0x48, 0x50,
        ],
    ));
    out.extend(segment(0xFF90, &sot));
    out.extend(tile_header);
    out.extend([0xFF, 0x93]);
    out.extend(data);
    out.extend([0xFF, 0xD9]);
    out
}

/// From the attacker's side: a few hundred bytes whose coding style (a 2 × 2 precinct
/// partition, so 1 × 1 code-blocks) would have OpenJPEG allocate a record of hundreds of bytes
/// per sample of a 2048 × 2048 frame (gigabytes, from the headers alone, locked in memory) are
/// refused before the decoder sees them, in the main header and in a tile-part header alike.
#[test]
fn a_coding_style_of_tiny_code_blocks_is_refused_before_the_decoder_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = crafted(2048, Some(&[0x11; 6]), None);
    assert!(hostile.len() < 200);
    let m = malformed(&wrap(dir.path(), hostile, 2048, 2048));
    assert!(
        m.contains("code-blocks of 2^1 x 2^1 samples at resolution 0"),
        "{m}"
    );
    // The main header is harmless; the tile-part's own COD asks for 2 × 2 precincts above
    // resolution 0 (so 1 × 1 code-blocks there).
    let hostile = crafted(2048, None, Some(&[0xFF, 0x22, 0x22, 0x22, 0x22, 0x22]));
    let m = malformed(&wrap(dir.path(), hostile, 2048, 2048));
    assert!(
        m.contains("code-blocks of 2^1 x 2^1 samples at resolution 1"),
        "{m}"
    );
    // 4 × 4 code-blocks without precincts are refused too; 16 × 16 (via 32 × 32 precincts)
    // pass the check and reach the decoder (empty packets decode to a flat image).
    let mut small_blocks = crafted(2048, None, None);
    let at = small_blocks
        .windows(2)
        .position(|w| w == [0xFF, 0x52])
        .unwrap();
    small_blocks[at + 4 + 6] = 0;
    small_blocks[at + 4 + 7] = 0;
    let m = malformed(&wrap(dir.path(), small_blocks, 2048, 2048));
    assert!(m.contains("code-blocks of 2^2 x 2^2 samples"), "{m}");
    let fine = crafted(64, Some(&[0x55; 6]), None);
    let decoded = decode(&wrap(dir.path(), fine, 64, 64), Output::Stored);
    assert!(decoded.is_ok(), "16 x 16 code-blocks are accepted");
}

#[test]
fn a_truncated_or_corrupted_codestream_is_a_typed_error() {
    let Some(tool) = ojph_compress() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (frame, good) = small_htj2k(&tool, dir.path());
    assert!(decode(&good, Output::Stored).is_ok());
    for cut in [2, 6, 30, 60, frame.len() / 2, frame.len() - 2] {
        let bytes = wrap(dir.path(), frame[..cut].to_vec(), 64, 80);
        assert!(
            matches!(
                decode(&bytes, Output::Stored),
                Err(PixelError::Malformed(_))
            ),
            "cut at {cut}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The stable driver of the JPEG 2000 entry point: corrupted codestreams (bytes flipped
    /// anywhere, the marker segments included) never panic and never decode to another shape.
    #[test]
    fn corrupted_jpeg2000_codestreams_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12)
    ) {
        let Some(tool) = ojph_compress() else { return Ok(()) };
        let dir = tempfile::tempdir().unwrap();
        let (mut frame, _) = small_htj2k(&tool, dir.path());
        for (at, byte) in &flips {
            let i = at.index(frame.len());
            frame[i] ^= byte | 1;
        }
        rapha_dicom::fuzzing::jpeg2000_codestream(&frame);
        let bytes = wrap(dir.path(), frame, 64, 80);
        if let Ok(px) = decode(&bytes, Output::Stored) {
            prop_assert_eq!(px.shape(), [1, 64, 80, 1]);
        }
    }
}
