use std::path::PathBuf;

/// Errors of the enclave runtime. Guard *rejections* are not errors: they are a verdict
/// ([`crate::guard::Verdict`]) that goes into the receipt. These are failures to run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnclaveError {
    #[error("could not {what} at {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("could not harden the runtime process ({what}): {source}")]
    Harden {
        what: &'static str,
        source: nix::Error,
    },

    #[error("could not start the OCI runtime {command:?}: {source}")]
    RuntimeStart {
        command: String,
        source: std::io::Error,
    },

    #[error("the OCI runtime {command:?} failed to {action}: {detail}")]
    Runtime {
        command: String,
        action: &'static str,
        detail: String,
    },

    #[error("could not mount the size-limited /out tmpfs at {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },

    #[error("the trainer rootfs {0} is not a directory")]
    NoRootfs(PathBuf),

    #[error(
        "the trainer declares {requested} GPU(s) and this node has none configured \
         ([trainer] gpus); admission should have refused it"
    )]
    NoGpu { requested: u32 },

    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),

    #[error("the trainer entrypoint is empty")]
    NoEntrypoint,

    #[error("the job spec is invalid: {0}")]
    BadSpec(String),

    #[error(transparent)]
    Limit(#[from] crate::sandbox::LimitError),

    #[error(
        "could not lock the runtime's memory against swap ({detail}); decoded pixels must never \
         reach a swap device: run the node with CAP_IPC_LOCK or LimitMEMLOCK=infinity"
    )]
    MemoryLock { detail: String },

    #[error("record {index} is unavailable: {reason}")]
    RecordUnavailable { index: usize, reason: String },

    /// The job's cohort file could not be read or is not the one committed.
    #[error("the cohort cannot be read: {0}")]
    Cohort(String),

    #[error("could not serialise {0}")]
    Serialise(&'static str),

    #[error(
        "the record feed failed ({0}); what was fed cannot be checked against the outputs, so \
         nothing is released"
    )]
    FeedFailed(String),
}

impl EnclaveError {
    /// The reason code (rapha-core's vocabulary) a job that ended on this error has: the
    /// feed's own, or the runtime's. The text stays with the hospital.
    pub const fn reason_code(&self) -> &'static str {
        match self {
            Self::FeedFailed(_) => rapha_core::ReasonCode::FeedFailed.as_str(),
            _ => rapha_core::ReasonCode::EnclaveError.as_str(),
        }
    }
}

/// Result with [`EnclaveError`].
pub type Result<T, E = EnclaveError> = std::result::Result<T, E>;

pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> EnclaveError {
    let path = path.into();
    move |source| EnclaveError::Io { what, path, source }
}
