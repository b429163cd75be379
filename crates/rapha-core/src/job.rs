//! The job request an AI company submits. Fields may grow; unknown fields are refused so a
//! request cannot smuggle in something the policy never saw.

use serde::{Deserialize, Serialize};

use crate::{Digest, JobId, Usdc};

/// What the trainer asks to be trained on. The scope guard in `rapha-dicom` turns this into a
/// `ScopedQuery` or refuses it (**I2**).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CohortQuery {
    /// Explicit StudyInstanceUIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub study_uids: Vec<String>,
    /// Explicit AccessionNumbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accession_numbers: Vec<String>,
    /// StudyDate range `YYYYMMDD-YYYYMMDD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    /// ModalitiesInStudy, e.g. `["CT", "MR"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<String>,
    /// Upper bound on studies returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The kind of an output file a trainer declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OutputKind {
    Safetensors,
    Onnx,
    PytorchZip,
    MetricsJson,
}

/// One declared output: file name, kind and size cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDecl {
    pub name: String,
    pub kind: OutputKind,
    pub max_bytes: u64,
}

/// Resources the trainer may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    pub memory_mb: u64,
    pub cpus: u32,
    pub pids: u32,
    pub wall_seconds: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            memory_mb: 2048,
            cpus: 2,
            pids: 64,
            wall_seconds: 1800,
        }
    }
}

/// A job as submitted by the AI company.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub job_id: JobId,
    /// Publisher name as known to the hospital's trust store.
    pub publisher: String,
    /// Trainer name as signed in the bundle's predicate.
    pub trainer: String,
    /// Digest of the bundle's OCI image manifest.
    pub bundle_manifest: Digest,
    pub query: CohortQuery,
    /// Metadata fields the trainer asks for beyond the default allow-list.
    #[serde(default)]
    pub requested_fields: Vec<String>,
    /// Fraction of patients held out for validation, in percent.
    pub validation_percent: u8,
    pub fee: Usdc,
    pub chain_id: u64,
    /// Depositor address (hex), refunded for a refused or failed job.
    pub depositor: String,
}

impl JobRequest {
    /// Digest of the request's JSON serialisation. Field order is fixed by the struct, so the
    /// same request always gives the same digest.
    pub fn digest(&self) -> Digest {
        // Serialising a struct of strings, numbers and vectors into a Vec cannot fail.
        Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }
}
