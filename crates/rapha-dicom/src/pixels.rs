//! Pixel decode (runs inside the enclave runtime only; the cohort path never decodes pixels).
//!
//! Supported transfer syntaxes: every native one (implicit/explicit VR little endian, explicit
//! VR big endian), deflated explicit VR little endian, RLE Lossless, JPEG baseline (process 1),
//! extended (2 & 4) and lossless (14, 14 SV1), all in pure Rust. JPEG-LS, JPEG 2000, JPEG XL,
//! HTJ2K and video are reported as [`PixelError::Unsupported`]: their decoders need a C/C++
//! library build (CharLS, OpenJPEG) that is not part of this crate.

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

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
}

/// What numbers the caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// Stored values in their natural type: u8 (BitsAllocated ≤ 8), u16 or i16 (16, by
    /// PixelRepresentation), f32 for 32/64-bit data.
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
    F32(Vec<f32>),
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
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

/// Decodes a Part 10 byte buffer (with or without the 128-byte preamble).
///
/// # Errors
/// [`PixelError::Unsupported`] for a transfer syntax without a decoder here,
/// [`PixelError::Malformed`] for anything broken.
pub fn decode(bytes: &[u8], output: Output) -> Result<Pixels, PixelError> {
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else {
        bytes
    };
    let obj = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| PixelError::Malformed(e.to_string()))?;
    decode_object(&obj, output)
}

/// Decodes the pixel data of an opened object.
///
/// # Errors
/// As [`decode`].
pub fn decode_object(obj: &DefaultDicomObject, output: Output) -> Result<Pixels, PixelError> {
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    match TransferSyntaxRegistry.get(&ts_uid) {
        Some(ts) if ts.can_decode_all() => {}
        _ => return Err(PixelError::Unsupported(ts_uid)),
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(PixelError::Malformed("no PixelData element".into()));
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
