//! The `[dicom]` section of the node configuration: scope limits, record fields, exclusions.

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
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    pub scope: ScopeLimits,
    pub fields: FieldPolicy,
    pub exclusions: ExclusionPolicy,
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
        Ok(())
    }
}
