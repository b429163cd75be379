//! Canonical preprocessing: named, documented ways to turn a record into a model's input, so
//! that the program that trains a model and the program that scores it later (the hospital's
//! audit runner, `runners/onnx-audit`) feed the graph the same numbers from the same record.
//!
//! A signed trainer predicate names its preprocessing (`input.kind`); each kind here is frozen
//! once published: a change of behaviour is a new kind (`grey-v2`), never an edit of this one.

use crate::RecordMeta;

/// The name of [`grey_v1`] in a predicate's audit declaration.
pub const GREY_V1: &str = "grey-v1";

/// `grey-v1`: a record as one normalised `side x side` grey image, row-major, the reference
/// trainer's input (`trainers/lesion-classifier`). Step by step, with `[frames, rows, columns,
/// samples]` taken from `meta.shape` and `pixels` the fetched values as `f32` (frame-major, then
/// row, column, sample; a value missing from `pixels` counts as 0):
///
/// 1. **Middle frame**: frame `frames / 2` (integer division) only.
/// 2. **Colour averaged**: each pixel is the mean of its `samples` values.
/// 3. **Rescale**: `v * rescale_slope + rescale_intercept` (attributes `rescale_slope`, default
///    1, and `rescale_intercept`, default 0; all arithmetic in `f32`).
/// 4. **Window** `[lo, hi]`: from every 7th pixel of the rescaled frame (indices 0, 7, 14, …),
///    sorted, the quantile `q` is the value at index `floor((n - 1) * q)` (0 for an empty frame).
///    The record's own window (`window_center` c, `window_width` w, first values) is used when
///    `w > 1` and it frames the image: `c - w/2 <= q(0.25)` and `c + w/2 >= q(0.75)`; otherwise
///    the robust window `[q(0.01), q(0.99)]`. Each pixel becomes `(v - lo) / max(hi - lo,
///    0.001)`, clamped to `[0, 1]`.
/// 5. **Area resize** to `side x side`: source pixel `(r, c)` falls in target cell
///    `(r * side / rows, c * side / columns)` (integer division); each cell is the mean of the
///    pixels that fall in it, 0 when none does.
/// 6. **Bone and air suppression**: with `body` the resized values above 0.1, nothing more
///    happens when fewer than 16 are; else with `med` the value at index `len / 2` of `body`
///    sorted, every value below `0.5 * med` or above `1.6 * med` becomes `med`, then every
///    value becomes `(v - med) / max(sd, 0.001)` where `sd` is the root of the mean of
///    `(v - med)^2` over all `side * side` values.
///
/// Returns `side * side` values (none when `side` is 0).
pub fn grey_v1(meta: &RecordMeta, pixels: &[f32], side: usize) -> Vec<f32> {
    if side == 0 {
        return Vec::new();
    }
    let [frames, rows, cols, samples] = meta.shape;
    let frame = frames / 2;
    let plane = rows * cols * samples;
    let start = frame * plane;
    let slope = meta.attr_f64("rescale_slope").unwrap_or(1.0) as f32;
    let intercept = meta.attr_f64("rescale_intercept").unwrap_or(0.0) as f32;
    let mut grey: Vec<f32> = (0..rows * cols)
        .map(|p| {
            let s: f32 = (0..samples)
                .map(|c| pixels.get(start + p * samples + c).copied().unwrap_or(0.0))
                .sum();
            s / samples as f32 * slope + intercept
        })
        .collect();
    let mut sorted: Vec<f32> = grey.iter().step_by(7).copied().collect();
    sorted.sort_by(f32::total_cmp);
    let pick = |q: f32| {
        sorted
            .get(((sorted.len() as f32 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let robust = (pick(0.01), pick(0.99));
    // The record's own window when it frames the image (most of the middle of the intensity
    // distribution inside it); a window that clips most of the anatomy is ignored in favour of
    // a robust percentile window.
    let (lo, hi) = match (
        meta.attr_f64("window_center"),
        meta.attr_f64("window_width"),
    ) {
        (Some(c), Some(w)) if w > 1.0 => {
            let (lo, hi) = ((c - w / 2.0) as f32, (c + w / 2.0) as f32);
            if lo <= pick(0.25) && hi >= pick(0.75) {
                (lo, hi)
            } else {
                robust
            }
        }
        _ => robust,
    };
    let span = (hi - lo).max(1e-3);
    for v in &mut grey {
        *v = ((*v - lo) / span).clamp(0.0, 1.0);
    }
    let mut img = resize_area(&grey, rows, cols, side);
    suppress_bone_and_air(&mut img);
    img
}

/// Flattens what is much brighter (bone, burned-in text) or much darker (air) than the soft
/// tissue to the tissue level, then centres and scales by the tissue's spread: what remains
/// is soft-tissue texture, where a lesion shows.
fn suppress_bone_and_air(img: &mut [f32]) {
    let mut body: Vec<f32> = img.iter().copied().filter(|&v| v > 0.1).collect();
    if body.len() < 16 {
        return;
    }
    body.sort_by(f32::total_cmp);
    let med = body[body.len() / 2];
    let (low, high) = (med * 0.5, med * 1.6);
    for v in img.iter_mut() {
        if *v < low || *v > high {
            *v = med;
        }
    }
    let n = img.len() as f32;
    let var = img.iter().map(|v| (v - med) * (v - med)).sum::<f32>() / n;
    let sd = var.sqrt().max(1e-3);
    for v in img.iter_mut() {
        *v = (*v - med) / sd;
    }
}

/// Box-filter resize to `side x side` (every source pixel contributes to its target cell;
/// `side` is at least 1).
fn resize_area(src: &[f32], rows: usize, cols: usize, side: usize) -> Vec<f32> {
    let mut out = vec![0f32; side * side];
    let mut count = vec![0u32; side * side];
    for r in 0..rows {
        let tr = r * side / rows.max(1);
        for c in 0..cols {
            let tc = c * side / cols.max(1);
            out[tr * side + tc] += src[r * cols + c];
            count[tr * side + tc] += 1;
        }
    }
    for (o, n) in out.iter_mut().zip(count) {
        if n > 0 {
            *o /= n as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure
    use super::*;
    use rapha_protocol::{Dtype, Split};
    use serde_json::json;

    fn meta(shape: [usize; 4], attributes: serde_json::Value) -> RecordMeta {
        RecordMeta {
            index: 0,
            instance: String::new(),
            series: String::new(),
            study: String::new(),
            patient: String::new(),
            split: Split::Validation,
            label: None,
            modality: "CT".into(),
            dtype: Dtype::U16,
            shape,
            attributes: attributes.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn area_resize_averages_each_cell() {
        // 4x4 -> 2x2: each target cell is the mean of a 2x2 block.
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(resize_area(&src, 4, 4, 2), vec![2.5, 4.5, 10.5, 12.5]);
        // Upscaling leaves cells no source pixel falls in at 0.
        assert_eq!(resize_area(&[1.0], 1, 1, 2), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn only_the_middle_frame_counts_and_colour_is_averaged() {
        // 3 frames of 2x2 RGB: frame 1 is the middle one. A flat frame windows to one value,
        // and with fewer than 16 body values nothing is suppressed.
        let m = meta([3, 2, 2, 3], json!({}));
        let mut px = vec![1000.0f32; 3 * 2 * 2 * 3];
        let mid = 2 * 2 * 3;
        for (i, v) in px[mid..2 * mid].iter_mut().enumerate() {
            // Pixel p's three samples average to 10 * p.
            *v = [0.0, 10.0, 20.0][i % 3] + 10.0 * (i / 3) as f32 - 10.0;
        }
        let out = grey_v1(&m, &px, 2);
        // Sampled values (every 7th of the 4 pixels: pixel 0 only) give a window of width
        // 0.001 at 0: pixel 0 maps to 0, the others clamp to 1.
        assert_eq!(out, vec![0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn rescale_and_the_records_own_window_apply_when_it_frames_the_image() {
        let (rows, cols) = (8, 8);
        let px: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        // Rescaled values 2v - 100 span -100..26; the window [-120, 80] frames the image.
        let framed = meta(
            [1, rows, cols, 1],
            json!({"rescale_slope": 2.0, "rescale_intercept": -100.0,
                   "window_center": -20.0, "window_width": 200.0}),
        );
        let out = grey_v1(&framed, &px, 8);
        assert_eq!(out.len(), 64);
        // 64 body values: suppressed and standardised around the median, so the record's own
        // window changes the result compared with the robust window of a window that clips.
        let clipping = meta(
            [1, rows, cols, 1],
            json!({"rescale_slope": 2.0, "rescale_intercept": -100.0,
                   "window_center": 0.0, "window_width": 2.0}),
        );
        let robust = meta(
            [1, rows, cols, 1],
            json!({"rescale_slope": 2.0, "rescale_intercept": -100.0}),
        );
        assert_eq!(grey_v1(&clipping, &px, 8), grey_v1(&robust, &px, 8));
        assert_ne!(out, grey_v1(&robust, &px, 8));
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn short_pixels_count_as_zero_and_side_zero_is_empty() {
        let m = meta([1, 4, 4, 1], json!({}));
        assert_eq!(grey_v1(&m, &[], 4), vec![0.0; 16]);
        assert!(grey_v1(&m, &[1.0; 16], 0).is_empty());
    }
}
