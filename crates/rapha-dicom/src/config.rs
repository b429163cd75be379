//! The `[dicom]` section of the node configuration: scope limits, record fields, exclusions,
//! and how long and how much the node waits for and takes from the PACS.

use serde::{Deserialize, Serialize};

use crate::exclusion::ExclusionPolicy;
use crate::record::FieldPolicy;
use crate::scope::ScopeLimits;

/// Everything this crate reads from the hospital's config.
///
/// ```toml
/// [dicom.scope]
/// max_date_range_days = 366
/// max_limit = 10000
/// max_list = 1000
/// page_size = 100
///
/// [dicom.fields]
/// sex = false
/// manufacturer_model = false
/// free_text = []            # e.g. ["BodyPartExamined"]
///
/// [dicom.exclusions]
/// allow_classes = []        # e.g. ["US"] to train on ultrasound despite the risk
///
/// [dicom.pacs]
/// connect_timeout_seconds = 10
/// request_timeout_seconds = 120     # one request, connect to last byte
/// max_response_bytes = 67108864     # one QIDO-RS / metadata answer (64 MiB)
/// max_instance_bytes = 1073741824   # one WADO-RS instance (1 GiB)
/// cohort_deadline_seconds = 3600    # one whole cohort build
/// max_pages = 100000                # QIDO-RS pages in one cohort build
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    pub scope: ScopeLimits,
    pub fields: FieldPolicy,
    pub exclusions: ExclusionPolicy,
    pub pacs: PacsLimits,
}

/// How long and how much the node waits for and takes from the PACS (`[dicom.pacs]`). A PACS
/// that is slow, silent, endless or that ignores `offset` ends a request or a cohort build
/// with a typed error within these bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacsLimits {
    /// Establishing one connection (TCP and TLS).
    pub connect_timeout_seconds: u64,
    /// One request, from connecting to the last byte of the answer.
    pub request_timeout_seconds: u64,
    /// One QIDO-RS or WADO-RS metadata answer.
    pub max_response_bytes: u64,
    /// One WADO-RS instance (Part 10 bytes).
    pub max_instance_bytes: u64,
    /// One cohort build, all its requests together.
    pub cohort_deadline_seconds: u64,
    /// QIDO-RS pages (study, series and instance searches) in one cohort build.
    pub max_pages: u64,
}

impl Default for PacsLimits {
    fn default() -> Self {
        Self {
            connect_timeout_seconds: 10,
            request_timeout_seconds: 120,
            max_response_bytes: 64 << 20,
            max_instance_bytes: 1 << 30,
            cohort_deadline_seconds: 3600,
            max_pages: 100_000,
        }
    }
}

impl PacsLimits {
    /// Checks every limit is positive and the request timeout fits in the cohort deadline.
    ///
    /// # Errors
    /// [`crate::DicomError::Config`] naming the setting.
    pub fn validate(&self) -> crate::Result<()> {
        let named = [
            ("connect_timeout_seconds", self.connect_timeout_seconds),
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("max_response_bytes", self.max_response_bytes),
            ("max_instance_bytes", self.max_instance_bytes),
            ("cohort_deadline_seconds", self.cohort_deadline_seconds),
            ("max_pages", self.max_pages),
        ];
        if let Some((name, _)) = named.iter().find(|(_, v)| *v == 0) {
            return Err(crate::DicomError::Config(format!(
                "dicom.pacs.{name} must be positive"
            )));
        }
        // Durations past ten years are a typo, and would overflow Instant arithmetic.
        const TEN_YEARS: u64 = 10 * 366 * 24 * 3600;
        if let Some((name, _)) = named[..2]
            .iter()
            .chain(&named[4..5])
            .find(|(_, v)| *v > TEN_YEARS)
        {
            return Err(crate::DicomError::Config(format!(
                "dicom.pacs.{name} is longer than ten years"
            )));
        }
        Ok(())
    }
}

impl DicomConfig {
    /// Checks cross-field rules (opted-in fields exist, limits are positive).
    ///
    /// # Errors
    /// [`crate::DicomError::Config`] saying which setting is wrong.
    pub fn validate(&self) -> crate::Result<()> {
        self.fields.validate()?;
        let s = &self.scope;
        if s.max_date_range_days == 0 || s.max_limit == 0 || s.max_list == 0 || s.page_size == 0 {
            return Err(crate::DicomError::Config(
                "scope limits must all be positive".into(),
            ));
        }
        self.pacs.validate()
    }
}
