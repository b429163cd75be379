//! Pixel decode (runs inside the enclave runtime only; the cohort path never decodes pixels).
//!
//! Supported transfer syntaxes, all in pure Rust: every native one (implicit/explicit VR little
//! endian, explicit VR big endian, deflated) with 1, 8, 16 or 32 bits allocated, planar
//! configuration 0 or 1 and YBR_FULL_422 chroma upsampling, decoded here; RLE Lossless at any
//! bit depth, decoded here; JPEG baseline (process 1), 8-bit extended (2 & 4) and lossless
//! (14, 14 SV1) via dicom-pixeldata / jpeg-decoder. JPEG extended with 12-bit precision,
//! JPEG-LS, JPEG 2000, HTJ2K, JPEG XL and video are reported as [`PixelError::Unsupported`]:
//! their decoders need a C/C++ library build (CharLS, OpenJPEG) that this crate does not pull in.
//!
//! Every object is outside input and every entry point ([`decode`], [`decode_with`],
//! [`Instance::open`]) fails with a typed error in memory and time bounded by its input and
//! [`DecodeLimits`]: a deflated data set is inflated with a cap before anything else, the
//! structure (lengths, nesting depth, header count) is checked before dicom-rs parses it
//! ([`crate::guard`]), the decoded size is checked against [`DecodeLimits::max_output_bytes`]
//! before a buffer is allocated, an RLE frame must be able to expand to its size, and a JPEG
//! frame's own dimensions may not exceed the header's (the JPEG decoder sizes its buffers
//! from them).

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use crate::attrs::{tag, Attrs};
use crate::guard::{self, StructureError};

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
        decode_object(&self.obj, output, &self.limits)
    }
}

/// Decodes the pixel data of an object [`Instance::open`] parsed.
fn decode_object(
    obj: &DefaultDicomObject,
    output: Output,
    limits: &DecodeLimits,
) -> Result<Pixels, PixelError> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    match TransferSyntaxRegistry.get(&ts) {
        Some(t) if t.can_decode_all() => {}
        _ => return Err(PixelError::Unsupported(ts)),
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
        return native(obj, &hdr, output);
    }
    if ts == "1.2.840.10008.1.2.5" {
        return rle(obj, &hdr, output);
    }
    if ts == "1.2.840.10008.1.2.4.51" && hdr.bits_allocated > 8 {
        return Err(PixelError::Unsupported(format!(
            "{ts} with 12-bit precision"
        )));
    }
    if ts.starts_with("1.2.840.10008.1.2.4.") {
        check_jpeg_frames(obj, &hdr)?;
    }
    // dicom-pixeldata may panic on some hostile inputs (arithmetic on header values); a
    // malformed file must never take the job down, so a panic becomes a typed error.
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_inner(obj, output)));
    match result {
        Ok(r) => r,
        Err(_) => Err(PixelError::Malformed(
            "pixel data decoder rejected the data".into(),
        )),
    }
}

/// The JPEG decoder sizes its buffers from each image's own frame header (SOF), not from the
/// DICOM header: an image that claims more rows, columns or components than the DICOM header
/// is refused before it is decoded. Every SOI in the fragments is followed to its first SOF
/// (the decoder can be made to start at any of them), skipping marker segments by length as
/// the decoder does.
fn check_jpeg_frames(obj: &DefaultDicomObject, h: &Header) -> Result<(), PixelError> {
    use dicom_core::value::Value;
    let elem = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    let Value::PixelSequence(seq) = elem.value() else {
        return Err(PixelError::Malformed(
            "JPEG PixelData is not encapsulated".into(),
        ));
    };
    let data: Vec<u8> = seq.fragments().concat();
    let too_big = |what: &str| {
        PixelError::Malformed(format!(
            "a JPEG image in the pixel data claims {what} than the DICOM header"
        ))
    };
    // Walks from false SOIs inside marker segments could share their tails: the total work
    // is capped at a few passes over the data (a real file needs about one).
    let mut budget = 4 * data.len() + 4096;
    let mut i = 0;
    while let Some(at) = find_pair(&data, i, 0xD8) {
        i = at + 2;
        if let Some((rows, cols, comps)) = first_sof(&data, i, &mut budget)? {
            if rows == 0 || cols == 0 {
                return Err(PixelError::Malformed(
                    "a JPEG image in the pixel data has no rows or columns".into(),
                ));
            }
            if u32::from(rows) > h.rows || u32::from(cols) > h.columns {
                return Err(too_big("more rows or columns"));
            }
            if u16::from(comps) > h.samples {
                return Err(too_big("more components"));
            }
        }
    }
    Ok(())
}

/// The next `FF <second>` at or after `from`.
fn find_pair(data: &[u8], from: usize, second: u8) -> Option<usize> {
    data.get(from..)?
        .windows(2)
        .position(|w| w[0] == 0xFF && w[1] == second)
        .map(|p| from + p)
}

/// Height, width and component count of the first frame header after an SOI at `i`, reading
/// markers as the decoder does (skip to FF, skip fill bytes, marker segments by their length);
/// `None` where the decoder would fail before reaching a frame header. Each byte examined
/// costs one unit of `budget`.
fn first_sof(
    data: &[u8],
    mut i: usize,
    budget: &mut usize,
) -> Result<Option<(u16, u16, u8)>, PixelError> {
    let mut spend = |n: usize| -> Result<(), PixelError> {
        *budget = budget.checked_sub(n).ok_or_else(|| {
            PixelError::Malformed("JPEG marker structure too convoluted to check".into())
        })?;
        Ok(())
    };
    loop {
        let Some(ff) = data
            .get(i..)
            .and_then(|d| d.iter().position(|b| *b == 0xFF))
        else {
            return Ok(None);
        };
        spend(ff + 1)?;
        i += ff + 1;
        while data.get(i) == Some(&0xFF) {
            spend(1)?;
            i += 1;
        }
        let Some(&m) = data.get(i) else {
            return Ok(None);
        };
        i += 1;
        match m {
            // A stuffed zero is no marker: keep looking.
            0x00 => continue,
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let Some(seg) = data.get(i..i + 8) else {
                    return Ok(None);
                };
                let rows = u16::from_be_bytes([seg[3], seg[4]]);
                let cols = u16::from_be_bytes([seg[5], seg[6]]);
                return Ok(Some((rows, cols, seg[7])));
            }
            // Tables, restart interval, application data and comments: skipped by length.
            0xC4 | 0xCC | 0xDB | 0xDD | 0xE0..=0xEF | 0xFE => {
                let Some(len) = data.get(i..i + 2) else {
                    return Ok(None);
                };
                spend(2)?;
                i += usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
            // Anything else before a frame header is an error in the decoder.
            _ => return Ok(None),
        }
    }
}

fn decode_inner(obj: &DefaultDicomObject, output: Output) -> Result<Pixels, PixelError> {
    let px = obj
        .decode_pixel_data()
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    let raw = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let m = |e: dicom_pixeldata::Error| PixelError::Malformed(e.to_string());
    let data = match output {
        Output::Rescaled => Samples::F32(px.to_vec::<f32>().map_err(m)?),
        Output::Stored => match (px.bits_allocated(), px.pixel_representation()) {
            (1..=8, _) => Samples::U8(px.to_vec_with_options::<u8>(&raw).map_err(m)?),
            (16, dicom_pixeldata::PixelRepresentation::Signed) => {
                Samples::I16(px.to_vec_with_options::<i16>(&raw).map_err(m)?)
            }
            (16, _) => Samples::U16(px.to_vec_with_options::<u16>(&raw).map_err(m)?),
            _ => Samples::F32(px.to_vec_with_options::<f32>(&raw).map_err(m)?),
        },
    };
    let pixels = Pixels {
        frames: px.number_of_frames(),
        rows: px.rows(),
        columns: px.columns(),
        samples_per_pixel: px.samples_per_pixel(),
        photometric_interpretation: px.photometric_interpretation().as_str().to_owned(),
        data,
    };
    let expected = pixels.shape().iter().product::<usize>();
    if pixels.data.len() != expected {
        return Err(PixelError::Malformed(format!(
            "decoded {} samples, the header promises {expected}",
            pixels.data.len()
        )));
    }
    Ok(pixels)
}

/// Maximum decoded size accepted (samples), so a hostile header cannot ask for terabytes.
const MAX_SAMPLES: usize = 1 << 31;

struct Header {
    rows: u32,
    columns: u32,
    frames: u32,
    samples: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    photometric: String,
    slope: f64,
    intercept: f64,
}

impl Header {
    fn read(obj: &DefaultDicomObject) -> Result<Self, PixelError> {
        let int = |t| -> Option<i64> {
            let e = obj.element_opt(t).ok().flatten()?;
            e.to_int::<i64>()
                .ok()
                .or_else(|| e.to_float64().ok().map(|f| f as i64))
        };
        let float = |t| -> Option<f64> { obj.element_opt(t).ok().flatten()?.to_float64().ok() };
        let need = |t, name: &str| {
            int(t)
                .ok_or_else(|| PixelError::Malformed(format!("{name} is missing or not a number")))
        };
        let rows = u32::try_from(need(tags::ROWS, "Rows")?)
            .map_err(|_| PixelError::Malformed("bad Rows".into()))?;
        let columns = u32::try_from(need(tags::COLUMNS, "Columns")?)
            .map_err(|_| PixelError::Malformed("bad Columns".into()))?;
        let frames = u32::try_from(int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1))
            .map_err(|_| PixelError::Malformed("bad NumberOfFrames".into()))?;
        let samples = u16::try_from(int(tags::SAMPLES_PER_PIXEL).unwrap_or(1))
            .map_err(|_| PixelError::Malformed("bad SamplesPerPixel".into()))?;
        let bits_allocated = u16::try_from(need(tags::BITS_ALLOCATED, "BitsAllocated")?)
            .map_err(|_| PixelError::Malformed("bad BitsAllocated".into()))?;
        let bits_stored =
            u16::try_from(int(tags::BITS_STORED).unwrap_or(i64::from(bits_allocated)))
                .map_err(|_| PixelError::Malformed("bad BitsStored".into()))?;
        if !matches!(samples, 1 | 3)
            || !matches!(bits_allocated, 1 | 8 | 16 | 32)
            || bits_stored == 0
            || bits_stored > bits_allocated
        {
            return Err(PixelError::Malformed(format!(
                "unsupported pixel layout: {samples} samples, {bits_allocated} bits allocated, {bits_stored} stored"
            )));
        }
        if rows == 0 || columns == 0 {
            return Err(PixelError::Malformed("Rows or Columns is zero".into()));
        }
        let photometric = obj
            .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
            .ok()
            .flatten()
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_matches([' ', '\0']).to_owned())
            })
            .unwrap_or_default();
        Ok(Self {
            rows,
            columns,
            frames,
            samples,
            bits_allocated,
            bits_stored,
            signed: int(tags::PIXEL_REPRESENTATION) == Some(1),
            planar: int(tags::PLANAR_CONFIGURATION) == Some(1),
            photometric,
            slope: float(tags::RESCALE_SLOPE)
                .filter(|f| f.is_finite())
                .unwrap_or(1.0),
            intercept: float(tags::RESCALE_INTERCEPT)
                .filter(|f| f.is_finite())
                .unwrap_or(0.0),
        })
    }

    fn pixels_per_frame(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    fn total_samples(&self) -> Result<usize, PixelError> {
        let n =
            self.pixels_per_frame() as u128 * u128::from(self.frames) * u128::from(self.samples);
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_SAMPLES)
            .ok_or_else(|| PixelError::Malformed("image too large".into()))
    }

    fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated.div_ceil(8))
    }

    /// Refuses, before any buffer is allocated, pixels whose decoded form would pass `limit`.
    fn check_output(&self, output: Output, limit: usize) -> Result<(), PixelError> {
        let per_sample: u128 = match output {
            Output::Rescaled => 4,
            Output::Stored => match self.bits_allocated {
                0..=8 => 1,
                9..=16 => 2,
                _ => 4,
            },
        };
        let samples = u128::from(self.rows)
            * u128::from(self.columns)
            * u128::from(self.frames)
            * u128::from(self.samples);
        // The decoders also hold the stored bytes while producing the output.
        let bytes = samples * per_sample.max(self.bytes_per_sample() as u128);
        if bytes > limit as u128 {
            return Err(PixelError::TooLarge { bytes, limit });
        }
        Ok(())
    }

    fn finish(&self, le: &[u8], output: Output) -> Result<Pixels, PixelError> {
        let n = self.total_samples()?;
        let data = samples_from_le(le, n, self, output)?;
        Ok(Pixels {
            frames: self.frames,
            rows: self.rows,
            columns: self.columns,
            samples_per_pixel: self.samples,
            photometric_interpretation: self.photometric.clone(),
            data,
        })
    }
}

/// Native (uncompressed) pixel data: the element's bytes in machine order (dicom-rs has already
/// swapped big-endian words), reordered to interleaved samples.
fn native(obj: &DefaultDicomObject, h: &Header, output: Output) -> Result<Pixels, PixelError> {
    let elem = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    let bytes = elem
        .value()
        .to_bytes()
        .map_err(|_| PixelError::Malformed("native PixelData is encapsulated".into()))?;
    let big_endian =
        obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']) == "1.2.840.10008.1.2.2";
    let bytes = if big_endian {
        to_little_endian(elem.value(), bytes.into_owned(), h.bits_allocated)
    } else {
        bytes.into_owned()
    };
    let n = h.total_samples()?;
    if h.bits_allocated == 1 {
        let need = n.div_ceil(8);
        if bytes.len() < need {
            return Err(PixelError::Malformed(format!(
                "PixelData has {} bytes, the header needs {need}",
                bytes.len()
            )));
        }
        let bits: Vec<u8> = (0..n).map(|i| (bytes[i / 8] >> (i % 8)) & 1).collect();
        return h.finish(&bits, output);
    }
    let bps = h.bytes_per_sample();
    let spp = usize::from(h.samples);
    let ppf = h.pixels_per_frame();
    if h.photometric == "YBR_FULL_422" && spp == 3 {
        // Two pixels share one Cb and one Cr: Y1 Y2 Cb Cr → (Y1 Cb Cr) (Y2 Cb Cr).
        let need = n / 3 * 2 * bps;
        if bytes.len() < need || ppf % 2 != 0 {
            return Err(PixelError::Malformed(
                "YBR_FULL_422 PixelData too short or odd width".into(),
            ));
        }
        let mut out = Vec::with_capacity(n * bps);
        for quad in bytes[..need].chunks_exact(4 * bps) {
            let (y1, y2, cb, cr) = (
                &quad[..bps],
                &quad[bps..2 * bps],
                &quad[2 * bps..3 * bps],
                &quad[3 * bps..],
            );
            for y in [y1, y2] {
                out.extend_from_slice(y);
                out.extend_from_slice(cb);
                out.extend_from_slice(cr);
            }
        }
        return h.finish(&out, output);
    }
    let need = n * bps;
    if bytes.len() < need {
        return Err(PixelError::Malformed(format!(
            "PixelData has {} bytes, the header needs {need}",
            bytes.len()
        )));
    }
    if h.planar && spp > 1 {
        let mut out = vec![0u8; need];
        let frame_bytes = ppf * spp * bps;
        for f in 0..h.frames as usize {
            let src = &bytes[f * frame_bytes..(f + 1) * frame_bytes];
            let dst = &mut out[f * frame_bytes..(f + 1) * frame_bytes];
            for s in 0..spp {
                for p in 0..ppf {
                    let from = (s * ppf + p) * bps;
                    let to = (p * spp + s) * bps;
                    dst[to..to + bps].copy_from_slice(&src[from..from + bps]);
                }
            }
        }
        return h.finish(&out, output);
    }
    h.finish(&bytes[..need], output)
}

/// dicom-rs has already swapped OW words to machine order; 32-bit samples in OW still have
/// their two words in big-endian order, and OB-coded wider samples are not swapped at all.
fn to_little_endian<P>(
    value: &dicom_core::value::Value<P>,
    mut bytes: Vec<u8>,
    bits: u16,
) -> Vec<u8> {
    use dicom_core::value::{PrimitiveValue, Value};
    match (value, bits) {
        (Value::Primitive(PrimitiveValue::U16(_)), 32) => {
            for c in bytes.chunks_exact_mut(4) {
                c.swap(0, 2);
                c.swap(1, 3);
            }
        }
        (Value::Primitive(PrimitiveValue::U8(_)), 16) => {
            bytes.chunks_exact_mut(2).for_each(|c| c.reverse())
        }
        (Value::Primitive(PrimitiveValue::U8(_)), 32) => {
            bytes.chunks_exact_mut(4).for_each(|c| c.reverse())
        }
        _ => {}
    }
    bytes
}

/// RLE Lossless (PS3.5 Annex G): per frame a 64-byte header of segment offsets, one PackBits
/// segment per byte plane, most significant byte first; output is interleaved little endian.
fn rle(obj: &DefaultDicomObject, h: &Header, output: Output) -> Result<Pixels, PixelError> {
    use dicom_core::value::Value;
    let elem = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    let Value::PixelSequence(seq) = elem.value() else {
        return Err(PixelError::Malformed(
            "RLE PixelData is not encapsulated".into(),
        ));
    };
    let fragments = seq.fragments();
    let frames = h.frames as usize;
    let joined;
    let per_frame: Vec<&[u8]> = if fragments.len() == frames {
        fragments.iter().map(|f| f.as_slice()).collect()
    } else if frames == 1 {
        joined = fragments.concat();
        vec![joined.as_slice()]
    } else {
        return Err(PixelError::Malformed(format!(
            "{} RLE fragments for {frames} frames",
            fragments.len()
        )));
    };
    let bps = h.bytes_per_sample();
    let spp = usize::from(h.samples);
    let ppf = h.pixels_per_frame();
    let segments = spp * bps;
    // PackBits expands two input bytes to at most 128: a frame that cannot hold its pixels is
    // refused before the output is allocated.
    for data in &per_frame {
        if (ppf as u128) * (segments as u128) > 64 * data.len() as u128 {
            return Err(PixelError::Malformed(
                "RLE frame too short for the image the header describes".into(),
            ));
        }
    }
    if spp == 1 && bps <= 2 && output == Output::Stored && !(h.signed && h.bits_stored < 16) {
        return rle_mono(&per_frame, h, bps);
    }
    let mut out = vec![0u8; h.total_samples()? * bps];
    let frame_bytes = ppf * spp * bps;
    let mut plane = vec![0u8; ppf];
    for (f, data) in per_frame.iter().enumerate() {
        let dst = &mut out[f * frame_bytes..(f + 1) * frame_bytes];
        for (seg, (start, end)) in rle_segments(data, segments)?.into_iter().enumerate() {
            packbits(&data[start..end], &mut plane)?;
            let (s, byte_msb) = (seg / bps, seg % bps);
            let byte_le = bps - 1 - byte_msb;
            let at = s * bps + byte_le;
            for (d, b) in dst.chunks_exact_mut(spp * bps).zip(&plane) {
                d[at] = *b;
            }
        }
    }
    h.finish(&out, output)
}

/// Offsets of the segments of one RLE frame, checked.
fn rle_segments(data: &[u8], segments: usize) -> Result<Vec<(usize, usize)>, PixelError> {
    if data.len() < 64 {
        return Err(PixelError::Malformed(
            "RLE frame shorter than its header".into(),
        ));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ]) as usize
    };
    if word(0) != segments {
        return Err(PixelError::Malformed(format!(
            "RLE frame has {} segments, the header needs {segments}",
            word(0)
        )));
    }
    (0..segments)
        .map(|seg| {
            let start = word(seg + 1);
            let end = if seg + 1 < segments {
                word(seg + 2)
            } else {
                data.len()
            };
            if start < 64 || start > end || end > data.len() {
                return Err(PixelError::Malformed(
                    "RLE segment offsets out of range".into(),
                ));
            }
            Ok((start, end))
        })
        .collect()
}

/// Single-sample 8/16-bit RLE straight into the typed output (the common CT/MR/CR case).
fn rle_mono(frames: &[&[u8]], h: &Header, bps: usize) -> Result<Pixels, PixelError> {
    let ppf = h.pixels_per_frame();
    let n = h.total_samples()?;
    let data = if bps == 1 {
        let mut out = vec![0u8; n];
        for (f, data) in frames.iter().enumerate() {
            let segs = rle_segments(data, 1)?;
            packbits(
                &data[segs[0].0..segs[0].1],
                &mut out[f * ppf..(f + 1) * ppf],
            )?;
        }
        if h.signed {
            Samples::I16(out.iter().map(|b| i16::from(*b as i8)).collect())
        } else {
            Samples::U8(out)
        }
    } else {
        let mut hi = vec![0u8; ppf];
        let mut lo = vec![0u8; ppf];
        let mut words: Vec<u16> = Vec::with_capacity(n);
        for data in frames {
            let segs = rle_segments(data, 2)?;
            packbits(&data[segs[0].0..segs[0].1], &mut hi)?;
            packbits(&data[segs[1].0..segs[1].1], &mut lo)?;
            words.extend(
                hi.iter()
                    .zip(&lo)
                    .map(|(a, b)| u16::from_be_bytes([*a, *b])),
            );
        }
        if h.signed {
            Samples::I16(words.into_iter().map(|w| w as i16).collect())
        } else {
            Samples::U16(words)
        }
    };
    Ok(Pixels {
        frames: h.frames,
        rows: h.rows,
        columns: h.columns,
        samples_per_pixel: h.samples,
        photometric_interpretation: h.photometric.clone(),
        data,
    })
}

/// PackBits into exactly `out.len()` bytes.
fn packbits(mut src: &[u8], out: &mut [u8]) -> Result<(), PixelError> {
    let mut o = 0;
    while o < out.len() {
        let Some((&n, rest)) = src.split_first() else {
            return Err(PixelError::Malformed("RLE segment ends early".into()));
        };
        src = rest;
        let n = n as i8;
        if n >= 0 {
            let len = n as usize + 1;
            if src.len() < len || o + len > out.len() {
                return Err(PixelError::Malformed("RLE literal run overflows".into()));
            }
            out[o..o + len].copy_from_slice(&src[..len]);
            src = &src[len..];
            o += len;
        } else if n != -128 {
            let len = 1 - n as isize;
            let len = len as usize;
            let Some((&b, rest)) = src.split_first() else {
                return Err(PixelError::Malformed("RLE replicate run ends early".into()));
            };
            src = rest;
            if o + len > out.len() {
                return Err(PixelError::Malformed("RLE replicate run overflows".into()));
            }
            out[o..o + len].fill(b);
            o += len;
        }
    }
    Ok(())
}

fn samples_from_le(le: &[u8], n: usize, h: &Header, output: Output) -> Result<Samples, PixelError> {
    let bps = if h.bits_allocated == 1 {
        1
    } else {
        h.bytes_per_sample()
    };
    if le.len() < n * bps {
        return Err(PixelError::Malformed(
            "pixel data shorter than the header promises".into(),
        ));
    }
    let shift = 32 - u32::from(h.bits_stored);
    // Sign-extends a stored value from BitsStored bits.
    let signed = |v: u32| -> i32 { ((v << shift) as i32) >> shift };
    let raw = |i: usize| -> u32 {
        let b = &le[i * bps..(i + 1) * bps];
        match bps {
            1 => u32::from(b[0]),
            2 => u32::from(u16::from_le_bytes([b[0], b[1]])),
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    };
    let value = |i: usize| -> f64 {
        if h.signed {
            f64::from(signed(raw(i)))
        } else {
            f64::from(raw(i))
        }
    };
    Ok(match output {
        Output::Rescaled => Samples::F32(
            (0..n)
                .map(|i| (value(i) * h.slope + h.intercept) as f32)
                .collect(),
        ),
        Output::Stored => match (bps, h.signed) {
            (1, false) => Samples::U8(le[..n].to_vec()),
            (1, true) => Samples::I16((0..n).map(|i| signed(raw(i)) as i16).collect()),
            (2, false) => Samples::U16(
                le[..2 * n]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            (2, true) if h.bits_stored == 16 => Samples::I16(
                le[..2 * n]
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            (2, true) => Samples::I16((0..n).map(|i| signed(raw(i)) as i16).collect()),
            (_, false) => Samples::U32((0..n).map(raw).collect()),
            (_, true) => Samples::I32((0..n).map(|i| signed(raw(i))).collect()),
        },
    })
}
