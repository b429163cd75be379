//! JPEG 2000 (lossless `.4.90`, lossy `.4.91`) and HTJ2K (`.4.201`–`.4.203`), decoded in
//! process by `openjp2`, OpenJPEG 2.5 translated to Rust (through the `jpeg2k` wrapper).
//!
//! Why this decoder: it is the reference decoder itself (pydicom's pylibjpeg-openjpeg plugin
//! wraps the same OpenJPEG), so lossless frames come out bit for bit as the reference's and
//! lossy frames with the reference's own rounding; it returns every component at its full
//! precision (up to 16 bits signed or unsigned, which CT and MR need); and OpenJPEG 2.5 decodes
//! the HTJ2K block coder (Part 15) too, so one in-process decoder serves all five syntaxes
//! with no C library in the node (HTJ2K goes to OpenJPH in the sandboxed worker instead when one
//! is installed, after the checks below: [`super::sandboxed`]). `hayro-jpeg2000`, the other pure-Rust candidate, yields
//! 8-bit images and has no HTJ2K block decoder.
//!
//! OpenJPEG sizes its buffers from the codestream's own image and tile size (SIZ), not from
//! the DICOM header. The decoder is handed the bare codestream (out of its JP2 box, for the
//! writers that wrap it), and every frame's SIZ is read first and must describe exactly the
//! image the header does (width, height, components, no subsampling, precision within
//! BitsAllocated) in at most [`MAX_TILES`] tiles, so what the decoder allocates grows with a
//! frame the header declares, which [`super::DecodeLimits::max_output_bytes`] bounds. The
//! coding style chooses how many code-block and precinct records the decoder keeps (hundreds of
//! bytes each, allocated from the headers alone), so every COD and COC, in the main header and
//! in each tile-part header, is read too and code-blocks under 16 × 16 samples are refused
//! ([`check_coding_styles`]): what is left is a small multiple of the frame (32-bit
//! coefficients, about a byte per sample of records). A hard cap needs the decoder in its own
//! process under an address-space limit (not done yet). Frames are decoded in strict mode (a truncated codestream is an
//! error, not a partly grey image), one at a time, and a decoder panic is a typed error like
//! any other refusal. The port is a translation of the C code and still uses raw pointers in
//! its inner loops: its memory safety is OpenJPEG's (fuzzed upstream for years), not the
//! compiler's; the fuzz entry point [`crate::fuzzing::jpeg2000_codestream`] drives it, on
//! stable too.

use std::borrow::Cow;

use dicom_object::DefaultDicomObject;

use super::header::Header;
use super::{Output, PixelError, Pixels};

/// The JPEG 2000 transfer syntaxes decoded here: Part 1 lossless and lossy, HTJ2K lossless,
/// lossless RPCL and lossy.
pub(super) const TRANSFER_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

/// Most tiles one frame may have ([`rapha_decode::MAX_J2K_TILES`], which the worker's HTJ2K
/// decoder refuses past too). OpenJPEG keeps coding parameters per tile (kilobytes each,
/// whatever the tile's size); a real frame has one tile or a few hundred.
pub const MAX_TILES: u64 = rapha_decode::MAX_J2K_TILES;

/// Start of codestream followed by the image and tile size marker: how every JPEG 2000
/// codestream begins (PS3.5 A.4.4: the fragments hold a bare codestream).
const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];

/// The JP2 signature box. PS3.5 wants a bare codestream, but some writers (older GDCM) put a
/// whole JP2 file in the fragments; its codestream box is decoded like a bare codestream.
const JP2_SIGNATURE: [u8; 12] = [0, 0, 0, 12, b'j', b'P', b' ', b' ', 13, 10, 0x87, 10];

/// The codestream of a frame: the frame itself, or the contents of the first codestream box
/// (`jp2c`) of a JP2 file, found by walking its top-level boxes.
///
/// # Errors
/// [`PixelError::Malformed`] for anything else.
pub fn codestream(frame: &[u8]) -> Result<&[u8], PixelError> {
    if frame.starts_with(&SOC_SIZ) {
        return Ok(frame);
    }
    let bad = |why: &str| PixelError::Malformed(format!("JPEG 2000 frame: {why}"));
    if !frame.starts_with(&JP2_SIGNATURE) {
        return Err(bad(
            "begins with neither a codestream header (SOC, SIZ) nor a JP2 signature",
        ));
    }
    let broken = || bad("JP2 boxes are broken or hold no codestream (jp2c)");
    let mut rest = frame;
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let (header, len) = match len {
            0 => (8, rest.len()),
            1 => {
                let x = rest.get(8..16).ok_or_else(broken)?;
                let x = u64::from_be_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
                (16, usize::try_from(x).map_err(|_| broken())?)
            }
            n => (8, n),
        };
        if len < header || len > rest.len() {
            return Err(broken());
        }
        if &rest[4..8] == b"jp2c" {
            return Ok(&rest[header..len]);
        }
        rest = &rest[len..];
    }
    Err(broken())
}

/// What a codestream's SIZ marker segment says about the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Siz {
    pub width: u32,
    pub height: u32,
    pub components: u16,
    /// Largest component precision in bits.
    pub precision: u8,
    pub tiles: u64,
    /// Every component is sampled at every pixel (XRsiz = YRsiz = 1).
    pub full_resolution: bool,
}

/// Reads the SIZ segment at the start of a codestream.
///
/// # Errors
/// [`PixelError::Malformed`] when the frame does not begin with SOC + SIZ or the segment is
/// short or inconsistent.
pub fn read_siz(data: &[u8]) -> Result<Siz, PixelError> {
    let bad = |why: &str| PixelError::Malformed(format!("JPEG 2000 frame: {why}"));
    if !data.starts_with(&SOC_SIZ) {
        return Err(bad("codestream does not begin with SOC, SIZ"));
    }
    let seg = &data[4..];
    let u16_at = |i: usize| seg.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let u32_at = |i: usize| {
        seg.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let short = || bad("image and tile size segment is cut short");
    let len = usize::from(u16_at(0).ok_or_else(short)?);
    let components = u16_at(36).ok_or_else(short)?;
    if len != 38 + 3 * usize::from(components) || seg.len() < len {
        return Err(short());
    }
    let field = |i: usize| u32_at(i).ok_or_else(short);
    let (x1, y1, x0, y0) = (field(4)?, field(8)?, field(12)?, field(16)?);
    let (tw, th, tx0, ty0) = (field(20)?, field(24)?, field(28)?, field(32)?);
    if x0 >= x1 || y0 >= y1 || tw == 0 || th == 0 || tx0 > x0 || ty0 > y0 {
        return Err(bad("image or tile geometry is empty or inconsistent"));
    }
    if components == 0 {
        return Err(bad("no components"));
    }
    let tiles =
        u64::from(x1 - tx0).div_ceil(u64::from(tw)) * u64::from(y1 - ty0).div_ceil(u64::from(th));
    let mut precision = 0;
    let mut full_resolution = true;
    for c in 0..usize::from(components) {
        let at = 38 + 3 * c;
        precision = precision.max((seg[at] & 0x7F) + 1);
        full_resolution &= seg[at + 1] == 1 && seg[at + 2] == 1;
    }
    Ok(Siz {
        width: x1 - x0,
        height: y1 - y0,
        components,
        precision,
        tiles,
        full_resolution,
    })
}

/// Refuses a frame whose SIZ does not describe the header's image within [`MAX_TILES`].
fn check_siz(siz: &Siz, h: &Header) -> Result<(), PixelError> {
    let bad = |why: String| PixelError::Malformed(format!("JPEG 2000 frame: {why}"));
    if (siz.width, siz.height) != (h.columns, h.rows) {
        return Err(bad(format!(
            "codestream is {}x{}, the DICOM header says {}x{}",
            siz.width, siz.height, h.columns, h.rows
        )));
    }
    if siz.components != h.samples {
        return Err(bad(format!(
            "codestream has {} components, the DICOM header says {} samples per pixel",
            siz.components, h.samples
        )));
    }
    if !siz.full_resolution {
        return Err(bad("subsampled components".into()));
    }
    if u16::from(siz.precision) > h.bits_allocated {
        return Err(bad(format!(
            "{}-bit components do not fit BitsAllocated {}",
            siz.precision, h.bits_allocated
        )));
    }
    if siz.tiles > MAX_TILES {
        return Err(bad(format!(
            "{} tiles, more than the {MAX_TILES} accepted",
            siz.tiles
        )));
    }
    Ok(())
}

/// Smallest code-block, in samples, a frame may be coded with (log2). OpenJPEG keeps a record of
/// a few hundred bytes per code-block, sized when it reads the headers and before any packet
/// data, so a coding style of 1 × 1 code-blocks (a 2 × 2 precinct partition forces them) costs
/// hundreds of bytes per sample from a codestream of a few hundred bytes. From 16 × 16 up the
/// records cost about a byte per sample. Encoders use 32 × 32 to 64 × 64 (HTJ2K low-latency
/// profiles 1024 × 4, also 2^12).
pub const MIN_CODE_BLOCK_LOG2: u8 = 8;

/// Refuses a codestream whose coding style (COD and COC, in the main header and in every
/// tile-part header) makes code-blocks smaller than 2^[`MIN_CODE_BLOCK_LOG2`] samples at any
/// resolution, before the decoder reads it.
///
/// # Errors
/// [`PixelError::Malformed`] for such a style or for marker segments that run past the stream.
pub fn check_coding_styles(stream: &[u8], components: u16) -> Result<(), PixelError> {
    let bad = |why: String| PixelError::Malformed(format!("JPEG 2000 frame: {why}"));
    let short = || bad("a marker segment runs past the codestream".into());
    let u16_at = |i: usize| {
        stream
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)
    };
    // Walks the marker segments of one header from `at` to the marker that ends it (SOT ends
    // the main header, SOD a tile-part header); returns where that marker is.
    let walk_header = |mut at: usize, end_marker: u16| -> Result<usize, PixelError> {
        loop {
            let marker = u16_at(at)?;
            if marker == end_marker {
                return Ok(at);
            }
            if marker < 0xFF30 {
                return Err(bad(format!(
                    "marker {marker:04X} where a header marker belongs"
                )));
            }
            let len = usize::from(u16_at(at + 2)?);
            let seg = stream.get(at + 4..at + 2 + len).ok_or_else(short)?;
            if len < 2 {
                return Err(short());
            }
            match marker {
                0xFF52 => check_style(seg, 0)?,
                0xFF53 => check_style(seg, if components < 257 { 1 } else { 2 })?,
                _ => {}
            }
            at += 2 + len;
        }
    };
    const SOT: u16 = 0xFF90;
    const SOD: u16 = 0xFF93;
    // SOC, then SIZ (read by `read_siz`) and the rest of the main header.
    let mut at = walk_header(2, SOT)?;
    // Each tile-part: SOT (with the tile-part's length, Psot, from the SOT marker on), its
    // header up to SOD, then its packet data.
    while u16_at(at).is_ok_and(|m| m == SOT) {
        let psot = stream
            .get(at + 6..at + 10)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(short)?;
        let sot_len = usize::from(u16_at(at + 2)?);
        walk_header(at + 2 + sot_len, SOD)?;
        if psot == 0 {
            break; // the last tile-part runs to the end of the codestream
        }
        let psot = usize::try_from(psot).map_err(|_| short())?;
        if psot < 2 + sot_len {
            return Err(short());
        }
        at += psot;
    }
    Ok(())
}

/// One COD or COC segment (after its length; `skip` bytes of component index for COC): the
/// effective code-block at each resolution is the nominal one cut to the precinct (to half of
/// it above resolution 0).
fn check_style(seg: &[u8], skip: usize) -> Result<(), PixelError> {
    let bad = |why: String| PixelError::Malformed(format!("JPEG 2000 frame: {why}"));
    let short = || bad("a coding style segment is cut short".into());
    // COD: Scod, progression order, layers (2), MCT, then SPcod. COC: Ccoc, Scoc, then SPcoc.
    let (scod, sp) = if skip == 0 {
        (
            *seg.first().ok_or_else(short)?,
            seg.get(5..).ok_or_else(short)?,
        )
    } else {
        (
            *seg.get(skip).ok_or_else(short)?,
            seg.get(skip + 1..).ok_or_else(short)?,
        )
    };
    let [levels, xcb, ycb, ..] = *sp else {
        return Err(short());
    };
    let (xcb, ycb) = (xcb.saturating_add(2), ycb.saturating_add(2));
    let precincts = if scod & 1 == 1 {
        let bytes = sp.get(5..5 + usize::from(levels) + 1).ok_or_else(short)?;
        bytes.iter().map(|b| (b & 0x0F, b >> 4)).collect()
    } else {
        vec![(15, 15); usize::from(levels) + 1]
    };
    for (r, (ppx, ppy)) in precincts.into_iter().enumerate() {
        let cut = u8::from(r > 0);
        let w = xcb.min(ppx.saturating_sub(cut));
        let h = ycb.min(ppy.saturating_sub(cut));
        if w + h < MIN_CODE_BLOCK_LOG2 {
            return Err(bad(format!(
                "code-blocks of 2^{w} x 2^{h} samples at resolution {r}, under the 2^{MIN_CODE_BLOCK_LOG2} accepted \
                 (a coding style that costs the decoder far more memory than the frame)"
            )));
        }
    }
    Ok(())
}

/// The pixel data's frames, one codestream (or JP2 file) each.
pub(super) fn frames<'a>(
    obj: &'a DefaultDicomObject,
    h: &Header,
) -> Result<Vec<Cow<'a, [u8]>>, PixelError> {
    super::frame_streams(
        super::fragments(obj, "JPEG 2000")?,
        h.frames as usize,
        "JPEG 2000",
        |f| f.starts_with(&SOC_SIZ) || f.starts_with(&JP2_SIGNATURE),
    )
}

/// A frame's bare codestream once its SIZ describes the header's image ([`check_siz`]) and its
/// coding styles pass [`check_coding_styles`]: what either decoder (this one, or OpenJPH in
/// the sandboxed worker for HTJ2K) is handed. Every frame is checked before the first is
/// decoded or the output allocated.
pub(super) fn checked_codestream<'a>(frame: &'a [u8], h: &Header) -> Result<&'a [u8], PixelError> {
    let stream = codestream(frame)?;
    check_siz(&read_siz(stream)?, h)?;
    check_coding_styles(stream, h.samples)?;
    Ok(stream)
}

/// Decodes every frame into interleaved little-endian samples of BitsAllocated bits, then
/// lets the header interpret them (sign extension from BitsStored, rescale).
pub(super) fn decode(
    obj: &DefaultDicomObject,
    h: &Header,
    output: Output,
) -> Result<Pixels, PixelError> {
    if !matches!(h.bits_allocated, 8 | 16) {
        return Err(PixelError::Malformed(format!(
            "JPEG 2000 pixel data with BitsAllocated {} (8 or 16 expected)",
            h.bits_allocated
        )));
    }
    let frames = frames(obj, h)?;
    let streams = frames
        .iter()
        .map(|f| checked_codestream(f, h))
        .collect::<Result<Vec<_>, _>>()?;
    let bps = h.bytes_per_sample();
    let spp = usize::from(h.samples);
    let ppf = h.pixels_per_frame();
    let mut out = vec![0u8; h.total_samples()? * bps];
    for (f, stream) in streams.iter().enumerate() {
        let frame = &mut out[f * ppf * spp * bps..(f + 1) * ppf * spp * bps];
        decode_frame(stream, ppf, spp, bps, frame)?;
    }
    h.finish(&out, output)
}

/// One codestream into `dst` (`ppf × spp × bps` bytes, samples interleaved).
fn decode_frame(
    stream: &[u8],
    ppf: usize,
    spp: usize,
    bps: usize,
    dst: &mut [u8],
) -> Result<(), PixelError> {
    let params = jpeg2k::DecodeParameters::new().strict(true);
    // Where the port indexes slices, a broken codestream that slips past OpenJPEG's own checks
    // panics instead of reading out of bounds; that panic is a refusal like any other.
    let image = std::panic::catch_unwind(|| jpeg2k::Image::from_bytes_with(stream, params))
        .map_err(|_| PixelError::Malformed("JPEG 2000 decoder rejected the frame".into()))?
        .map_err(|e| PixelError::Malformed(format!("JPEG 2000 frame: {e}")))?;
    let components = image.components();
    if components.len() != spp {
        return Err(PixelError::Malformed(format!(
            "JPEG 2000 frame decoded to {} components, {spp} expected",
            components.len()
        )));
    }
    for (c, comp) in components.iter().enumerate() {
        let data = comp.data();
        if data.len() != ppf {
            return Err(PixelError::Malformed(format!(
                "JPEG 2000 component {c} decoded to {} pixels, {ppf} expected",
                data.len()
            )));
        }
        for (d, v) in dst.chunks_exact_mut(spp * bps).zip(data) {
            d[c * bps..(c + 1) * bps].copy_from_slice(&v.to_le_bytes()[..bps]);
        }
    }
    Ok(())
}

/// Decodes a bare codestream as one frame of the image its own SIZ describes, after the same
/// checks as a DICOM frame and with at most `max_samples` samples: the fuzz entry point's way
/// into the decoder ([`crate::fuzzing::jpeg2000_codestream`]). Samples come back
/// interleaved, 16-bit little endian.
///
/// # Errors
/// [`PixelError::Malformed`] for a refused or undecodable codestream, [`PixelError::TooLarge`]
/// past `max_samples`.
pub fn decode_codestream(frame: &[u8], max_samples: usize) -> Result<Vec<u8>, PixelError> {
    let stream = codestream(frame)?;
    let siz = read_siz(stream)?;
    let samples = u128::from(siz.width) * u128::from(siz.height) * u128::from(siz.components);
    if samples > max_samples as u128 {
        return Err(PixelError::TooLarge {
            bytes: samples * 2,
            limit: max_samples * 2,
        });
    }
    let h = Header {
        rows: siz.height,
        columns: siz.width,
        frames: 1,
        samples: siz.components,
        bits_allocated: 16,
        bits_stored: 16,
        signed: false,
        planar: false,
        photometric: String::new(),
        slope: 1.0,
        intercept: 0.0,
    };
    check_siz(&siz, &h)?;
    check_coding_styles(stream, siz.components)?;
    let (ppf, spp) = (h.pixels_per_frame(), usize::from(h.samples));
    let mut out = vec![0u8; ppf * spp * 2];
    decode_frame(stream, ppf, spp, 2, &mut out)?;
    Ok(out)
}
