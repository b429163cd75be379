//! Pixel decode (runs inside the enclave runtime only; the cohort path never decodes pixels).
//!
//! Supported transfer syntaxes, all in pure Rust: every native one (implicit/explicit VR little
//! endian, explicit VR big endian, deflated) with 1, 8, 16 or 32 bits allocated, planar
//! configuration 0 or 1 and YBR_FULL_422 chroma upsampling (`native`); RLE
//! Lossless at any bit depth (`rle`); JPEG baseline (process 1), 8-bit extended (2 & 4) and
//! lossless (14, 14 SV1) via dicom-pixeldata / jpeg-decoder (`jpeg`); JPEG 2000 lossless and
//! lossy (`.4.90`, `.4.91`) and HTJ2K (`.4.201`-`.4.203`) via the pure-Rust port of OpenJPEG
//! ([`j2k`], which says why that decoder). JPEG-LS (`.4.80`, `.4.81`) and JPEG extended with
//! 12-bit precision (`.4.51`), whose only decoders are C libraries, are decoded in a sandboxed
//! process of their own, `rapha-decode` (`sandboxed`, which says how; without that binary
//! installed they are [`PixelError::Unsupported`]); so is HTJ2K when that binary is installed
//! (OpenJPH, faster than the port; else the port decodes it in process). JPEG 2000 Part 2 (`.4.92`, `.4.93`),
//! JPEG XL and video are reported as [`PixelError::Unsupported`] (counted as
//! [`PixelError::reason`] `undecodable-transfer-syntax`).
//!
//! Every object is outside input and every entry point ([`decode`], [`decode_with`],
//! [`Instance::open`]) fails with a typed error in memory and time bounded by its input and
//! [`DecodeLimits`]: a deflated data set is inflated with a cap before anything else, the
//! structure (lengths, nesting depth, header count) is checked before dicom-rs parses it
//! ([`crate::guard`]), the decoded size is checked against [`DecodeLimits::max_output_bytes`]
//! before a buffer is allocated, an RLE frame must be able to expand to its size, and a JPEG
//! or JPEG 2000 frame's own dimensions may not exceed the header's (those decoders size their
//! buffers from them).

mod header;
pub mod j2k;
mod jpeg;
mod native;
mod rle;
pub mod sandboxed;

pub use sandboxed::JobDecoders;

use std::borrow::Cow;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use crate::attrs::{tag, Attrs};
use crate::guard::{self, StructureError};
use header::Header;
pub use j2k::{read_siz as read_j2k_siz, Siz as J2kSiz, MAX_TILES as MAX_J2K_TILES};

/// Largest decoded pixel buffer accepted by default (bytes): the trainer protocol's largest
/// payload, so nothing larger could be fed anyway.
pub const MAX_OUTPUT_BYTES: usize = 512 << 20;

/// Bounds on what decoding one object may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Inflation cap, nesting depth and header count, checked before parsing.
    pub structure: guard::Limits,
    /// Largest decoded pixel buffer, checked before it is allocated.
    pub max_output_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            structure: guard::Limits::default(),
            max_output_bytes: MAX_OUTPUT_BYTES,
        }
    }
}

/// Why pixels could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PixelError {
    /// The transfer syntax is valid DICOM but this build has no decoder for it.
    #[error("pixel data in transfer syntax {0} cannot be decoded by this build (unsupported codec); the instance is skipped")]
    Unsupported(String),
    /// The object or its pixel data is broken.
    #[error("malformed DICOM pixel data: {0}")]
    Malformed(String),
    /// The object was refused before parsing: nested too deep, too many headers, a deflate
    /// bomb. (A length that runs past the end is [`PixelError::Malformed`].)
    #[error("DICOM object refused: {0}")]
    Structure(StructureError),
    /// The decoded pixels would be larger than the limit.
    #[error("decoded pixel data would take {bytes} bytes, more than the limit of {limit}")]
    TooLarge { bytes: u128, limit: usize },
}

impl PixelError {
    /// The reason an instance whose pixels fail this way is counted under (the keys of
    /// [`rapha_core::ExclusionCounts`]; the enclave runtime counts refusals at fetch time).
    pub fn reason(&self) -> &'static str {
        use crate::exclusion::reason;
        match self {
            Self::Unsupported(_) => reason::UNDECODABLE_TRANSFER_SYNTAX,
            Self::TooLarge { .. } => reason::PIXELS_TOO_LARGE,
            Self::Malformed(_) | Self::Structure(_) => reason::MALFORMED_PIXEL_DATA,
        }
    }
}

impl From<StructureError> for PixelError {
    fn from(e: StructureError) -> Self {
        match e {
            StructureError::Malformed(m) => Self::Malformed(m),
            other => Self::Structure(other),
        }
    }
}

/// What numbers the caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// Stored values in their natural type: u8 (BitsAllocated ≤ 8), u16 or i16 (16, by
    /// PixelRepresentation), u32 or i32 (32).
    #[default]
    Stored,
    /// f32 after the modality LUT (RescaleSlope/RescaleIntercept), e.g. Hounsfield units.
    Rescaled,
}

// A deliberate duplicate (issue 23): the trainer SDK's `Pixels`
// (crates/rapha-trainer-sdk/src/pixels.rs) has the same six sample types and per-type accessors.
// They stay two across a trust boundary: the SDK is linked into the AI company's trainers and
// must not link this crate, the node's parser of the hospital's DICOM; the protocol's `Dtype`
// is the contract between them.
/// Decoded samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    /// 32-bit stored integers (e.g. RT dose), kept exact.
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` as f64 (for comparisons and statistics).
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        match self {
            Self::U8(v) => v.get(i).map(|x| f64::from(*x)),
            Self::U16(v) => v.get(i).map(|x| f64::from(*x)),
            Self::I16(v) => v.get(i).map(|x| f64::from(*x)),
            Self::U32(v) => v.get(i).map(|x| f64::from(*x)),
            Self::I32(v) => v.get(i).map(|x| f64::from(*x)),
            Self::F32(v) => v.get(i).map(|x| f64::from(*x)),
        }
    }
}

/// Decoded frames: `frames × rows × columns × samples`, row-major, samples interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    pub frames: u32,
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub photometric_interpretation: String,
    pub data: Samples,
}

impl Pixels {
    /// `[frames, rows, columns, samples]`.
    pub fn shape(&self) -> [usize; 4] {
        [
            self.frames as usize,
            self.rows as usize,
            self.columns as usize,
            usize::from(self.samples_per_pixel),
        ]
    }
}

/// Decodes a Part 10 byte buffer (with or without the 128-byte preamble) within the default
/// [`DecodeLimits`].
///
/// # Errors
/// [`PixelError::Unsupported`] for a transfer syntax without a decoder here,
/// [`PixelError::Structure`] for an object refused before parsing, [`PixelError::TooLarge`]
/// for pixels past the output limit, [`PixelError::Malformed`] for anything else broken.
pub fn decode(bytes: &[u8], output: Output) -> Result<Pixels, PixelError> {
    decode_with(bytes, output, &DecodeLimits::default())
}

/// [`decode`] within `limits`.
///
/// # Errors
/// As [`decode`].
pub fn decode_with(
    bytes: &[u8],
    output: Output,
    limits: &DecodeLimits,
) -> Result<Pixels, PixelError> {
    Instance::open(bytes, limits)?.decode(output)
}

/// A Part 10 object parsed within [`DecodeLimits`]: its header can be checked before its
/// pixels are decoded (the enclave runtime checks a served object against the approved one
/// first).
pub struct Instance {
    obj: DefaultDicomObject,
    transfer_syntax: String,
    limits: DecodeLimits,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("transfer_syntax", &self.transfer_syntax)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Inflates (if deflated, with a cap), checks the structure, then parses.
    ///
    /// # Errors
    /// [`PixelError::Structure`] or [`PixelError::Malformed`].
    pub fn open(bytes: &[u8], limits: &DecodeLimits) -> Result<Self, PixelError> {
        let transfer_syntax = guard::transfer_syntax(bytes).unwrap_or_default();
        let prepared = guard::prepare(bytes, &limits.structure)?;
        guard::check(&prepared, &limits.structure)?;
        let body = if prepared.len() >= 132 && &prepared[128..132] == b"DICM" {
            &prepared[128..]
        } else {
            &prepared[..]
        };
        // The guard has bounded lengths, depth and size; a parser panic is still an error.
        let obj = std::panic::catch_unwind(|| {
            OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Never)
                .from_reader(body)
        })
        .map_err(|_| PixelError::Malformed("the parser rejected the object".into()))?
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
        Ok(Self {
            obj,
            transfer_syntax,
            limits: *limits,
        })
    }

    /// The transfer syntax the object was served in (a deflated one stays named as such).
    pub fn transfer_syntax(&self) -> &str {
        &self.transfer_syntax
    }

    /// The header (binary values and pixel data are not copied), with the served transfer
    /// syntax at (0002,0010).
    pub fn attrs(&self) -> Attrs {
        let mut a = Attrs::from_object(&self.obj);
        a.set_text(tag::TRANSFER_SYNTAX_UID, "UI", &[&self.transfer_syntax]);
        a
    }

    /// Decodes the pixel data.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode(&self, output: Output) -> Result<Pixels, PixelError> {
        decode_object(&self.obj, output, &self.limits, None)
    }

    /// Decodes the pixel data for a job: frames that go to the sandboxed worker go to the
    /// job's own workers (`job`), kept across its frames, instead of one started per frame.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode_for_job(&self, output: Output, job: &JobDecoders) -> Result<Pixels, PixelError> {
        decode_object(&self.obj, output, &self.limits, Some(job))
    }
}

/// The fragments of encapsulated PixelData; `what` names the transfer syntax in the refusal.
pub(super) fn fragments<'a>(
    obj: &'a DefaultDicomObject,
    what: &str,
) -> Result<&'a [Vec<u8>], PixelError> {
    let elem = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    match elem.value() {
        dicom_core::value::Value::PixelSequence(seq) => Ok(seq.fragments()),
        _ => Err(PixelError::Malformed(format!(
            "{what} PixelData is not encapsulated"
        ))),
    }
}

/// Lossless transfer syntaxes this build decodes, in the order the node asks a transcoding
/// PACS for them ([`crate::client::Wanted`]; explicit VR little endian, the fallback, is added
/// last there): quick to decode first. Lossy syntaxes are never asked for.
pub const LOSSLESS_TRANSFER_SYNTAXES: [&str; 6] = [
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless Only
    "1.2.840.10008.1.2.4.202", // HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless Only
];

/// Whether this build has a decoder for pixel data in transfer syntax `ts` (some objects in
/// it may still be refused: 12-bit JPEG, a header the decoder cannot take).
#[must_use]
pub fn decodes(ts: &str) -> bool {
    j2k::TRANSFER_SYNTAXES.contains(&ts)
        || sandboxed::JPEG_LS.contains(&ts)
        || TransferSyntaxRegistry
            .get(ts)
            .is_some_and(|t| t.can_decode_all())
}

/// Splits encapsulated pixel data into one codestream per frame, the one rule of every
/// encapsulated syntax (RLE, JPEG 2000, JPEG-LS, 12-bit JPEG): one fragment per frame, all
/// fragments for a single frame, or else a new frame at each fragment that `starts_frame`
/// (begins a codestream; RLE, one fragment per frame by PS3.5 A.4.2, says every fragment
/// does); `what` names the syntax in the refusal.
pub(super) fn frame_streams<'a>(
    fragments: &'a [Vec<u8>],
    frames: usize,
    what: &str,
    starts_frame: impl Fn(&[u8]) -> bool,
) -> Result<Vec<Cow<'a, [u8]>>, PixelError> {
    if fragments.len() == frames {
        return Ok(fragments
            .iter()
            .map(|f| Cow::Borrowed(f.as_slice()))
            .collect());
    }
    if frames == 1 {
        return Ok(vec![Cow::Owned(fragments.concat())]);
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(frames);
    for f in fragments {
        match out.last_mut() {
            Some(last) if !starts_frame(f) => last.extend_from_slice(f),
            _ => out.push(f.clone()),
        }
    }
    if out.len() != frames {
        return Err(PixelError::Malformed(format!(
            "{} {what} codestreams in the pixel data for {frames} frames",
            out.len()
        )));
    }
    Ok(out.into_iter().map(Cow::Owned).collect())
}

/// Decodes the pixel data of an object [`Instance::open`] parsed.
fn decode_object(
    obj: &DefaultDicomObject,
    output: Output,
    limits: &DecodeLimits,
    job: Option<&JobDecoders>,
) -> Result<Pixels, PixelError> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    let jpeg2000 = j2k::TRANSFER_SYNTAXES.contains(&ts.as_str());
    if !decodes(&ts) {
        return Err(PixelError::Unsupported(ts));
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(PixelError::Malformed("no PixelData element".into()));
    }
    let hdr = Header::read(obj)?;
    hdr.check_output(output, limits.max_output_bytes)?;
    if matches!(
        ts.as_str(),
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    ) {
        return native::native(obj, &hdr, output);
    }
    if ts == "1.2.840.10008.1.2.5" {
        return rle::rle(obj, &hdr, output);
    }
    if jpeg2000 {
        if sandboxed::HTJ2K.contains(&ts.as_str()) && sandboxed::installed(job) {
            return sandboxed::decode(obj, &hdr, output, &ts, rapha_decode::Codec::Htj2k, job);
        }
        return j2k::decode(obj, &hdr, output);
    }
    if let Some(codec) = sandboxed::codec_for(&ts, &hdr) {
        return sandboxed::decode(obj, &hdr, output, &ts, codec, job);
    }
    if ts.starts_with("1.2.840.10008.1.2.4.") {
        jpeg::check_jpeg_frames(obj, &hdr)?;
    }
    // dicom-pixeldata may panic on some hostile inputs (arithmetic on header values); a
    // malformed file must never take the job down, so a panic becomes a typed error.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        jpeg::decode_inner(obj, output)
    }));
    match result {
        Ok(r) => r,
        Err(_) => Err(PixelError::Malformed(
            "pixel data decoder rejected the data".into(),
        )),
    }
}
