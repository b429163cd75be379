use std::path::PathBuf;

use rapha_eth::{Address, EthError};

/// Everything `rapha-receipt` can refuse. Messages say what was refused and what to do.
///
/// Verification errors fall in classes that `rapha verify` maps to distinct exit codes
/// (see [`ReceiptError::class`]): malformed input, an invalid signature, a receipt that is not
/// in the log, a log whose heads are inconsistent, and the four refusals of a passkey approval
/// (altered, another job, a credential not enrolled, replayed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    // ---- malformed input -------------------------------------------------------------------
    #[error("malformed receipt: {0}")]
    Malformed(String),
    #[error("malformed signed tree head: {0}")]
    MalformedHead(String),
    #[error("receipt schema {found:?} is not supported; this verifier reads {expected:?}")]
    UnsupportedSchema {
        found: String,
        expected: &'static str,
    },
    #[error(
        "receipt body bytes are not RFC 8785 canonical JSON; a node only ever signs canonical \
         bytes, so these were produced or edited by something else"
    )]
    NotCanonical,
    #[error(
        "the human-readable copy of the body differs from the signed body bytes; someone edited \
         the copy: rely on the signed bytes only"
    )]
    CopyMismatch,
    #[error("receipt body is inconsistent: {0}")]
    InconsistentBody(String),
    #[error("cannot write canonical JSON: {0}")]
    Canonicalize(&'static str),

    // ---- invalid signature -----------------------------------------------------------------
    #[error("invalid signature encoding: {0}")]
    BadSignature(&'static str),
    #[error(
        "receipt signature recovers to {recovered}, but the body names node {claimed}: the body, \
         its payment terms, its log position or the signature was altered"
    )]
    SignerMismatch {
        recovered: Address,
        claimed: Address,
    },
    #[error("receipt is signed by node {found}, not by the expected node {expected}")]
    WrongSigner { found: Address, expected: Address },
    #[error("signed tree head (size {tree_size}) is signed by {found}, not by node {expected}")]
    HeadSigner {
        tree_size: u64,
        found: Address,
        expected: Address,
    },

    // ---- not in the log --------------------------------------------------------------------
    #[error("receipt is not in the log: {0}")]
    NotInLog(String),

    // ---- inconsistent log ------------------------------------------------------------------
    #[error("the log's signed heads are inconsistent (the log was rewritten or forked): {0}")]
    Inconsistent(String),

    // ---- passkey approvals -------------------------------------------------------------------
    #[error(
        "the passkey approval's assertion does not verify (it was altered after the DPO signed \
         it, or signed by another key): {0}"
    )]
    PasskeyTampered(crate::webauthn::WebauthnError),
    #[error(
        "the passkey approval was signed for another job, nonce or time: its challenge is not the \
         one recomputed from this receipt's job digest {job_digest}, nonce and time"
    )]
    PasskeyOtherJob { job_digest: rapha_core::Digest },
    #[error(
        "the passkey approval's credential {credential} was not an enrolled DPO credential at log \
         entry {at}: {why}"
    )]
    PasskeyNotEnrolled {
        credential: String,
        at: u64,
        why: String,
    },
    #[error(
        "the passkey approval is a replay: credential {credential} with nonce {nonce} also \
         approved job {other_job} (receipt {other_receipt}); a nonce is single use"
    )]
    PasskeyReplayed {
        credential: String,
        nonce: String,
        other_job: rapha_core::JobId,
        other_receipt: rapha_core::Digest,
    },
    #[error("the DPO credential chain in the receipt is invalid at log entry {index}: {why}")]
    CredentialChain { index: u64, why: String },

    // ---- node key --------------------------------------------------------------------------
    // A deliberate duplicate (issue 23): rapha-core, rapha-bundle and rapha-receipt each have
    // this variant for the key file they read (the node's receipt key here); the check is one
    // (`rapha_core::ModeError`), the variants stay in each crate's error type so that its
    // callers match their own key's refusal and its text names that key.
    #[error(
        "node key file {path} has mode {mode:o}: it must not be readable by group or others; \
         run `chmod 600 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("cannot read node key file {path}: {source}")]
    KeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node key file {path}: {reason}; expected 64 hex digits (a secp256k1 secret), create \
         one with `rapha-node keygen --node --out FILE`"
    )]
    KeyFormat { path: PathBuf, reason: &'static str },
    #[error("signing failed: {0}")]
    Signing(&'static str),

    // ---- log storage -----------------------------------------------------------------------
    #[error("receipt log {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Version(#[from] rapha_migrate::VersionError),
    #[error("receipt log {path} is damaged: {reason}; restore it from backup, do not truncate it")]
    Corrupt { path: PathBuf, reason: String },
    #[error("receipt log request refused: {0}")]
    LogRequest(String),
}

impl From<EthError> for ReceiptError {
    fn from(e: EthError) -> Self {
        match e {
            EthError::Signature(why) => Self::BadSignature(why),
            EthError::Signing(why) => Self::Signing(why),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// The four verification outcomes a caller (the CLI) tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The input is not a well-formed receipt or head.
    Malformed,
    /// A signature is invalid or by the wrong key.
    InvalidSignature,
    /// The receipt is not included in the log head it is checked against.
    NotInLog,
    /// Two signed heads of the log contradict each other.
    Inconsistent,
    /// A passkey approval whose assertion does not verify (altered bytes, another key).
    PasskeyTampered,
    /// A passkey approval whose challenge is not this job's.
    PasskeyOtherJob,
    /// A passkey approval by a credential not enrolled at the approval's log position.
    PasskeyNotEnrolled,
    /// A passkey approval whose (credential, nonce) also approved another receipt's job.
    PasskeyReplayed,
    /// Local failures (key files, storage).
    Local,
}

impl ReceiptError {
    /// Which class of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Malformed(_)
            | Self::MalformedHead(_)
            | Self::UnsupportedSchema { .. }
            | Self::NotCanonical
            | Self::CopyMismatch
            | Self::InconsistentBody(_)
            | Self::Canonicalize(_) => ErrorClass::Malformed,
            Self::BadSignature(_)
            | Self::SignerMismatch { .. }
            | Self::WrongSigner { .. }
            | Self::HeadSigner { .. } => ErrorClass::InvalidSignature,
            Self::PasskeyTampered(_) => ErrorClass::PasskeyTampered,
            Self::PasskeyOtherJob { .. } => ErrorClass::PasskeyOtherJob,
            Self::PasskeyNotEnrolled { .. } | Self::CredentialChain { .. } => {
                ErrorClass::PasskeyNotEnrolled
            }
            Self::PasskeyReplayed { .. } => ErrorClass::PasskeyReplayed,
            Self::NotInLog(_) => ErrorClass::NotInLog,
            Self::Inconsistent(_) => ErrorClass::Inconsistent,
            Self::KeyPermissions { .. }
            | Self::KeyIo { .. }
            | Self::KeyFormat { .. }
            | Self::Signing(_)
            | Self::Store { .. }
            | Self::Version(_)
            | Self::Corrupt { .. }
            | Self::LogRequest(_) => ErrorClass::Local,
        }
    }
}

/// Result with [`ReceiptError`].
pub type Result<T, E = ReceiptError> = std::result::Result<T, E>;
