//! `[audit]` (the hospital's audit runner) and `[policy.audit]` (the audit split and the
//! release threshold) of the node's privacy audit (issue 19).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

/// `[audit]`: the runner that scores a released model for the membership attack. Without it
/// every completed job's receipt says "audit: not available" (`no-runner`) and no audit split
/// is held back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Absolute path of the runner: a static binary (e.g. `/usr/lib/rapha/audit-runner`), run
    /// under the OCI runtime like a trainer, alone in a root the node makes for it.
    pub runner: PathBuf,
    /// The runner's limits (the node's, never a publisher's).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_pids")]
    pub pids: u32,
    #[serde(default = "default_wall_seconds")]
    pub wall_seconds: u64,
    #[serde(default = "default_tmp_mb")]
    pub tmp_mb: u64,
}

fn default_memory_mb() -> u64 {
    2048
}
fn default_cpus() -> u32 {
    1
}
fn default_pids() -> u32 {
    64
}
fn default_wall_seconds() -> u64 {
    900
}
fn default_tmp_mb() -> u64 {
    64
}

impl AuditConfig {
    /// The runner's limits as the OCI runtime applies them.
    pub fn limits(&self) -> rapha_core::ResourceLimits {
        rapha_core::ResourceLimits {
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            pids: self.pids,
            wall_seconds: self.wall_seconds,
            tmp_mb: self.tmp_mb,
            gpus: 0,
        }
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !self.runner.is_absolute() {
            return Err(invalid(
                "audit.runner",
                format!("{} is not an absolute path", self.runner.display()),
            ));
        }
        rapha_enclave::sandbox::check_limits(&self.limits())
            .map_err(|e| invalid("audit", format!("the runner's limits: {e}")))
    }
}

/// Default `[policy.audit] holdout_fraction`.
pub const DEFAULT_HOLDOUT_FRACTION: f64 = 0.15;
/// Default `[policy.audit] min_patients`.
pub const DEFAULT_MIN_AUDIT_PATIENTS: u64 = 10;

/// `[policy.audit]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPolicy {
    /// Share of a job's patients held back for the audit when the job can be audited (a
    /// runner configured, a graph pinned): 0.05 to 0.5, default 0.15.
    #[serde(default = "default_holdout_fraction")]
    pub holdout_fraction: f64,
    /// Fewest audit patients worth an audit (default 10, at least 2): a cohort whose split
    /// would be smaller keeps all its patients for the trainer and is not audited.
    #[serde(default = "default_min_patients")]
    pub min_patients: u64,
    /// A release whose attack AUC's lower 95% bound exceeds this is withheld (0.5 to 1;
    /// absent: the audit is reported only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attack_auc: Option<f64>,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            holdout_fraction: DEFAULT_HOLDOUT_FRACTION,
            min_patients: DEFAULT_MIN_AUDIT_PATIENTS,
            max_attack_auc: None,
        }
    }
}

fn default_holdout_fraction() -> f64 {
    DEFAULT_HOLDOUT_FRACTION
}
fn default_min_patients() -> u64 {
    DEFAULT_MIN_AUDIT_PATIENTS
}

impl AuditPolicy {
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !(0.05..=0.5).contains(&self.holdout_fraction) {
            return Err(invalid(
                "policy.audit.holdout_fraction",
                format!(
                    "{} is outside 0.05 to 0.5 (default {DEFAULT_HOLDOUT_FRACTION})",
                    self.holdout_fraction
                ),
            ));
        }
        if self.min_patients < 2 {
            return Err(invalid(
                "policy.audit.min_patients",
                format!(
                    "{} is below 2 (default {DEFAULT_MIN_AUDIT_PATIENTS})",
                    self.min_patients
                ),
            ));
        }
        if let Some(m) = self.max_attack_auc {
            if !(0.5..=1.0).contains(&m) {
                return Err(invalid(
                    "policy.audit.max_attack_auc",
                    format!(
                        "{m} is outside 0.5 to 1 (an attack AUC of 0.5 is chance; leave it out \
                         to report the audit only)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
