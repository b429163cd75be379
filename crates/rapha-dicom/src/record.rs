//! Allow-list record extraction (**I1**). The trainer never receives a DICOM object: it gets a
//! [`Record`], built field by field from the allow-list below. Nothing else is copied, so an
//! attribute this code does not name cannot leak, whatever the PACS puts in the header.
//!
//! Free-text attributes are suppressed unless the hospital's config opts a named field in
//! ([`FieldPolicy::free_text`]), and even then a value that contains one of the instance's raw
//! identifiers is dropped.

use std::collections::BTreeMap;
use std::fmt;

use rapha_core::{HashedId, IdDomain};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::attrs::{tag, Attr, AttrValue, Attrs, TagU32};
use crate::date::{self, Date};
use crate::frames::{common, varying, with_frame_times, FrameAttrs, Groups};
use crate::pseudonym::Pseudonymizer;
use crate::{DicomError, Result};

/// Free-text attributes a hospital may opt in, by keyword. Anything else named in the config is
/// refused, so a typo cannot opt in PatientName.
/// The [`Record`] fields that hold hashed identifiers (as serialised): never attributes, and
/// where a raw identifier would be expected to appear hashed.
pub const HASHED_ID_FIELDS: [&str; 7] = [
    "patient",
    "study",
    "series",
    "instance",
    "accession",
    "frame_of_reference",
    "references",
];

pub const OPTIONAL_TEXT_FIELDS: [(&str, TagU32); 6] = [
    ("StudyDescription", tag::STUDY_DESCRIPTION),
    ("SeriesDescription", tag::SERIES_DESCRIPTION),
    ("ProtocolName", tag::PROTOCOL_NAME),
    ("BodyPartExamined", tag::BODY_PART_EXAMINED),
    ("ImageComments", tag::IMAGE_COMMENTS),
    ("Manufacturer", tag::MANUFACTURER),
];

/// Which optional fields the hospital's policy lets into records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldPolicy {
    /// Include PatientSex.
    pub sex: bool,
    /// Include ManufacturerModelName.
    pub manufacturer_model: bool,
    /// Free-text attributes opted in, by keyword (see [`OPTIONAL_TEXT_FIELDS`]).
    pub free_text: Vec<String>,
}

impl FieldPolicy {
    /// Checks that every opted-in field is one that may be opted in.
    ///
    /// # Errors
    /// [`DicomError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for f in &self.free_text {
            if !OPTIONAL_TEXT_FIELDS.iter().any(|(k, _)| k == f) {
                return Err(DicomError::Config(format!(
                    "free_text field {f:?} cannot be opted in; allowed: {}",
                    OPTIONAL_TEXT_FIELDS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Age at the study in whole years, capped: 90 and over is reported only as "90+"
/// (HIPAA Safe Harbor; PS3.15 keeps ages but small groups of the very old are identifying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgeYears {
    Years(u8),
    NinetyPlus,
}

impl AgeYears {
    /// Caps a whole number of years.
    pub fn from_years(y: i64) -> Option<Self> {
        match y {
            y if y < 0 => None,
            y if y >= 90 => Some(Self::NinetyPlus),
            // Checked: 0..90 fits u8.
            y => u8::try_from(y).ok().map(Self::Years),
        }
    }
}

impl fmt::Display for AgeYears {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Years(y) => write!(f, "{y}"),
            Self::NinetyPlus => f.write_str("90+"),
        }
    }
}

impl Serialize for AgeYears {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AgeYears {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "90+" {
            return Ok(Self::NinetyPlus);
        }
        match s.parse::<u8>() {
            Ok(y) if y < 90 => Ok(Self::Years(y)),
            _ => Err(serde::de::Error::custom("age must be 0..89 or \"90+\"")),
        }
    }
}

/// PatientSex (only when the policy allows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "O")]
    Other,
}

/// Pixel matrix shape from the header (rows, columns, frames, samples per pixel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelShape {
    pub rows: u16,
    pub columns: u16,
    pub frames: u32,
    pub samples: u16,
}

/// What the trainer may know about one instance. No raw identifier or free text, ever (free
/// text only where the hospital opted a field in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub patient: HashedId,
    pub study: HashedId,
    pub series: HashedId,
    pub instance: HashedId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession: Option<HashedId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_of_reference: Option<HashedId>,
    /// Instances this one references (ReferencedSOPInstanceUID anywhere in the header), hashed
    /// like [`Record::instance`] so links survive pseudonymization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<HashedId>,
    pub modality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_class_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_syntax_uid: Option<String>,
    pub pixel_shape: PixelShape,
    pub rows: Option<u16>,
    pub columns: Option<u16>,
    pub samples_per_pixel: Option<u16>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    pub high_bit: Option<u16>,
    pub pixel_representation: Option<u16>,
    pub photometric_interpretation: Option<String>,
    pub number_of_frames: Option<u32>,
    pub rescale_slope: Option<f64>,
    pub rescale_intercept: Option<f64>,
    pub rescale_type: Option<String>,
    pub window_center: Option<Vec<f64>>,
    pub window_width: Option<Vec<f64>>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub slice_location: Option<f64>,
    pub image_orientation_patient: Option<[f64; 6]>,
    pub image_position_patient: Option<[f64; 3]>,
    /// A cine object's nominal time per frame in milliseconds (FrameTime, XA and other
    /// multi-frame projection objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_time: Option<f64>,
    /// Per frame, for a multi-frame object with functional groups (enhanced CT/MR, XA) or a
    /// cine FrameTimeVector: position, orientation, spacing, rescale, window and time
    /// increment of each frame, what differs between frames only ([`crate::frames`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<FrameAttrs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer_model: Option<String>,
    pub age_years: Option<AgeYears>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Days since this patient's first study in the cohort (dates themselves never leave).
    pub days_since_first_study: Option<u32>,
    pub label: Option<u8>,
    /// Free-text fields the hospital opted in, by keyword.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text: BTreeMap<String, String>,
}

/// A record plus what stays node-side: the raw identifiers (for the output guard), the raw
/// PatientID (for the opt-out list), the AccessionNumber (for the label table), the study
/// date (for day offsets) and PatientSex (for the cohort summary).
#[derive(Clone, Debug)]
pub struct Extracted {
    pub record: Record,
    pub raw_identifiers: Vec<String>,
    pub patient_id: String,
    pub accession: Option<String>,
    pub study_date: Option<Date>,
    /// PatientSex whatever the policy (the record holds it only when the policy allows): the
    /// node counts it in the DPO's cohort summary.
    pub sex: Option<Sex>,
}

/// Builds the record of one instance.
///
/// # Errors
/// [`DicomError::MissingIdentifier`] when PatientID, StudyInstanceUID, SeriesInstanceUID or
/// SOPInstanceUID is absent, or Modality is absent or not a code string.
pub fn extract(
    attrs: &Attrs,
    transfer_syntax: Option<&str>,
    pseudo: &Pseudonymizer,
    policy: &FieldPolicy,
) -> Result<Extracted> {
    let required = |t: TagU32, name: &'static str| {
        attrs
            .text(t)
            .map(str::to_owned)
            .ok_or(DicomError::MissingIdentifier(name))
    };
    let patient_id = required(tag::PATIENT_ID, "PatientID")?;
    let study_uid = required(tag::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_uid = required(tag::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    let instance_uid = required(tag::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let modality = attrs
        .text(tag::MODALITY)
        .filter(|m| is_code_string(m))
        .ok_or(DicomError::MissingIdentifier("Modality"))?;
    let accession = attrs.text(tag::ACCESSION_NUMBER).map(str::to_owned);

    let rows = attrs.u16(tag::ROWS);
    let columns = attrs.u16(tag::COLUMNS);
    let samples_per_pixel = attrs.u16(tag::SAMPLES_PER_PIXEL);
    let number_of_frames = attrs.u32(tag::NUMBER_OF_FRAMES);
    let study_date = [
        tag::STUDY_DATE,
        tag::SERIES_DATE,
        tag::ACQUISITION_DATE,
        tag::CONTENT_DATE,
    ]
    .iter()
    .find_map(|t| attrs.text(*t).and_then(date::parse_da));

    let mut references: Vec<HashedId> = Vec::new();
    attrs.walk(&mut |t, a| {
        if t == tag::REFERENCED_SOP_INSTANCE_UID {
            if let AttrValue::Text(v) = &a.value {
                for u in v
                    .iter()
                    .map(|s| crate::attrs::trim_dicom(s))
                    .filter(|s| !s.is_empty())
                {
                    references.push(pseudo.hash(IdDomain::Instance, u));
                }
            }
        }
    });
    references.sort();
    references.dedup();

    // Enhanced objects hold spacing, rescale and window in functional groups: the top-level
    // field is the object's own, else the shared group's, else what every frame has.
    let groups = Groups::of(attrs);
    let frame_count = number_of_frames.unwrap_or(1).max(1);
    let frames = groups
        .as_ref()
        .map(|g| g.frames(frame_count))
        .unwrap_or_default();
    // A cine object's FrameTimeVector gives each frame its time increment.
    let frames = with_frame_times(attrs, frames, frame_count);
    let shared = groups.as_ref().map(Groups::shared).unwrap_or_default();
    let fallback = |pick: &dyn Fn(&FrameAttrs) -> Option<Vec<f64>>| {
        pick(&shared).or_else(|| common(&frames, pick))
    };
    let one = |v: Option<Vec<f64>>| v.and_then(|v| v.first().copied());

    let raw_identifiers = raw_identifiers(attrs);
    let mut text = BTreeMap::new();
    for name in &policy.free_text {
        if let Some((_, t)) = OPTIONAL_TEXT_FIELDS.iter().find(|(k, _)| k == name) {
            if let Some(v) = attrs.text(*t) {
                if contains_identifier(v, &raw_identifiers) {
                    tracing::warn!(field = %name, "opted-in text field dropped: it contains an identifier");
                } else {
                    text.insert(name.clone(), v.to_owned());
                }
            }
        }
    }

    let sex = match attrs.text(tag::PATIENT_SEX) {
        Some("M") => Some(Sex::Male),
        Some("F") => Some(Sex::Female),
        Some("O") => Some(Sex::Other),
        _ => None,
    };
    let record = Record {
        patient: pseudo.hash(IdDomain::Patient, &patient_id),
        study: pseudo.hash(IdDomain::Study, &study_uid),
        series: pseudo.hash(IdDomain::Series, &series_uid),
        instance: pseudo.hash(IdDomain::Instance, &instance_uid),
        accession: accession
            .as_deref()
            .map(|a| pseudo.hash(IdDomain::Accession, a)),
        frame_of_reference: attrs
            .text(tag::FRAME_OF_REFERENCE_UID)
            .map(|u| pseudo.hash(IdDomain::FrameOfReference, u)),
        references,
        modality: modality.to_owned(),
        sop_class_uid: attrs
            .text(tag::SOP_CLASS_UID)
            .filter(|u| is_standard_uid(u))
            .map(str::to_owned),
        transfer_syntax_uid: transfer_syntax
            .map(crate::attrs::trim_dicom)
            .or_else(|| attrs.text(tag::TRANSFER_SYNTAX_UID))
            .filter(|u| is_standard_uid(u))
            .map(str::to_owned),
        pixel_shape: PixelShape {
            rows: rows.unwrap_or(0),
            columns: columns.unwrap_or(0),
            frames: number_of_frames.unwrap_or(1).max(1),
            samples: samples_per_pixel.unwrap_or(1),
        },
        rows,
        columns,
        samples_per_pixel,
        bits_allocated: attrs.u16(tag::BITS_ALLOCATED),
        bits_stored: attrs.u16(tag::BITS_STORED),
        high_bit: attrs.u16(tag::HIGH_BIT),
        pixel_representation: attrs.u16(tag::PIXEL_REPRESENTATION),
        photometric_interpretation: attrs
            .text(tag::PHOTOMETRIC_INTERPRETATION)
            .filter(|s| is_code_string(s))
            .map(str::to_owned),
        number_of_frames,
        rescale_slope: attrs
            .f64(tag::RESCALE_SLOPE)
            .or_else(|| one(fallback(&|f| f.rescale_slope.map(|v| vec![v])))),
        rescale_intercept: attrs
            .f64(tag::RESCALE_INTERCEPT)
            .or_else(|| one(fallback(&|f| f.rescale_intercept.map(|v| vec![v])))),
        rescale_type: attrs
            .text(tag::RESCALE_TYPE)
            .or_else(|| groups.as_ref().and_then(Groups::rescale_type))
            .filter(|s| is_code_string(s))
            .map(str::to_owned),
        window_center: attrs
            .f64s(tag::WINDOW_CENTER)
            .or_else(|| fallback(&|f| f.window_center.clone())),
        window_width: attrs
            .f64s(tag::WINDOW_WIDTH)
            .or_else(|| fallback(&|f| f.window_width.clone())),
        pixel_spacing: fixed::<2>(
            attrs
                .f64s(tag::PIXEL_SPACING)
                .or_else(|| fallback(&|f| f.pixel_spacing.map(Vec::from))),
        ),
        slice_thickness: attrs
            .f64(tag::SLICE_THICKNESS)
            .or_else(|| one(fallback(&|f| f.slice_thickness.map(|v| vec![v])))),
        slice_location: attrs.f64(tag::SLICE_LOCATION),
        image_orientation_patient: fixed::<6>(
            attrs
                .f64s(tag::IMAGE_ORIENTATION_PATIENT)
                .or_else(|| fallback(&|f| f.image_orientation_patient.map(Vec::from))),
        ),
        image_position_patient: fixed::<3>(attrs.f64s(tag::IMAGE_POSITION_PATIENT)),
        frame_time: attrs.f64(tag::FRAME_TIME),
        frames: varying(frames),
        manufacturer_model: if policy.manufacturer_model {
            attrs
                .text(tag::MANUFACTURER_MODEL_NAME)
                .filter(|v| !contains_identifier(v, &raw_identifiers))
                .map(str::to_owned)
        } else {
            None
        },
        age_years: age(attrs, study_date),
        sex: if policy.sex { sex } else { None },
        days_since_first_study: None,
        label: None,
        text,
    };
    Ok(Extracted {
        record,
        raw_identifiers,
        patient_id,
        accession,
        study_date,
        sex,
    })
}

fn contains_identifier(value: &str, raw: &[String]) -> bool {
    let lower = value.to_lowercase();
    raw.iter().any(|r| lower.contains(&r.to_lowercase()))
}

fn fixed<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    v.and_then(|v| <[f64; N]>::try_from(v).ok())
}

fn age(attrs: &Attrs, study_date: Option<Date>) -> Option<AgeYears> {
    if let Some(a) = attrs.text(tag::PATIENT_AGE) {
        // AS: nnnD, nnnW, nnnM or nnnY.
        if a.len() == 4 {
            if let Ok(n) = a[..3].parse::<i64>() {
                let years = match &a[3..] {
                    "Y" => Some(n),
                    "M" => Some(n / 12),
                    "W" => Some(n * 7 / 365),
                    "D" => Some(n / 365),
                    _ => None,
                };
                if let Some(y) = years {
                    return AgeYears::from_years(y);
                }
            }
        }
    }
    let birth = attrs
        .text(tag::PATIENT_BIRTH_DATE)
        .and_then(date::parse_da)?;
    AgeYears::from_years(i64::from(date::whole_years(birth, study_date?)))
}

/// A DICOM code string: upper case letters, digits, space and underscore, at most 16 long.
pub fn is_code_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
}

/// A UID of the DICOM standard's own root (SOP classes, transfer syntaxes): safe to pass on
/// because it identifies a kind of object, never a patient or a study.
pub fn is_standard_uid(s: &str) -> bool {
    s.starts_with("1.2.840.10008.") && crate::scope::is_uid(s)
}

/// The instance's raw identifiers, for the output guard (kept node-side, never sent to a
/// trainer): patient ids and names (with common reformattings), accession numbers, every
/// non-standard UID, birth dates in common notations, and other person names, addresses and
/// phone numbers. Values shorter than 4 characters are left out because scanning binary output
/// for them would flag almost any file.
pub fn raw_identifiers(attrs: &Attrs) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    attrs.walk(&mut |t, a: &Attr| {
        let AttrValue::Text(values) = &a.value else {
            return;
        };
        for v in values
            .iter()
            .map(|s| crate::attrs::trim_dicom(s))
            .filter(|s| !s.is_empty())
        {
            match (t, &a.vr) {
                (_, b"PN") | (tag::OTHER_PATIENT_NAMES, _) => out.extend(name_variants(v)),
                (_, b"UI") if !is_standard_uid(v) => out.push(v.to_owned()),
                (tag::PATIENT_BIRTH_DATE, _) => out.extend(date_variants(v)),
                (tag::PATIENT_ID | tag::OTHER_PATIENT_IDS | tag::ACCESSION_NUMBER, _)
                | (tag::PATIENT_ADDRESS | tag::PATIENT_TELEPHONE_NUMBERS, _)
                | (tag::ISSUER_OF_PATIENT_ID | tag::ADMISSION_ID, _)
                | (tag::INSTITUTION_NAME | tag::INSTITUTION_ADDRESS, _)
                | (tag::STUDY_ID, _) => out.push(v.to_owned()),
                _ => {}
            }
        }
    });
    out.retain(|s| s.chars().count() >= 4);
    out.sort();
    out.dedup();
    out
}

/// `DOE^JOHN^Q` → `DOE^JOHN^Q`, `DOE JOHN Q`, `JOHN DOE`, `John Doe`, `Doe, John`, `DOE, JOHN`,
/// and the family and given names alone.
pub fn name_variants(pn: &str) -> Vec<String> {
    let mut out = Vec::new();
    for group in pn.split('=').filter(|g| !g.is_empty()) {
        out.push(group.to_owned());
        let comps: Vec<&str> = group.split('^').map(str::trim).collect();
        let family = comps.first().copied().unwrap_or("");
        let given = comps.get(1).copied().unwrap_or("");
        let spaced = comps
            .iter()
            .filter(|c| !c.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        out.push(spaced);
        for c in comps.iter().filter(|c| !c.is_empty()) {
            out.push((*c).to_owned());
        }
        if !family.is_empty() && !given.is_empty() {
            out.push(format!("{given} {family}"));
            out.push(format!("{} {}", title(given), title(family)));
            out.push(format!("{family}, {given}"));
            out.push(format!("{}, {}", title(family), title(given)));
        }
    }
    out
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// `19230417` → itself, `1923-04-17`, `17/04/1923`, `04/17/1923`, `17.04.1923`.
pub fn date_variants(da: &str) -> Vec<String> {
    let mut out = vec![da.to_owned()];
    if let Some(d) = date::parse_da(da) {
        let (y, m, dd) = (d.year(), u8::from(d.month()), d.day());
        out.push(format!("{y:04}-{m:02}-{dd:02}"));
        out.push(format!("{dd:02}/{m:02}/{y:04}"));
        out.push(format!("{m:02}/{dd:02}/{y:04}"));
        out.push(format!("{dd:02}.{m:02}.{y:04}"));
        out.push(format!("{y:04}/{m:02}/{dd:02}"));
    }
    out
}
