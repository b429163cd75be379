//! JPEG (processes 1, 2 & 4, 14, 14 SV1) through dicom-pixeldata / jpeg-decoder, after each
//! image's own frame header has been checked against the DICOM header.

use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use super::header::Header;
use super::{Output, PixelError, Pixels, Samples};

/// The JPEG decoder sizes its buffers from each image's own frame header (SOF), not from the
/// DICOM header: an image that claims more rows, columns or components than the DICOM header
/// is refused before it is decoded. Every SOI in the fragments is followed to its first SOF
/// (the decoder can be made to start at any of them), skipping marker segments by length as
/// the decoder does.
pub(super) fn check_jpeg_frames(obj: &DefaultDicomObject, h: &Header) -> Result<(), PixelError> {
    let data: Vec<u8> = super::fragments(obj, "JPEG")?.concat();
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

pub(super) fn decode_inner(obj: &DefaultDicomObject, output: Output) -> Result<Pixels, PixelError> {
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
