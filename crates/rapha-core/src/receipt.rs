//! Receipt vocabulary shared by the node, the receipt log and settlement. The full receipt body
//! lives in `rapha-receipt`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a job ended, and whether the depositor pays for it (**I7**).
///
/// Every outcome the trainer can bring about after it has seen data is charged: a refunded
/// refusal or failure would make the bare outcome a free one-bit oracle (a binary search over
/// candidate identifiers would cost log2 N refunded jobs).
///
/// | outcome | escrow code | money |
/// |---|---|---|
/// | `completed` | 1 | 70/30 split; outputs released once the settlement is confirmed |
/// | `refused` | 2 | refund: refused before the trainer ran |
/// | `failed` | 3 | refund: the node, not the trainer, failed |
/// | `violated` | 4 | 70/30 split: the output guard refused the outputs; nothing released |
/// | `trainer-failed` | 5 | 70/30 split: the trainer failed (exit status, memory, wall time) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    Refused,
    Failed,
    Violated,
    TrainerFailed,
}

impl Outcome {
    /// Every outcome, in escrow-code order.
    pub const ALL: [Outcome; 5] = [
        Self::Completed,
        Self::Refused,
        Self::Failed,
        Self::Violated,
        Self::TrainerFailed,
    ];

    /// The code the escrow contract uses (1 to 5, the table above).
    pub const fn code(self) -> u8 {
        match self {
            Self::Completed => 1,
            Self::Refused => 2,
            Self::Failed => 3,
            Self::Violated => 4,
            Self::TrainerFailed => 5,
        }
    }

    /// The outcome's name, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Violated => "violated",
            Self::TrainerFailed => "trainer-failed",
        }
    }

    /// The outcome named `s` (as serialised), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the depositor pays the fee (70/30) rather than being refunded.
    pub const fn charged(self) -> bool {
        matches!(self, Self::Completed | Self::Violated | Self::TrainerFailed)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job ended as it did, from a fixed vocabulary: the only reason the publisher ever sees
/// (job status, receipt, CLI). Trainer-chosen bytes (file, entry and tensor names, offsets,
/// which identifier matched, exit codes, logs) never reach the publisher: the details go to
/// the hospital's audit trail. Each code belongs to exactly one [`Outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ReasonCode {
    /// The job completed and its outputs passed the guard.
    Completed,
    // Refused before the trainer ran (refunded).
    /// The bundle did not verify against the trust store, or does not match the request.
    BundleRefused,
    /// The publisher is suspended until a DPO reviews an earlier violation.
    PublisherSuspended,
    /// The trainer's resource requests are outside the node's bounds.
    ResourcesOutOfRange,
    /// A per-publisher quota (jobs, bundle storage) is exhausted.
    QuotaExceeded,
    /// The cohort query is not scoped enough (refused before any PACS request).
    QueryRefused,
    /// The admission policy refused the job (its rule messages are in the receipt).
    AdmissionRefused,
    /// The query matched no usable instance.
    CohortEmpty,
    /// The DPO rejected the job.
    DpoRejected,
    /// The deposit cannot fund this job (amount, hospital, closed escrow).
    DepositRefused,
    /// The deposit could be refunded before the job could be settled.
    DepositExpiresTooSoon,
    /// The attestation evidence did not verify.
    AttestationRefused,
    /// The final policy gate refused the job.
    FinalGateRefused,
    /// The request's `validation_percent` is outside the hospital's range.
    ValidationOutOfRange,
    // The node failed (refunded).
    /// The node stopped while the job's enclave key was live; the job was not re-run.
    NodeRestarted,
    /// The PACS did not answer the cohort query or a fetch within its bounds.
    PacsUnavailable,
    /// The policy engine failed.
    PolicyError,
    /// Attestation evidence could not be produced.
    AttestationError,
    /// The trainer image could not be unpacked.
    UnpackFailed,
    /// The enclave runtime failed (not the trainer).
    EnclaveError,
    /// The record feed failed, so it cannot vouch for what it fed; nothing is released.
    FeedFailed,
    /// A step of the node kept failing on the node's side; the job was stopped.
    NodeError,
    // After the trainer ran (charged).
    /// The output guard refused the outputs (whatever rule fired).
    OutputGuard,
    /// The trainer failed (whatever the exit status, signal or time).
    TrainerFailed,
    /// The node's privacy audit found the released model gives its training records away past
    /// the hospital's threshold (`[policy.audit] max_attack_auc`): nothing is released.
    PrivacyAudit,
}

impl ReasonCode {
    /// Every code.
    pub const ALL: [ReasonCode; 25] = [
        Self::Completed,
        Self::BundleRefused,
        Self::PublisherSuspended,
        Self::ResourcesOutOfRange,
        Self::QuotaExceeded,
        Self::QueryRefused,
        Self::AdmissionRefused,
        Self::CohortEmpty,
        Self::DpoRejected,
        Self::DepositRefused,
        Self::DepositExpiresTooSoon,
        Self::AttestationRefused,
        Self::FinalGateRefused,
        Self::ValidationOutOfRange,
        Self::NodeRestarted,
        Self::PacsUnavailable,
        Self::PolicyError,
        Self::AttestationError,
        Self::UnpackFailed,
        Self::EnclaveError,
        Self::FeedFailed,
        Self::NodeError,
        Self::OutputGuard,
        Self::TrainerFailed,
        Self::PrivacyAudit,
    ];

    /// The code as serialised (kebab-case).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::BundleRefused => "bundle-refused",
            Self::PublisherSuspended => "publisher-suspended",
            Self::ResourcesOutOfRange => "resources-out-of-range",
            Self::QuotaExceeded => "quota-exceeded",
            Self::QueryRefused => "query-refused",
            Self::AdmissionRefused => "admission-refused",
            Self::CohortEmpty => "cohort-empty",
            Self::DpoRejected => "dpo-rejected",
            Self::DepositRefused => "deposit-refused",
            Self::DepositExpiresTooSoon => "deposit-expires-too-soon",
            Self::AttestationRefused => "attestation-refused",
            Self::FinalGateRefused => "final-gate-refused",
            Self::ValidationOutOfRange => "validation-out-of-range",
            Self::NodeRestarted => "node-restarted",
            Self::PacsUnavailable => "pacs-unavailable",
            Self::PolicyError => "policy-error",
            Self::AttestationError => "attestation-error",
            Self::UnpackFailed => "unpack-failed",
            Self::EnclaveError => "enclave-error",
            Self::FeedFailed => "feed-failed",
            Self::NodeError => "node-error",
            Self::OutputGuard => "output-guard",
            Self::TrainerFailed => "trainer-failed",
            Self::PrivacyAudit => "privacy-audit",
        }
    }

    /// The code named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The outcome a job ending with this code has.
    pub const fn outcome(self) -> Outcome {
        match self {
            Self::Completed => Outcome::Completed,
            Self::BundleRefused
            | Self::PublisherSuspended
            | Self::ResourcesOutOfRange
            | Self::QuotaExceeded
            | Self::QueryRefused
            | Self::AdmissionRefused
            | Self::CohortEmpty
            | Self::DpoRejected
            | Self::DepositRefused
            | Self::DepositExpiresTooSoon
            | Self::AttestationRefused
            | Self::FinalGateRefused
            | Self::ValidationOutOfRange => Outcome::Refused,
            Self::NodeRestarted
            | Self::PacsUnavailable
            | Self::PolicyError
            | Self::AttestationError
            | Self::UnpackFailed
            | Self::EnclaveError
            | Self::FeedFailed
            | Self::NodeError => Outcome::Failed,
            Self::OutputGuard => Outcome::Violated,
            // Charged like a trainer's failure, never refunded (a refund would be a free
            // oracle on what the model memorised) and no suspension (an honest model may
            // overfit): ARCHITECTURE.md, "The privacy audit".
            Self::TrainerFailed | Self::PrivacyAudit => Outcome::TrainerFailed,
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of excluded instances by reason (`burned-in-annotation`, `opted-out`, …). Never names
/// a patient.
pub type ExclusionCounts = BTreeMap<String, u64>;
