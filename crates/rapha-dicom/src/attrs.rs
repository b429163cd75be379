//! One view of a DICOM dataset's header, whether it came from a Part 10 file or from DICOM JSON
//! (PS3.18 Annex F). Record extraction, exclusions and identifier collection read only this, so
//! both sources go through exactly the same checks.

use std::collections::BTreeMap;

use dicom_core::header::{HasLength, Header};
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;

/// A DICOM tag as `(group << 16) | element`.
pub type TagU32 = u32;

/// The tags this crate reads by name, taken from the standard data dictionary
/// (`dicom_dictionary_std::tags`) as [`TagU32`] so they can be matched on; any other dictionary
/// tag converts with [`u32_of`].
pub mod tag {
    pub use super::u32_of;
    use super::TagU32;
    use dicom_dictionary_std::tags;

    pub const MEDIA_STORAGE_SOP_INSTANCE_UID: TagU32 = u32_of(tags::MEDIA_STORAGE_SOP_INSTANCE_UID);
    pub const TRANSFER_SYNTAX_UID: TagU32 = u32_of(tags::TRANSFER_SYNTAX_UID);
    pub const SPECIFIC_CHARACTER_SET: TagU32 = u32_of(tags::SPECIFIC_CHARACTER_SET);
    pub const IMAGE_TYPE: TagU32 = u32_of(tags::IMAGE_TYPE);
    pub const SOP_CLASS_UID: TagU32 = u32_of(tags::SOP_CLASS_UID);
    pub const SOP_INSTANCE_UID: TagU32 = u32_of(tags::SOP_INSTANCE_UID);
    pub const STUDY_DATE: TagU32 = u32_of(tags::STUDY_DATE);
    pub const SERIES_DATE: TagU32 = u32_of(tags::SERIES_DATE);
    pub const ACQUISITION_DATE: TagU32 = u32_of(tags::ACQUISITION_DATE);
    pub const CONTENT_DATE: TagU32 = u32_of(tags::CONTENT_DATE);
    pub const ACCESSION_NUMBER: TagU32 = u32_of(tags::ACCESSION_NUMBER);
    pub const MODALITY: TagU32 = u32_of(tags::MODALITY);
    pub const MODALITIES_IN_STUDY: TagU32 = u32_of(tags::MODALITIES_IN_STUDY);
    pub const MANUFACTURER: TagU32 = u32_of(tags::MANUFACTURER);
    pub const INSTITUTION_NAME: TagU32 = u32_of(tags::INSTITUTION_NAME);
    pub const INSTITUTION_ADDRESS: TagU32 = u32_of(tags::INSTITUTION_ADDRESS);
    pub const STUDY_DESCRIPTION: TagU32 = u32_of(tags::STUDY_DESCRIPTION);
    pub const SERIES_DESCRIPTION: TagU32 = u32_of(tags::SERIES_DESCRIPTION);
    pub const MANUFACTURER_MODEL_NAME: TagU32 = u32_of(tags::MANUFACTURER_MODEL_NAME);
    pub const REFERENCED_STUDY_SEQUENCE: TagU32 = u32_of(tags::REFERENCED_STUDY_SEQUENCE);
    pub const REFERENCED_SOP_INSTANCE_UID: TagU32 = u32_of(tags::REFERENCED_SOP_INSTANCE_UID);
    pub const PATIENT_NAME: TagU32 = u32_of(tags::PATIENT_NAME);
    pub const PATIENT_ID: TagU32 = u32_of(tags::PATIENT_ID);
    pub const ISSUER_OF_PATIENT_ID: TagU32 = u32_of(tags::ISSUER_OF_PATIENT_ID);
    pub const PATIENT_BIRTH_DATE: TagU32 = u32_of(tags::PATIENT_BIRTH_DATE);
    pub const PATIENT_SEX: TagU32 = u32_of(tags::PATIENT_SEX);
    // Retired in the standard, still written by older systems: the identifier scan must see it.
    #[allow(deprecated)]
    pub const OTHER_PATIENT_IDS: TagU32 = u32_of(tags::OTHER_PATIENT_I_DS);
    pub const OTHER_PATIENT_NAMES: TagU32 = u32_of(tags::OTHER_PATIENT_NAMES);
    pub const PATIENT_AGE: TagU32 = u32_of(tags::PATIENT_AGE);
    pub const PATIENT_ADDRESS: TagU32 = u32_of(tags::PATIENT_ADDRESS);
    pub const PATIENT_TELEPHONE_NUMBERS: TagU32 = u32_of(tags::PATIENT_TELEPHONE_NUMBERS);
    pub const BODY_PART_EXAMINED: TagU32 = u32_of(tags::BODY_PART_EXAMINED);
    pub const SLICE_THICKNESS: TagU32 = u32_of(tags::SLICE_THICKNESS);
    pub const PROTOCOL_NAME: TagU32 = u32_of(tags::PROTOCOL_NAME);
    pub const STUDY_INSTANCE_UID: TagU32 = u32_of(tags::STUDY_INSTANCE_UID);
    pub const SERIES_INSTANCE_UID: TagU32 = u32_of(tags::SERIES_INSTANCE_UID);
    pub const STUDY_ID: TagU32 = u32_of(tags::STUDY_ID);
    pub const IMAGE_POSITION_PATIENT: TagU32 = u32_of(tags::IMAGE_POSITION_PATIENT);
    pub const IMAGE_ORIENTATION_PATIENT: TagU32 = u32_of(tags::IMAGE_ORIENTATION_PATIENT);
    pub const FRAME_OF_REFERENCE_UID: TagU32 = u32_of(tags::FRAME_OF_REFERENCE_UID);
    pub const SLICE_LOCATION: TagU32 = u32_of(tags::SLICE_LOCATION);
    pub const IMAGE_COMMENTS: TagU32 = u32_of(tags::IMAGE_COMMENTS);
    pub const SAMPLES_PER_PIXEL: TagU32 = u32_of(tags::SAMPLES_PER_PIXEL);
    pub const PHOTOMETRIC_INTERPRETATION: TagU32 = u32_of(tags::PHOTOMETRIC_INTERPRETATION);
    pub const NUMBER_OF_FRAMES: TagU32 = u32_of(tags::NUMBER_OF_FRAMES);
    pub const FRAME_TIME: TagU32 = u32_of(tags::FRAME_TIME);
    pub const ROWS: TagU32 = u32_of(tags::ROWS);
    pub const COLUMNS: TagU32 = u32_of(tags::COLUMNS);
    pub const PIXEL_SPACING: TagU32 = u32_of(tags::PIXEL_SPACING);
    pub const BITS_ALLOCATED: TagU32 = u32_of(tags::BITS_ALLOCATED);
    pub const BITS_STORED: TagU32 = u32_of(tags::BITS_STORED);
    pub const HIGH_BIT: TagU32 = u32_of(tags::HIGH_BIT);
    pub const PIXEL_REPRESENTATION: TagU32 = u32_of(tags::PIXEL_REPRESENTATION);
    pub const BURNED_IN_ANNOTATION: TagU32 = u32_of(tags::BURNED_IN_ANNOTATION);
    pub const WINDOW_CENTER: TagU32 = u32_of(tags::WINDOW_CENTER);
    pub const WINDOW_WIDTH: TagU32 = u32_of(tags::WINDOW_WIDTH);
    pub const RESCALE_INTERCEPT: TagU32 = u32_of(tags::RESCALE_INTERCEPT);
    pub const RESCALE_SLOPE: TagU32 = u32_of(tags::RESCALE_SLOPE);
    pub const RESCALE_TYPE: TagU32 = u32_of(tags::RESCALE_TYPE);
    pub const ADMISSION_ID: TagU32 = u32_of(tags::ADMISSION_ID);
    pub const REFERENCED_FRAME_OF_REFERENCE_UID: TagU32 =
        u32_of(tags::REFERENCED_FRAME_OF_REFERENCE_UID);
    pub const PIXEL_DATA: TagU32 = u32_of(tags::PIXEL_DATA);
}

/// A dictionary tag (`dicom_core::Tag`) as the [`TagU32`] attributes are keyed by.
pub const fn u32_of(t: Tag) -> TagU32 {
    // Lossless widening; `u32::from` is not `const`.
    ((t.0 as u32) << 16) | t.1 as u32
}

/// The value of one attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// No value (zero length, or a JSON element without `Value`).
    Empty,
    /// String or numeric values, as text (numbers in their shortest decimal form).
    /// Person names use the DICOM form `Alphabetic=Ideographic=Phonetic`.
    Text(Vec<String>),
    /// Sequence items.
    Items(Vec<Attrs>),
    /// Binary data (OB, OW, …, bulk data URIs, inline binary): never read by this crate.
    Binary,
}

/// One attribute: VR and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    /// The two-letter VR (`"PN"`, `"SQ"`, …).
    pub vr: [u8; 2],
    pub value: AttrValue,
}

impl Attr {
    /// The VR as text.
    pub fn vr_str(&self) -> &str {
        std::str::from_utf8(&self.vr).unwrap_or("??")
    }
}

/// A dataset header: attributes by tag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs {
    elems: BTreeMap<TagU32, Attr>,
}

impl Attrs {
    /// An empty dataset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an attribute (replacing any previous value).
    pub fn insert(&mut self, tag: TagU32, attr: Attr) {
        self.elems.insert(tag, attr);
    }

    /// Convenience for tests and builders: a text attribute.
    pub fn set_text(&mut self, tag: TagU32, vr: &str, values: &[&str]) {
        let mut v = [b'?'; 2];
        v.copy_from_slice(&vr.as_bytes()[..2.min(vr.len())]);
        self.insert(
            tag,
            Attr {
                vr: v,
                value: AttrValue::Text(values.iter().map(|s| (*s).to_owned()).collect()),
            },
        );
    }

    /// The attribute at `tag`.
    pub fn get(&self, tag: TagU32) -> Option<&Attr> {
        self.elems.get(&tag)
    }

    /// All attributes in tag order.
    pub fn iter(&self) -> impl Iterator<Item = (TagU32, &Attr)> + '_ {
        self.elems.iter().map(|(t, a)| (*t, a))
    }

    /// Number of attributes at this level.
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// True when there is no attribute.
    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    /// The text values at `tag`, trimmed of DICOM padding; empty when absent or not text.
    pub fn texts(&self, tag: TagU32) -> Vec<&str> {
        match self.elems.get(&tag).map(|a| &a.value) {
            Some(AttrValue::Text(v)) => v.iter().map(|s| trim_dicom(s)).collect(),
            _ => Vec::new(),
        }
    }

    /// The first non-empty text value at `tag`.
    pub fn text(&self, tag: TagU32) -> Option<&str> {
        self.texts(tag).into_iter().find(|s| !s.is_empty())
    }

    /// The first value at `tag` parsed as a finite f64.
    pub fn f64(&self, tag: TagU32) -> Option<f64> {
        self.text(tag).and_then(parse_f64)
    }

    /// All values at `tag` parsed as finite f64; `None` if any value does not parse.
    pub fn f64s(&self, tag: TagU32) -> Option<Vec<f64>> {
        let v = self.texts(tag);
        if v.is_empty() {
            return None;
        }
        v.into_iter().map(parse_f64).collect()
    }

    /// The first value at `tag` as an unsigned integer that fits `u32`.
    pub fn u32(&self, tag: TagU32) -> Option<u32> {
        let s = self.text(tag)?;
        s.parse::<u32>().ok().or_else(|| {
            // IS/DS values sometimes arrive as "512.0" from JSON numbers.
            let f = parse_f64(s)?;
            (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u32)
        })
    }

    /// The first value at `tag` as `u16`.
    pub fn u16(&self, tag: TagU32) -> Option<u16> {
        self.u32(tag).and_then(|v| u16::try_from(v).ok())
    }

    /// Sequence items at `tag`.
    pub fn items(&self, tag: TagU32) -> &[Attrs] {
        match self.elems.get(&tag).map(|a| &a.value) {
            Some(AttrValue::Items(v)) => v,
            _ => &[],
        }
    }

    /// Calls `f(tag, attr)` for every attribute, depth first through sequence items.
    pub fn walk(&self, f: &mut dyn FnMut(TagU32, &Attr)) {
        for (t, a) in &self.elems {
            f(*t, a);
            if let AttrValue::Items(items) = &a.value {
                for item in items {
                    item.walk(f);
                }
            }
        }
    }

    /// Converts a dicom-rs in-memory dataset. Binary values and pixel data are not copied.
    pub fn from_object(obj: &InMemDicomObject) -> Self {
        let mut out = Attrs::new();
        for elem in obj.iter() {
            let t = u32_of(elem.tag());
            let vr = elem.vr();
            let mut code = [b'?'; 2];
            code.copy_from_slice(&vr.to_string().as_bytes()[..2]);
            let value = match elem.value() {
                Value::Sequence(seq) => {
                    AttrValue::Items(seq.items().iter().map(Attrs::from_object).collect())
                }
                Value::PixelSequence(_) => AttrValue::Binary,
                Value::Primitive(p) => {
                    if is_binary_vr(vr) {
                        AttrValue::Binary
                    } else if p.is_empty() {
                        AttrValue::Empty
                    } else {
                        AttrValue::Text(p.to_multi_str().iter().map(|s| s.to_string()).collect())
                    }
                }
            };
            out.insert(t, Attr { vr: code, value });
        }
        out
    }
}

fn is_binary_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    )
}

/// Trims DICOM padding (spaces, NUL) from both ends.
pub fn trim_dicom(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

fn parse_f64(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}
