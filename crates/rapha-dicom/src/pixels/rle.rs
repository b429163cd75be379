//! RLE Lossless, decoded here.

use dicom_object::DefaultDicomObject;

use super::header::Header;
use super::{Output, PixelError, Pixels, Samples};

/// RLE Lossless (PS3.5 Annex G): per frame a 64-byte header of segment offsets, one PackBits
/// segment per byte plane, most significant byte first; output is interleaved little endian.
pub(super) fn rle(
    obj: &DefaultDicomObject,
    h: &Header,
    output: Output,
) -> Result<Pixels, PixelError> {
    // PS3.5 A.4.2: each RLE frame is one fragment (or, for one frame, all of them).
    let streams = super::frame_streams(
        super::fragments(obj, "RLE")?,
        h.frames as usize,
        "RLE",
        |_| true,
    )?;
    let per_frame: Vec<&[u8]> = streams.iter().map(|f| &**f).collect();
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
