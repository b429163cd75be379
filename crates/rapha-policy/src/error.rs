use std::path::PathBuf;

use rapha_core::Digest;

/// Errors of the policy gates, DPO approvals and their store. Messages say what was refused and
/// why, in words a hospital admin can act on; none contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    PolicyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy {name} does not compile: {message}")]
    PolicyCompile { name: String, message: String },
    #[error("evaluating the {gate} gate of the policy failed: {message}; the job is refused")]
    Evaluation { gate: &'static str, message: String },
    #[error(
        "the policy's {gate} gate returned {found} instead of {{\"allow\": bool, \"reasons\": [string]}} \
         with allow true exactly when there are no reasons; the job is refused"
    )]
    MalformedDecision { gate: &'static str, found: String },
    #[error("the study date range {0:?} is not of the form YYYYMMDD-YYYYMMDD with valid dates")]
    InvalidDateRange(String),
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("cannot read key file {path}: {source}")]
    KeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid DPO public key {0:?}: expected 64 hex digits of an Ed25519 public key")]
    InvalidPublicKey(String),
    #[error("the approval for job {job} has an invalid signature: it was not made by the key it names, or it was altered")]
    BadSignature { job: Digest },
    #[error("the approval for job {job} expires before it was issued")]
    ExpiryBeforeIssue { job: Digest },
    #[error("no job {0} is waiting for review; check the digest with `rapha-node approvals list`")]
    UnknownJob(Digest),
    #[error("job {0} has no recorded approval")]
    NoApproval(Digest),
    #[error("job {0} has already started, so its approval can no longer be revoked or replaced")]
    AlreadyStarted(Digest),
    #[error("the approval for job {0} was revoked; the job may not start")]
    Revoked(Digest),
    #[error("approval store {path}: {source}")]
    StoreIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("approval store file {path} is corrupt: {message}")]
    StoreCorrupt { path: PathBuf, message: String },
    #[error(transparent)]
    StoreVersion(#[from] rapha_migrate::VersionError),
    #[error("job {job}: the request has no canonical JSON form, so no job digest: {reason}")]
    NotCanonical {
        job: rapha_core::JobId,
        reason: String,
    },
}

/// Result with [`PolicyError`].
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
