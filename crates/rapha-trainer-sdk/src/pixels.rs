use std::io::Read;

use rapha_protocol::Dtype;

use crate::client::{eof_is_closed, read_payload};
use crate::SdkError;

/// Decoded pixels as a typed array, frame-major, then row, column, sample.
// A deliberate duplicate (issue 23): rapha-dicom's `pixels::Samples`
// (crates/rapha-dicom/src/pixels/mod.rs) has the same six sample types and per-type accessors.
// They stay two across a trust boundary: this SDK is linked into the AI company's trainers and
// depends on rapha-protocol alone, so it must not link rapha-dicom, the node's parser of the
// hospital's DICOM; the protocol's `Dtype` is the contract between them.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl Pixels {
    /// Decodes little-endian `bytes` of `dtype`.
    ///
    /// # Errors
    /// [`SdkError::BadFrame`] if the length is not a multiple of the value size.
    pub fn from_le_bytes(dtype: Dtype, bytes: &[u8]) -> Result<Self, SdkError> {
        if bytes.len() % dtype.size() != 0 {
            return Err(SdkError::BadFrame(format!(
                "{} payload bytes is not a whole number of {dtype} values",
                bytes.len()
            )));
        }
        Ok(match dtype {
            Dtype::U8 => Self::U8(bytes.to_vec()),
            Dtype::U16 => Self::U16(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::I16 => Self::I16(
                bytes
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::U32 => Self::U32(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::I32 => Self::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F32 => Self::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        })
    }

    /// Decodes little-endian `bytes` of `dtype`, taking ownership (no copy for `u8`).
    ///
    /// # Errors
    /// As [`Pixels::from_le_bytes`].
    pub fn from_le_vec(dtype: Dtype, bytes: Vec<u8>) -> Result<Self, SdkError> {
        match dtype {
            Dtype::U8 => Ok(Self::U8(bytes)),
            _ => Self::from_le_bytes(dtype, &bytes),
        }
    }

    /// Reads `n` little-endian payload bytes of `dtype` from `r` straight into a typed array:
    /// on a little-endian machine the bytes land in their final place, with no second pass
    /// and no second allocation.
    ///
    /// # Errors
    /// [`SdkError::PayloadTooLarge`] if `n` is over the protocol's limit, [`SdkError::BadFrame`]
    /// if it is not a whole number of values (in both cases nothing is read), [`SdkError::Closed`]
    /// if the stream ends first, an I/O error.
    pub fn read_le(dtype: Dtype, r: &mut impl Read, n: usize) -> Result<Self, SdkError> {
        if n > crate::MAX_PAYLOAD {
            return Err(SdkError::PayloadTooLarge(n, crate::MAX_PAYLOAD));
        }
        if n % dtype.size() != 0 {
            return Err(SdkError::BadFrame(format!(
                "{n} payload bytes is not a whole number of {dtype} values"
            )));
        }
        if cfg!(target_endian = "big") || dtype == Dtype::U8 {
            return Self::from_le_vec(dtype, read_payload(r, n)?);
        }
        let values = n / dtype.size();
        let mut p = match dtype {
            Dtype::U8 => Self::U8(vec![0; values]),
            Dtype::U16 => Self::U16(vec![0; values]),
            Dtype::I16 => Self::I16(vec![0; values]),
            Dtype::U32 => Self::U32(vec![0; values]),
            Dtype::I32 => Self::I32(vec![0; values]),
            Dtype::F32 => Self::F32(vec![0.0; values]),
        };
        let bytes: &mut [u8] = match &mut p {
            Self::U8(v) => v,
            Self::U16(v) => bytemuck::cast_slice_mut(v),
            Self::I16(v) => bytemuck::cast_slice_mut(v),
            Self::U32(v) => bytemuck::cast_slice_mut(v),
            Self::I32(v) => bytemuck::cast_slice_mut(v),
            Self::F32(v) => bytemuck::cast_slice_mut(v),
        };
        r.read_exact(bytes).map_err(eof_is_closed)?;
        Ok(p)
    }

    /// The values as little-endian bytes, as they came on the wire (the inverse of
    /// [`Pixels::from_le_bytes`]).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn le<T: bytemuck::Pod, const N: usize>(v: &[T], each: fn(&T) -> [u8; N]) -> Vec<u8> {
            if cfg!(target_endian = "little") {
                bytemuck::cast_slice(v).to_vec()
            } else {
                v.iter().flat_map(each).collect()
            }
        }
        match self {
            Self::U8(v) => v.clone(),
            Self::U16(v) => le(v, |x| x.to_le_bytes()),
            Self::I16(v) => le(v, |x| x.to_le_bytes()),
            Self::U32(v) => le(v, |x| x.to_le_bytes()),
            Self::I32(v) => le(v, |x| x.to_le_bytes()),
            Self::F32(v) => le(v, |x| x.to_le_bytes()),
        }
    }

    /// Number of values.
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

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value as `f32` (exact for 8- and 16-bit types; 32-bit integers round to the
    /// nearest `f32`).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Self::U16(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Self::I16(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Self::U32(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Self::F32(v) => v.clone(),
        }
    }
}

/// One fetched record: its index, shape `[frames, rows, columns, samples]` and pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub index: u32,
    pub shape: [usize; 4],
    pub pixels: Pixels,
}

impl Record {
    /// Frames, rows, columns, samples per pixel.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        (self.shape[0], self.shape[1], self.shape[2], self.shape[3])
    }
}
