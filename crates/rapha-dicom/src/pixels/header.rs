//! The pixel-describing attributes of an object, checked, and the conversion of decoded
//! little-endian bytes to the caller's [`Output`].

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::{Output, PixelError, Pixels, Samples};

/// Maximum decoded size accepted (samples), so a hostile header cannot ask for terabytes.
const MAX_SAMPLES: usize = 1 << 31;

pub(super) struct Header {
    pub(super) rows: u32,
    pub(super) columns: u32,
    pub(super) frames: u32,
    pub(super) samples: u16,
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    pub(super) planar: bool,
    pub(super) photometric: String,
    pub(super) slope: f64,
    pub(super) intercept: f64,
}

impl Header {
    pub(super) fn read(obj: &DefaultDicomObject) -> Result<Self, PixelError> {
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

    pub(super) fn pixels_per_frame(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    pub(super) fn total_samples(&self) -> Result<usize, PixelError> {
        let n =
            self.pixels_per_frame() as u128 * u128::from(self.frames) * u128::from(self.samples);
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_SAMPLES)
            .ok_or_else(|| PixelError::Malformed("image too large".into()))
    }

    pub(super) fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated.div_ceil(8))
    }

    /// Refuses, before any buffer is allocated, pixels whose decoded form would pass `limit`.
    pub(super) fn check_output(&self, output: Output, limit: usize) -> Result<(), PixelError> {
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

    pub(super) fn finish(&self, le: &[u8], output: Output) -> Result<Pixels, PixelError> {
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
