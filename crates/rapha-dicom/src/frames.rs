//! Enhanced and multi-frame objects (PS3.3 C.7.6.16, Multi-frame Functional Groups): what an
//! enhanced CT, MR or XA object holds per frame, read into the record (**I1**: the same
//! allow-listed, numeric attributes as a single-frame object's, never anything else from the
//! groups).
//!
//! A value of a frame comes from that frame's item of the Per-frame Functional Groups
//! Sequence, else from the Shared Functional Groups Sequence. The record's top-level field is
//! the object's own attribute when it has one, else the shared group's, else the value every
//! frame has in common; a value that differs between frames is only in [`FrameAttrs`].
//!
//! A cine object without functional groups (XA, XRF; PS3.3 C.7.6.5) times its frames with a
//! FrameTimeVector: each frame's increment is read into its [`FrameAttrs`] when the vector has
//! one value per frame ([`with_frame_times`]); a multi-frame CR or DX object's frames share
//! every value, so its record has no per-frame list.

use dicom_dictionary_std::tags;
use serde::{Deserialize, Serialize};

use crate::attrs::{u32_of, Attrs, TagU32};

const SHARED: TagU32 = u32_of(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
const PER_FRAME: TagU32 = u32_of(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
const PIXEL_MEASURES: TagU32 = u32_of(tags::PIXEL_MEASURES_SEQUENCE);
const PLANE_POSITION: TagU32 = u32_of(tags::PLANE_POSITION_SEQUENCE);
const PLANE_ORIENTATION: TagU32 = u32_of(tags::PLANE_ORIENTATION_SEQUENCE);
const PIXEL_VALUE_TRANSFORMATION: TagU32 = u32_of(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE);
const FRAME_VOI_LUT: TagU32 = u32_of(tags::FRAME_VOILUT_SEQUENCE);
const PIXEL_SPACING: TagU32 = u32_of(tags::PIXEL_SPACING);
const SLICE_THICKNESS: TagU32 = u32_of(tags::SLICE_THICKNESS);
const IMAGE_POSITION_PATIENT: TagU32 = u32_of(tags::IMAGE_POSITION_PATIENT);
const IMAGE_ORIENTATION_PATIENT: TagU32 = u32_of(tags::IMAGE_ORIENTATION_PATIENT);
const RESCALE_INTERCEPT: TagU32 = u32_of(tags::RESCALE_INTERCEPT);
const RESCALE_SLOPE: TagU32 = u32_of(tags::RESCALE_SLOPE);
const RESCALE_TYPE: TagU32 = u32_of(tags::RESCALE_TYPE);
const WINDOW_CENTER: TagU32 = u32_of(tags::WINDOW_CENTER);
const WINDOW_WIDTH: TagU32 = u32_of(tags::WINDOW_WIDTH);
const FRAME_TIME_VECTOR: TagU32 = u32_of(tags::FRAME_TIME_VECTOR);

/// Frames whose attributes a record lists at most: a record of a longer object lists none
/// (its top-level values are still those every frame shares).
pub const MAX_FRAMES: usize = 4096;

/// What a trainer needs of one frame of a multi-frame object with functional groups.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_position_patient: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_orientation_patient: Option<[f64; 6]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_spacing: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_thickness: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale_slope: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale_intercept: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_center: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_width: Option<Vec<f64>>,
    /// Milliseconds since the previous frame (0 for the first), from a cine object's
    /// FrameTimeVector (XA, XRF, US multi-frame: PS3.3 C.7.6.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_time_increment: Option<f64>,
}

/// The functional groups of an object, if it has them.
pub struct Groups<'a> {
    shared: Option<&'a Attrs>,
    per_frame: &'a [Attrs],
}

impl<'a> Groups<'a> {
    /// The object's functional groups; `None` when it has neither sequence.
    #[must_use]
    pub fn of(attrs: &'a Attrs) -> Option<Self> {
        let shared = attrs.items(SHARED).first();
        let per_frame = attrs.items(PER_FRAME);
        (shared.is_some() || !per_frame.is_empty()).then_some(Self { shared, per_frame })
    }

    /// Each frame's attributes, at most `frames` of them (a header may claim more items than
    /// frames; the extra ones describe nothing that is fed). Empty without per-frame items.
    #[must_use]
    pub fn frames(&self, frames: u32) -> Vec<FrameAttrs> {
        let n = usize::try_from(frames).unwrap_or(usize::MAX);
        self.per_frame
            .iter()
            .take(n)
            .map(|item| frame_attrs(Some(item), self.shared))
            .collect()
    }

    /// The values of the shared group alone (what every frame has unless its own item says
    /// otherwise).
    #[must_use]
    pub fn shared(&self) -> FrameAttrs {
        frame_attrs(None, self.shared)
    }

    /// The shared group's `RescaleType`, when it is a code string.
    #[must_use]
    pub fn rescale_type(&self) -> Option<&'a str> {
        self.shared
            .and_then(|s| s.items(PIXEL_VALUE_TRANSFORMATION).first())
            .and_then(|m| m.text(RESCALE_TYPE))
    }
}

fn frame_attrs(item: Option<&Attrs>, shared: Option<&Attrs>) -> FrameAttrs {
    let get = |seq: TagU32, t: TagU32| -> Option<Vec<f64>> {
        macro_value(item, seq, t).or_else(|| macro_value(shared, seq, t))
    };
    FrameAttrs {
        image_position_patient: fixed(get(PLANE_POSITION, IMAGE_POSITION_PATIENT)),
        image_orientation_patient: fixed(get(PLANE_ORIENTATION, IMAGE_ORIENTATION_PATIENT)),
        pixel_spacing: fixed(get(PIXEL_MEASURES, PIXEL_SPACING)),
        slice_thickness: first(get(PIXEL_MEASURES, SLICE_THICKNESS)),
        rescale_slope: first(get(PIXEL_VALUE_TRANSFORMATION, RESCALE_SLOPE)),
        rescale_intercept: first(get(PIXEL_VALUE_TRANSFORMATION, RESCALE_INTERCEPT)),
        window_center: get(FRAME_VOI_LUT, WINDOW_CENTER),
        window_width: get(FRAME_VOI_LUT, WINDOW_WIDTH),
        frame_time_increment: None,
    }
}

/// `frames` with each frame's time increment from the object's FrameTimeVector, when it has
/// one value per frame (a vector of another length describes no frame reliably and is left
/// out). Without functional groups, `frames` is empty and becomes one entry per frame.
#[must_use]
pub fn with_frame_times(attrs: &Attrs, mut frames: Vec<FrameAttrs>, count: u32) -> Vec<FrameAttrs> {
    let Some(vector) = attrs.f64s(FRAME_TIME_VECTOR) else {
        return frames;
    };
    if u32::try_from(vector.len()).ok() != Some(count) || vector.len() > MAX_FRAMES {
        return frames;
    }
    if frames.is_empty() {
        frames = vec![FrameAttrs::default(); vector.len()];
    }
    if frames.len() == vector.len() {
        for (f, t) in frames.iter_mut().zip(vector) {
            f.frame_time_increment = Some(t);
        }
    }
    frames
}

fn macro_value(group: Option<&Attrs>, seq: TagU32, t: TagU32) -> Option<Vec<f64>> {
    group?.items(seq).first()?.f64s(t)
}

fn fixed<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    v.and_then(|v| <[f64; N]>::try_from(v).ok())
}

fn first(v: Option<Vec<f64>>) -> Option<f64> {
    v.and_then(|v| v.first().copied())
}

/// What a record lists of `frames`: only what differs between them (a value every frame shares
/// is left out: the record has it at top level); empty when nothing differs, or when there are
/// more than [`MAX_FRAMES`] (the record must fit a `list` page).
#[must_use]
pub fn varying(mut all: Vec<FrameAttrs>) -> Vec<FrameAttrs> {
    if all.len() > MAX_FRAMES {
        return Vec::new();
    }
    macro_rules! drop_common {
        ($($field:ident),*) => {$(
            if common(&all, |f| f.$field.clone()).is_some() {
                all.iter_mut().for_each(|f| f.$field = None);
            }
        )*};
    }
    drop_common!(
        image_position_patient,
        image_orientation_patient,
        pixel_spacing,
        slice_thickness,
        rescale_slope,
        rescale_intercept,
        window_center,
        window_width,
        frame_time_increment
    );
    if all.iter().all(|f| *f == FrameAttrs::default()) {
        all.clear();
    }
    all
}

/// The value all `frames` have in common through `f`, if every frame has the same one.
pub fn common<T: PartialEq + Clone>(
    frames: &[FrameAttrs],
    f: impl Fn(&FrameAttrs) -> Option<T>,
) -> Option<T> {
    let mut it = frames.iter().map(f);
    let v = it.next()??;
    it.all(|o| o.as_ref() == Some(&v)).then_some(v)
}
