//! Artifact names in the job store: what each step commits with its state change, and how the
//! steps read them back.

use rapha_core::JobId;
use serde::Deserialize;

use super::{Node, PipelineError, Result};

pub const BUNDLE: &str = "bundle";
pub const ADMISSION: &str = "admission";
/// The bundle's resource requests and the node's bounds they passed (for the DPO).
pub const RESOURCES: &str = "resources";
/// What the trainer image holds ([`rapha_policy::ImageReview`]), counted at admission.
pub const IMAGE: &str = "image";
/// What the bundle's declared tensors can carry ([`rapha_policy::ReleaseReview`]), counted at
/// admission for the DPO.
pub const RELEASE_SIZE: &str = "release-size";
pub const COHORT: &str = "cohort";
pub const COHORT_SUMMARY: &str = "cohort-summary";
pub const REVIEW: &str = "review";
pub const APPROVAL: &str = "approval";
/// A DPO's passkey approval as the node verified it (`rapha_receipt::body::PasskeyApproval`).
pub const PASSKEY_APPROVAL: &str = "passkey-approval";
/// The passkey approval the job was approved with (copied when it moved to approved; the
/// receipt reads it, as it reads [`APPROVAL`] for a key-file approval).
pub const APPROVAL_PASSKEY: &str = "approval-passkey";
pub const DEPOSIT: &str = "deposit";
pub const EVIDENCE: &str = "evidence";
pub const ATTESTATION: &str = "attestation";
pub const FINAL: &str = "final";
pub const STARTED: &str = "started";
pub const MANIFEST: &str = "manifest";
/// The node's privacy audit of a completed job's release ([`rapha_receipt::body::Audit`]),
/// committed with the run's manifest (issue 19).
pub const PRIVACY_AUDIT: &str = "privacy-audit";
pub const RECEIPT_BODY: &str = "receipt-body";
pub const RECEIPT: &str = "receipt";
pub const RELEASE: &str = "release";
pub const SETTLEMENT: &str = "settlement";
/// How the job ended, hospital-side ([`super::Ending`]).
pub const ENDING: &str = "ending";
/// The trainer's wall time the deposit's deadline is checked against (seconds).
pub const RUN_WALL: &str = "run-wall";
/// A completed job whose deposit was refunded instead of paid: its outputs never leave.
pub const WITHHELD: &str = "withheld";

impl Node {
    pub(super) fn load<T: for<'de> Deserialize<'de>>(
        &self,
        job: JobId,
        kind: &'static str,
        b: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(b).map_err(|e| PipelineError::Artifact {
            job,
            kind,
            detail: e.to_string(),
        })
    }

    pub(super) fn need<T: for<'de> Deserialize<'de>>(
        &self,
        job: JobId,
        kind: &'static str,
    ) -> Result<T> {
        let b = self
            .p
            .store
            .artifact(job, kind)?
            .ok_or_else(|| PipelineError::Artifact {
                job,
                kind,
                detail: "not stored".into(),
            })?;
        self.load(job, kind, &b)
    }

    pub(super) fn opt<T: for<'de> Deserialize<'de>>(
        &self,
        job: JobId,
        kind: &'static str,
    ) -> Result<Option<T>> {
        match self.p.store.artifact(job, kind)? {
            None => Ok(None),
            Some(b) => self.load(job, kind, &b).map(Some),
        }
    }
}
