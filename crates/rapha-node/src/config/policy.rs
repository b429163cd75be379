//! `[policy]`: the admission policy, its bounds, and the hospital's side of the policy input
//! (`data.hospital`) built from it and the trust store.

use std::path::PathBuf;

use rapha_bundle::TrustStore;
use rapha_core::Usdc;
use rapha_policy::{HospitalPolicy, JobBudget, OutputLimits, PublisherTrust, ScopeLimits};
use serde::{Deserialize, Serialize};

use super::{invalid, Config};

/// `[policy]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Rego policy (package `rapha`).
    pub path: PathBuf,
    /// Directory with the policy's Rego unit tests (`*_test.rego`); default: the policy's
    /// directory.
    #[serde(default)]
    pub tests_dir: Option<PathBuf>,
    /// Modalities made available for training.
    pub modalities: Vec<String>,
    pub outputs: OutputLimits,
    /// Lowest fee accepted, in USDC (decimal string, e.g. "100.00").
    pub min_fee_usdc: String,
    pub budget: JobBudget,
    #[serde(default = "default_min_patients")]
    pub min_patients: u64,
    #[serde(default = "default_min_validation_patients")]
    pub min_validation_patients: u64,
    /// Publishers whose jobs may name a pseudonym linkage group (their records then join the
    /// group's other jobs' records); every other job's pseudonyms are its own.
    #[serde(default)]
    pub allow_linkage: Vec<String>,
    /// Whether a job of a linkage group must ask the same query as the group's earlier jobs
    /// (default true): two jobs of one group whose queries differ by one accession attribute
    /// that accession's records.
    #[serde(default = "default_true")]
    pub linkage_same_query: bool,
    /// Smallest `validation_percent` a job may ask for (default 10).
    #[serde(default = "default_min_validation_percent")]
    pub min_validation_percent: u8,
    /// Largest `validation_percent` a job may ask for (default 50; at most 90).
    #[serde(default = "default_max_validation_percent")]
    pub max_validation_percent: u8,
    /// `[policy.audit]`: the privacy audit's split and threshold (issue 19).
    #[serde(default)]
    pub audit: super::AuditPolicy,
}

fn default_true() -> bool {
    true
}

fn default_min_validation_percent() -> u8 {
    crate::pipeline::DEFAULT_MIN_VALIDATION_PERCENT
}
fn default_max_validation_percent() -> u8 {
    crate::pipeline::DEFAULT_MAX_VALIDATION_PERCENT
}

fn default_min_patients() -> u64 {
    rapha_policy::DEFAULT_MIN_PATIENTS
}
fn default_min_validation_patients() -> u64 {
    rapha_policy::DEFAULT_MIN_VALIDATION_PATIENTS
}

impl PolicyConfig {
    /// The validation split's range and the linkage publishers' names.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let (lo, hi) = (self.min_validation_percent, self.max_validation_percent);
        if lo == 0 || lo > hi || hi > 90 {
            return Err(invalid(
                "policy.max_validation_percent",
                format!(
                    "min_validation_percent {lo} to max_validation_percent {hi} is not a range \
                     within 1 to 90 (the enclave holds out at most 90%); the default is 10 to 50"
                ),
            ));
        }
        for (i, p) in self.allow_linkage.iter().enumerate() {
            if rapha_bundle::trust::check_name(p).is_err() {
                return Err(invalid(
                    &format!("policy.allow_linkage[{i}]"),
                    format!("{p:?} is not a publisher name as the trust store writes them (a-z, 0-9, '.', '_', '-')"),
                ));
            }
        }
        self.audit.validate()?;
        // Receipts carry it as an exact JSON integer.
        let max = rapha_core::jcs::MAX_SAFE_INTEGER;
        if self.outputs.max_publisher_bits.is_some_and(|c| c > max) {
            return Err(invalid(
                "policy.outputs.max_publisher_bits",
                format!("at most {max} (2^53 - 1, what a receipt carries exactly)"),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The metadata fields a job may opt in to, as the policy sees them (from `[dicom.fields]`).
    pub fn allowed_metadata_fields(&self) -> Vec<String> {
        let Some(d) = &self.dicom else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if d.fields.sex {
            out.push("PatientSex".to_owned());
        }
        if d.fields.manufacturer_model {
            out.push("ManufacturerModelName".to_owned());
        }
        out.extend(d.fields.free_text.iter().cloned());
        out
    }

    /// The policy's `data.hospital`, with trusted publishers from the trust store (revoked and
    /// expired publishers left out).
    ///
    /// # Errors
    /// `(key path, message)` for a setting the policy cannot use.
    pub fn hospital_policy(&self, trust: &TrustStore) -> Result<HospitalPolicy, (String, String)> {
        let min_fee: Usdc =
            self.policy
                .min_fee_usdc
                .parse()
                .map_err(|e: rapha_core::CoreError| {
                    ("policy.min_fee_usdc".to_owned(), e.to_string())
                })?;
        let scope = self
            .dicom
            .as_ref()
            .map(|d| d.scope.clone())
            .unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let publishers = trust
            .publishers()
            .iter()
            .filter(|p| !p.revoked && p.expires.is_none_or(|e| e > now))
            .map(|p| {
                (
                    p.name.clone(),
                    PublisherTrust {
                        trainers: p.trainers.clone(),
                    },
                )
            })
            .collect();
        Ok(HospitalPolicy {
            mode: self.mode,
            publishers,
            scope: ScopeLimits {
                max_studies: u64::from(scope.max_limit),
                max_date_range_days: u64::from(scope.max_date_range_days),
                modalities: self.policy.modalities.clone(),
            },
            outputs: self.policy.outputs.clone(),
            allowed_metadata_fields: self.allowed_metadata_fields(),
            min_fee,
            budget: self.policy.budget.clone(),
            min_patients: self.policy.min_patients,
            min_validation_patients: self.policy.min_validation_patients,
            resources: self.trainer.limits.clone(),
            linkage_publishers: self.policy.allow_linkage.clone(),
        })
    }
}
