//! Native (uncompressed) pixel data in every native transfer syntax.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::header::Header;
use super::{Output, PixelError, Pixels};

/// Native (uncompressed) pixel data: the element's bytes in machine order (dicom-rs has already
/// swapped big-endian words), reordered to interleaved samples.
pub(super) fn native(
    obj: &DefaultDicomObject,
    h: &Header,
    output: Output,
) -> Result<Pixels, PixelError> {
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
