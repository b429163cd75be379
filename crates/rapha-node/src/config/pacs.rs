//! `[dicomweb]` (the PACS the cohort is built from) and `[cohort]` (opt-outs, labels, the
//! cohort step's bounds).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::invalid;

/// `[dicomweb]`: the hospital PACS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomWebConfig {
    /// One or more DICOMweb roots; the first that answers is used.
    pub endpoints: Vec<DicomWebEndpoint>,
}

/// One DICOMweb endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomWebEndpoint {
    /// DICOMweb root, e.g. `https://pacs.hospital.example/dicom-web`. Production requires https.
    pub url: String,
    /// PEM file with the CA certificate(s) that issued the PACS's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    #[serde(default)]
    pub auth: DicomWebAuth,
}

/// PACS authentication. Secrets live in files (mode 0600), never in the config.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DicomWebAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`; the token is read from `token_file`.
    Bearer { token_file: PathBuf },
    /// Any header (e.g. `Authorization: Basic ...` or an API key); value read from `value_file`.
    Header { name: String, value_file: PathBuf },
}

impl DicomWebAuth {
    /// The credentials to send, read from their file ([`rapha_core::fs::read_secret`]; a
    /// trailing newline is not part of them).
    ///
    /// # Errors
    /// The credential file that was refused or could not be read, and why.
    pub fn load(
        &self,
    ) -> Result<Option<rapha_dicom::Auth>, (PathBuf, rapha_core::fs::SecretFileError)> {
        let read = |path: &PathBuf| {
            rapha_core::fs::read_secret_text(path, 64 * 1024)
                .map(|t| zeroize::Zeroizing::new(t.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| (path.clone(), e))
        };
        Ok(match self {
            Self::None => None,
            Self::Bearer { token_file } => Some(rapha_dicom::Auth::Bearer(read(token_file)?)),
            Self::Header { name, value_file } => Some(rapha_dicom::Auth::Header {
                name: name.clone(),
                value: read(value_file)?,
            }),
        })
    }
}

/// `[cohort]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortConfig {
    /// CSV with header `PatientID`, one opted-out patient per line.
    pub opt_out_file: PathBuf,
    /// Hospital label table: CSV `AccessionNumber,label`.
    #[serde(default)]
    pub labels_file: Option<PathBuf>,
    /// Most instances one cohort may keep; a larger one is refused like an empty one.
    #[serde(default = "default_max_instances")]
    pub max_instances: u64,
    /// The cohort step's result is committed on a whole number of these seconds after the
    /// job's admission (default 300; 1 to 86400).
    #[serde(default = "default_commit_quantum_secs")]
    pub commit_quantum_secs: u64,
}

fn default_commit_quantum_secs() -> u64 {
    crate::pipeline::COHORT_QUANTUM.as_secs()
}

fn default_max_instances() -> u64 {
    crate::pipeline::DEFAULT_MAX_COHORT_INSTANCES
}

/// Largest `[cohort] max_instances` accepted: at about 2 KB per stored entry, the cohort
/// artifact stays within the node's limit ([`crate::pipeline::MAX_COHORT_ARTIFACT_BYTES`]).
pub const MAX_COHORT_INSTANCES: u64 = 200_000;

impl CohortConfig {
    /// The cohort step's bounds are within what the job store and the publisher's view allow.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=MAX_COHORT_INSTANCES).contains(&self.max_instances) {
            return Err(invalid(
                "cohort.max_instances",
                format!(
                    "{} is outside 1 to {MAX_COHORT_INSTANCES} (a larger cohort does not fit in \
                     the job store); the default is {}",
                    self.max_instances,
                    crate::pipeline::DEFAULT_MAX_COHORT_INSTANCES
                ),
            ));
        }
        if !(1..=86_400).contains(&self.commit_quantum_secs) {
            return Err(invalid(
                "cohort.commit_quantum_secs",
                format!(
                    "{} is outside 1 to 86400 s; the cohort step's result is shown to the \
                     publisher on this step after admission (default 300)",
                    self.commit_quantum_secs
                ),
            ));
        }
        Ok(())
    }
}
