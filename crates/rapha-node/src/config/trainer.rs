//! `[trainer]`: the OCI runtime, the bounds on what a bundle may request, and the GPUs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

/// `[trainer]`: the enterprise-node trainer command.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Absolute path of the OCI runtime (e.g. `/usr/sbin/runc`).
    pub runtime: PathBuf,
    /// Extra global options passed to the runtime before its subcommand.
    #[serde(default)]
    pub runtime_args: Vec<String>,
    /// `[trainer.limits]`: the range each resource a bundle requests must fall in. With
    /// `gpus` configured and no `gpus` bound, a job may declare up to one GPU per name.
    #[serde(default)]
    pub limits: rapha_core::ResourceBounds,
    /// CDI device names (`VENDOR/CLASS=NAME`, e.g. `nvidia.com/gpu=0`): a job declaring `n`
    /// GPUs (`resources.gpus`) gets the first `n`; only this configuration picks devices, never
    /// a bundle. Empty (the default): jobs declaring a GPU are refused at admission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Directories of the host's CDI specs, lowest priority first (default `/etc/cdi`,
    /// `/var/run/cdi`, as container runtimes read them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_spec_dirs: Option<Vec<PathBuf>>,
    /// A run's end is committed on a whole number of these seconds after its start, so the
    /// publisher learns its trainer's run length in such steps only (default 60; 1 to 3600).
    #[serde(default = "default_run_quantum_secs")]
    pub run_quantum_secs: u64,
}

impl TrainerConfig {
    /// The CDI spec directories in force, lowest priority first.
    pub fn cdi_dirs(&self) -> Vec<PathBuf> {
        self.cdi_spec_dirs.clone().unwrap_or_else(|| {
            rapha_enclave::cdi::DEFAULT_SPEC_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        })
    }

    /// The resource bounds, GPU names and CDI spec directories are usable.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        self.limits
            .validate()
            .map_err(|(key, message)| invalid(&format!("trainer.limits.{key}"), message))?;
        let gpu_max = self.limits.gpu_bound().max;
        if gpu_max > 0 && self.gpus.is_empty() {
            return Err(invalid(
                "trainer.limits.gpus.max",
                format!(
                    "{gpu_max} would admit jobs that declare a GPU, and trainer.gpus names none \
                     to give them: name the node's CDI devices (e.g. gpus = [\"nvidia.com/gpu=all\"]) \
                     or set gpus.max = 0"
                ),
            ));
        }
        for (i, name) in self.gpus.iter().enumerate() {
            rapha_enclave::cdi::check_name(name)
                .map_err(|e| invalid(&format!("trainer.gpus[{i}]"), e.to_string()))?;
        }
        for (i, dir) in self.cdi_dirs().iter().enumerate() {
            if !dir.is_absolute() {
                return Err(invalid(
                    &format!("trainer.cdi_spec_dirs[{i}]"),
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        Ok(())
    }
}

fn default_run_quantum_secs() -> u64 {
    crate::pipeline::RUN_QUANTUM.as_secs()
}
