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

    /// Reads a file of PatientIDs, one per line. A first line `PatientID` (CSV header), blank
    /// lines and lines starting with `#` are skipped; surrounding quotes are removed.
    ///
    /// # Errors
    /// [`DicomError::ListFile`] when the file cannot be read or is not UTF-8.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DicomError::ListFile {
            what: "opt-out",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let ids = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i, l.trim().trim_matches('"').trim()))
            .filter(|(i, l)| {
                !(l.is_empty()
                    || l.starts_with('#')
                    || (*i == 0 && l.eq_ignore_ascii_case("PatientID")))
            })
            .map(|(_, l)| l.to_owned());
        let mut list = Self::from_ids(ids);
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

/// The hospital's label table: AccessionNumber → label (0/1 or a small class index).
#[derive(Clone, Debug, Default)]
pub struct LabelTable {
    labels: BTreeMap<String, u8>,
}

impl LabelTable {
    /// Reads `AccessionNumber,label` lines (a header line is skipped).
    ///
    /// # Errors
    /// [`DicomError::ListFile`] for an unreadable file or a label that is not 0-255.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| DicomError::ListFile {
            what: "label",
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut labels = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((acc, label)) = line.split_once(',') else {
                return Err(bad(format!(
                    "line {}: expected AccessionNumber,label",
                    i + 1
                )));
            };
            match label.trim().parse::<u8>() {
                Ok(l) => {
                    labels.insert(acc.trim().trim_matches('"').to_owned(), l);
                }
                Err(_) if i == 0 => {} // header
                Err(_) => return Err(bad(format!("line {}: label is not a number 0-255", i + 1))),
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
