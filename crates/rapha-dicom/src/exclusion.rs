//! Exclusions (the DICOM half of **I3**, and opt-outs). An instance is excluded, and counted by
//! reason, when its header says BurnedInAnnotation YES, when its modality, SOP class or
//! transfer syntax is of a kind that routinely carries burned-in text whatever the flag says
//! (ultrasound, secondary capture, other, documents, encapsulated PDF/CDA, external camera
//! photography, video), or when its patient is on the hospital's opt-out list. Counts name
//! reasons, never patients.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::attrs::{tag, Attrs};
use crate::{DicomError, Result};

/// Exclusion reasons (the keys of [`rapha_core::ExclusionCounts`]).
pub mod reason {
    pub const BURNED_IN_ANNOTATION: &str = "burned-in-annotation";
    pub const AT_RISK_MODALITY: &str = "at-risk-modality";
    pub const AT_RISK_SOP_CLASS: &str = "at-risk-sop-class";
    pub const VIDEO: &str = "video-transfer-syntax";
    pub const OPTED_OUT: &str = "opted-out";
    pub const MALFORMED: &str = "malformed";
    pub const MISSING_IDENTIFIERS: &str = "missing-identifiers";
    pub const NOT_AN_IMAGE: &str = "not-an-image";
    pub const OUTSIDE_SCOPE: &str = "outside-scope";
    pub const RETRIEVE_FAILED: &str = "retrieve-failed";
    /// At fetch time, the PACS served an object that is not the approved instance.
    pub const SERVED_INSTANCE_MISMATCH: &str = "served-instance-mismatch";
    pub const SERVED_SERIES_MISMATCH: &str = "served-series-mismatch";
    pub const SERVED_STUDY_MISMATCH: &str = "served-study-mismatch";
    pub const SERVED_PATIENT_MISMATCH: &str = "served-patient-mismatch";
    pub const SERVED_SOP_CLASS_MISMATCH: &str = "served-sop-class-mismatch";
    pub const SERVED_MODALITY_MISMATCH: &str = "served-modality-mismatch";
    /// At fetch time, the pixels are in a transfer syntax this build cannot decode (JPEG-LS,
    /// 12-bit JPEG, JPEG 2000 Part 2, JPEG XL): counted apart from broken data.
    pub const UNDECODABLE_TRANSFER_SYNTAX: &str = "undecodable-transfer-syntax";
    /// At fetch time, the instance came over WADO-RS in a syntax this build cannot decode, and
    /// the PACS could serve it in none of those the node asked for instead (it does not
    /// transcode, or not this object).
    pub const TRANSFER_SYNTAX_NOT_SERVED: &str = "transfer-syntax-not-served";
    /// At fetch time, the pixel data (or a compressed stream in it) is broken or refused.
    pub const MALFORMED_PIXEL_DATA: &str = "malformed-pixel-data";
    /// At fetch time, the decoded pixels would pass the decode limit.
    pub const PIXELS_TOO_LARGE: &str = "pixels-too-large";
}

/// Modalities excluded by default: burned-in text is routine in them.
pub const AT_RISK_MODALITIES: [&str; 8] = ["US", "SC", "OT", "DOC", "XC", "ES", "GM", "SM"];

/// SOP classes excluded by default (prefix match on the UID).
pub const AT_RISK_SOP_CLASSES: [(&str, &str, &str); 12] = [
    // (UID prefix, name, the class keyword that allows it in `allow_classes`)
    (
        "1.2.840.10008.5.1.4.1.1.7.",
        "Secondary Capture (all variants)",
        "SC",
    ),
    ("1.2.840.10008.5.1.4.1.1.6.", "Ultrasound Image", "US"),
    (
        "1.2.840.10008.5.1.4.1.1.3.",
        "Ultrasound Multi-frame Image",
        "US",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.104.",
        "Encapsulated PDF / CDA / STL / OBJ / MTL",
        "DOC",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "Video Endoscopic Image",
        "video",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",
        "Video Microscopic Image",
        "video",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "VL Photographic / Video Photographic Image",
        "XC",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.1",
        "VL Endoscopic Image",
        "ES",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.2",
        "VL Microscopic Image",
        "GM",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.3",
        "VL Slide-Coordinates Microscopic Image",
        "SM",
    ),
    ("1.2.840.10008.5.1.4.1.1.88.", "Structured Report", "SR"),
    ("1.2.840.10008.5.1.4.1.1.11.", "Presentation State", "PR"),
];

/// Transfer syntaxes that mean video (MPEG-2, MPEG-4, HEVC).
pub fn is_video_transfer_syntax(ts: &str) -> bool {
    let ts = crate::attrs::trim_dicom(ts);
    ts.starts_with("1.2.840.10008.1.2.4.10")
}

/// Which classes the hospital allows despite the default exclusions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExclusionPolicy {
    /// Modalities (e.g. `"US"`) or SOP class UIDs explicitly allowed. BurnedInAnnotation YES
    /// and opt-outs are never waived.
    pub allow_classes: Vec<String>,
}

impl ExclusionPolicy {
    /// The reason `attrs` is excluded, if any (before identifiers are looked at).
    pub fn check(&self, attrs: &Attrs, transfer_syntax: Option<&str>) -> Option<&'static str> {
        if attrs
            .text(tag::BURNED_IN_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("YES"))
        {
            return Some(reason::BURNED_IN_ANNOTATION);
        }
        let allowed = |s: &str| self.allow_classes.iter().any(|a| a == s);
        if let Some(m) = attrs.text(tag::MODALITY) {
            if AT_RISK_MODALITIES.contains(&m) && !allowed(m) {
                return Some(reason::AT_RISK_MODALITY);
            }
        }
        if let Some(sop) = attrs.text(tag::SOP_CLASS_UID) {
            let class = AT_RISK_SOP_CLASSES
                .iter()
                .find(|(p, _, _)| sop == p.trim_end_matches('.') || sop.starts_with(p));
            if let Some((_, _, keyword)) = class {
                if !allowed(sop) && !allowed(keyword) {
                    return Some(reason::AT_RISK_SOP_CLASS);
                }
            }
        }
        let ts = transfer_syntax.or_else(|| attrs.text(tag::TRANSFER_SYNTAX_UID));
        if ts.is_some_and(is_video_transfer_syntax) && !allowed("video") {
            return Some(reason::VIDEO);
        }
        None
    }
}

/// The hospital's opt-out list: PatientIDs whose studies must never be used.
#[derive(Clone, Debug, Default)]
pub struct OptOuts {
    ids: HashSet<String>,
    /// The file it was read from, for [`OptOuts::reload`].
    source: Option<std::path::PathBuf>,
}

impl OptOuts {
    /// An empty list.
    pub fn none() -> Self {
        Self::default()
    }

    /// From PatientIDs.
    pub fn from_ids<I: IntoIterator<Item = S>, S: AsRef<str>>(ids: I) -> Self {
        Self {
            ids: ids
                .into_iter()
                .map(|s| s.as_ref().trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            source: None,
        }
    }

    /// Reads a file of PatientIDs as spreadsheets and hospital systems save it (see
    /// [`rapha_core::lists`]): one per row, or the column headed `PatientID` (also `Patient ID`,
    /// `patient_id`, `MRN`) when the first row is a header; blank rows and `#` comments skipped.
    ///
    /// # Errors
    /// [`DicomError::ListFile`], naming the line, for a file that cannot be read, a spelling
    /// that cannot be read with certainty (UTF-16, bytes that are not UTF-8, several values on
    /// a row without a header saying which is the PatientID): an entry is never dropped.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| DicomError::ListFile {
            what: "opt-out",
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let ids = rapha_core::lists::read_column(&bytes, "PatientID", is_patient_id_header)
            .map_err(|e| bad(e.to_string()))?;
        let mut list = Self::from_ids(ids.into_iter().map(|(_, id)| id));
        list.source = Some(path.to_owned());
        Ok(list)
    }

    /// The list as its file says now (a patient may have opted out since it was loaded). A
    /// list not read from a file is returned as it is.
    ///
    /// # Errors
    /// As [`OptOuts::load`]: an unreadable list is an error, never an empty list.
    pub fn reload(&self) -> Result<Self> {
        match &self.source {
            Some(path) => Self::load(path),
            None => Ok(self.clone()),
        }
    }

    /// Whether `patient_id` opted out.
    pub fn contains(&self, patient_id: &str) -> bool {
        self.ids.contains(crate::attrs::trim_dicom(patient_id))
    }

    /// Number of PatientIDs on the list.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an empty list.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Whether an opt-out list's header cell names the PatientID column.
fn is_patient_id_header(cell: &str) -> bool {
    matches!(
        rapha_core::lists::header_name(cell).as_str(),
        "patientid" | "patientidentifier" | "patientnumber" | "mrn"
    )
}

/// The hospital's label table: AccessionNumber → label (0/1 or a small class index).
#[derive(Clone, Debug, Default)]
pub struct LabelTable {
    labels: BTreeMap<String, u8>,
}

impl LabelTable {
    /// Reads `AccessionNumber,label` rows as spreadsheets save them (see [`rapha_core::lists`]). A
    /// first row naming the columns (`AccessionNumber`/`Accession …`, `label`/`Label …`, in
    /// either order) is a header; without one, the first column is the accession number and the
    /// second the label.
    ///
    /// # Errors
    /// [`DicomError::ListFile`], naming the line: an unreadable file, a row without an accession
    /// number or a label, a label that is not 0-255 (a first row that is neither a header nor
    /// data is refused, not skipped), an accession number given two different labels.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| DicomError::ListFile {
            what: "label",
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let all = rapha_core::lists::read_rows(&bytes).map_err(|e| bad(e.to_string()))?;
        let rows = rapha_core::lists::after_leading_comments(&all);
        let header = rows.first().and_then(|first| {
            let acc = first
                .fields
                .iter()
                .position(|f| rapha_core::lists::is_accession_header(f))?;
            let label = first.fields.iter().position(|f| {
                matches!(
                    rapha_core::lists::header_name(f).as_str(),
                    "label" | "labels"
                )
            })?;
            Some((acc, label))
        });
        let ((acc_col, label_col), body) = match header {
            Some(cols) => (cols, &rows[1..]),
            None => ((0, 1), rows),
        };
        let mut labels = BTreeMap::new();
        let mut first_line = BTreeMap::new();
        for row in body.iter().filter(|r| !r.is_comment_for(acc_col)) {
            let at = |reason: &str| bad(format!("line {}: {reason}", row.line));
            let acc = row
                .fields
                .get(acc_col)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| at("no accession number; expected AccessionNumber,label"))?;
            let label = row
                .fields
                .get(label_col)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| at("no label; expected AccessionNumber,label"))?;
            let label: u8 = label
                .parse()
                .map_err(|_| at("label is not a number 0-255"))?;
            match labels.insert(acc.clone(), label) {
                Some(before) if before != label => {
                    return Err(at(&format!(
                        "this accession number already has a different label (line {})",
                        first_line[acc]
                    )))
                }
                _ => {
                    first_line.entry(acc.clone()).or_insert(row.line);
                }
            }
        }
        Ok(Self { labels })
    }

    /// From pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, u8)>>(pairs: I) -> Self {
        Self {
            labels: pairs.into_iter().collect(),
        }
    }

    /// The label for an accession number.
    pub fn get(&self, accession: &str) -> Option<u8> {
        self.labels
            .get(crate::attrs::trim_dicom(accession))
            .copied()
    }
}
