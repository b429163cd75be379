//! What a run produces: the output manifest the runtime signs with the job's key (**I3**),
//! which may reach the publisher and so carries rule codes and node-computed figures only
//! (**I4**, issue 18), and beside it the run's details, which are the hospital's alone.

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rapha_core::{Digest, JobId};
use serde::Serialize;

use crate::feed::SelfReported;
use crate::guard::{Rejection, Verdict};
use crate::metrics::{ValidationMetrics, Withheld};
use crate::sandbox::Exit;

/// Manifest format version (2: rule codes instead of the guard's texts; trainer-chosen
/// fields only for completed jobs; no exit status).
pub const MANIFEST_VERSION: u32 = 2;

/// The job's outcome as the manifest states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ManifestOutcome {
    /// Trainer exited 0 and the guard accepted everything: outputs released.
    Completed,
    /// Trainer exited 0 but the guard refused the output set (issue 18: `violated`).
    Rejected,
    /// The trainer did not exit cleanly: an error status, a signal (the memory limit
    /// included) or its wall time. Its choice, after it saw data (charged).
    TrainerFailed,
    /// The node failed after the run began (the record feed, the OCI runtime, I/O): nothing
    /// is released and the trainer is not to blame (refunded).
    Failed,
}

impl ManifestOutcome {
    /// The reason code of a trainer failure.
    pub const TRAINER_FAILED: &'static str = rapha_core::ReasonCode::TrainerFailed.as_str();
}

/// The guard's verdict as the manifest states it: whether the outputs were accepted for
/// release, and the files released (completed jobs only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardSummary {
    pub accepted: bool,
    pub files: Vec<crate::guard::OutputFile>,
}

/// The output manifest the runtime signs with its per-job key.
///
/// It may reach the publisher, so it carries nothing the trainer chose beyond the outcome
/// itself: reasons are codes from a fixed vocabulary ([`Rejection::rule`], `trainer-failed`,
/// `feed-failed`, `enclave-error`); what the trainer fed itself on, its outputs' sizes and
/// digests and the node-computed metrics appear only when the job completed (then the outputs
/// themselves leave). Everything else is in [`JobResult::details`], for the hospital.
///
/// [`Rejection::rule`]: crate::guard::Rejection::rule
#[derive(Clone, Debug, Serialize)]
pub struct OutputManifest {
    pub version: u32,
    pub job: JobId,
    pub confinement: &'static str,
    /// Hex Ed25519 public key of this job's runtime key (bound into the attestation).
    pub enclave_public_key: String,
    pub outcome: ManifestOutcome,
    /// Why the job did not complete, as codes (empty when completed): the guard's rules,
    /// sorted and without repeats, for a refusal.
    pub reasons: Vec<&'static str>,
    pub guard: GuardSummary,
    /// Node-computed validation metrics (completed jobs only).
    pub metrics: Option<ValidationMetrics>,
    pub metrics_withheld: Option<Withheld>,
    /// Merkle root over the sorted hashed instance ids offered to the trainer.
    pub cohort_root: Digest,
    /// Merkle root over the sorted hashed instance ids actually fed to the trainer (completed
    /// jobs only: which records a trainer fetched is its choice).
    pub fed_root: Option<Digest>,
    /// Distinct records fed (completed jobs only, as `fed_root`).
    pub records_fed: Option<usize>,
    pub validation_records: usize,
    pub validation_patients: usize,
}

/// The whole story of a run, trainer-chosen details included, for the hospital's audit trail
/// and the DPO's review. Never shown to the publisher.
#[derive(Clone, Debug, Serialize)]
pub struct RunDetails {
    /// How the trainer ended (`None` when the node failed before it could tell).
    pub trainer_exit: Option<Exit>,
    /// The trainer kept its feed connection open past its own exit and the node cut it
    /// ([`Feed::cut`](crate::feed::Feed::cut)): the run is the trainer's failure whatever its
    /// exit status.
    pub feed_held: bool,
    /// The guard's full verdict (`None` when the guard did not run).
    pub verdict: Option<Verdict>,
    /// Everything that kept the job from completing, in words a hospital admin can act on:
    /// the node's own (the exit, a held feed) and the guard's [`Rejection::audit_line`]s,
    /// which name places by the node or by digest, never by the trainer's bytes. These go to
    /// the hospital's audit trail, which may leave the PACS network.
    pub reasons: Vec<String>,
    /// Distinct records fed, and their commitment.
    pub records_fed: usize,
    pub fed_root: Digest,
    /// What the trainer reported about itself. Not the job's metrics.
    pub self_reported: Option<SelfReported>,
}

impl RunDetails {
    /// The guard's rejections (none when it accepted or did not run).
    pub fn rejections(&self) -> &[Rejection] {
        self.verdict.as_ref().map_or(&[], |v| &v.rejections)
    }
}

/// A manifest with its canonical bytes and signature.
#[derive(Clone, Debug)]
pub struct SignedManifest {
    pub manifest: OutputManifest,
    /// The exact bytes signed (compact JSON of `manifest`).
    pub bytes: Vec<u8>,
    pub signature: [u8; 64],
    pub public_key: [u8; 32],
}

impl SignedManifest {
    /// Verifies the signature over `bytes` with `public_key`.
    pub fn verify(bytes: &[u8], signature: &[u8; 64], public_key: &[u8; 32]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(public_key) else {
            return false;
        };
        key.verify(bytes, &Signature::from_bytes(signature)).is_ok()
    }
}

/// Measurements of one run (for benchmarks and the node's logs; no PHI).
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub elapsed: Duration,
    pub first_fetch_after_launch: Option<Duration>,
    pub bytes_fed: u64,
    pub fetches: u64,
    pub protocol_errors: u32,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct JobResult {
    pub signed: SignedManifest,
    /// The details behind the manifest's codes, for the hospital only.
    pub details: RunDetails,
    /// Files copied to the release directory (completed jobs only).
    pub released: Vec<PathBuf>,
    /// Captured stdout/stderr. The node may show them only when `logs_releasable`.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub logs_releasable: bool,
    pub stats: RunStats,
}
