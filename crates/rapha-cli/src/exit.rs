//! Exit codes shared by every `rapha` command, and the failures that map to them.
//!
//! A script driving `rapha` branches on the code alone: the same code means the same thing
//! whichever command returned it. Everything else that goes wrong is a local error (1).

use std::fmt::Write as _;
use std::path::PathBuf;

use rapha_core::{Digest, JobId};

/// A local error: bad arguments, an unreadable file, an empty query, a file in the way.
pub const LOCAL: u8 = 1;
/// The node answered and refused the request (HTTP 4xx: bad token, wrong role, unknown job,
/// a request it will not accept).
pub const NODE_REFUSED: u8 = 2;
/// The job ended refused or failed (the node's reason is printed).
pub const JOB_NOT_COMPLETED: u8 = 3;
/// Verification failed: a signature is not the node's, or a file is not the one the receipt
/// commits to.
pub const VERIFICATION: u8 = 4;
/// The node could not be reached, or failed to answer (network, TLS, timeout, HTTP 5xx).
pub const UNREACHABLE: u8 = 5;
/// Verification failed: not a receipt or head, non-canonical body, edited human copy.
pub const MALFORMED: u8 = 6;
/// Verification failed: the receipt is not in the node's signed log head.
pub const NOT_IN_LOG: u8 = 7;
/// Verification failed: two signed heads of the node contradict each other (a forked log).
pub const INCONSISTENT: u8 = 8;

/// Verification failed: the receipt's passkey approval does not verify (its assertion was
/// altered after the DPO signed it, or signed by another key).
pub const PASSKEY_TAMPERED: u8 = 9;
/// Verification failed: the receipt's passkey approval was made for another job (its challenge
/// is not this job digest's, nonce's and time's).
pub const PASSKEY_OTHER_JOB: u8 = 10;
/// Verification failed: the receipt's passkey approval is by a credential that was not an
/// enrolled DPO credential in the log at the approval (or the credential chain is invalid).
pub const PASSKEY_NOT_ENROLLED: u8 = 11;
/// Verification failed: the receipt's passkey approval replays one of another receipt given.
pub const PASSKEY_REPLAYED: u8 = 12;

/// Every code with its meaning, as `--help` prints it.
pub const TABLE: &[(u8, &str)] = &[
    (0, "success"),
    (
        LOCAL,
        "local error: bad arguments, unreadable file, empty query, a different file in the way",
    ),
    (
        NODE_REFUSED,
        "the node refused the request (HTTP 4xx: bad token, wrong role, unknown job, invalid request)",
    ),
    (
        JOB_NOT_COMPLETED,
        "the job ended refused or failed (status --watch, fetch); the reason is printed",
    ),
    (
        VERIFICATION,
        "verification failed: a signature is not the node's, or an output's digest differs from the receipt",
    ),
    (
        UNREACHABLE,
        "the node could not be reached or failed to answer (network, TLS, timeout, HTTP 5xx)",
    ),
    (
        MALFORMED,
        "malformed receipt or signed head (non-canonical body, edited human copy, bad schema)",
    ),
    (NOT_IN_LOG, "the receipt is not in the node's signed log head"),
    (
        INCONSISTENT,
        "two signed log heads of the node contradict each other (keep both files: evidence)",
    ),
    (
        PASSKEY_TAMPERED,
        "the DPO's passkey approval in the receipt does not verify (altered, or another key)",
    ),
    (
        PASSKEY_OTHER_JOB,
        "the DPO's passkey approval was made for another job (its challenge is not this job's)",
    ),
    (
        PASSKEY_NOT_ENROLLED,
        "the passkey that approved was not an enrolled DPO credential in the log at that time",
    ),
    (
        PASSKEY_REPLAYED,
        "the passkey approval replays one of another receipt given with --other",
    ),
];

/// The exit-code table as text for `--help`.
pub fn help() -> String {
    let mut s = String::from("Exit codes (the same for every command):\n");
    for (code, meaning) in TABLE {
        let _ = writeln!(s, "  {code}  {meaning}");
    }
    s
}

/// A failure with its own exit code (anything else is [`LOCAL`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// HTTP 4xx with the node's typed error.
    #[error("the node refused the request (HTTP {status}, {code}): {message}")]
    NodeRefused {
        status: u16,
        code: String,
        message: String,
    },
    /// The node could not be reached.
    #[error(
        "cannot reach the node at {url}: {detail}. Check --node (scheme, host and port), that \
         `rapha-node serve` is running there, and the network path (firewall, proxy, TLS)"
    )]
    Unreachable { url: String, detail: String },
    /// The node answered with a server error.
    #[error(
        "the node at {url} failed to answer (HTTP {status}, {code}): {message}. Retry later; \
         if it persists, ask the hospital to check the node's logs"
    )]
    NodeError {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The job is settled without completing.
    #[error("job {job} ended {outcome}: {reason}")]
    JobNotCompleted {
        job: JobId,
        outcome: String,
        reason: String,
    },
    /// The receipt failed offline verification.
    #[error("NOT VERIFIED ({class}): {message}")]
    Receipt {
        code: u8,
        class: &'static str,
        message: String,
    },
    /// A downloaded output is not the file the receipt commits to.
    #[error("{0}")]
    OutputDigest(Box<OutputMismatch>),
    /// The node released a file its receipt does not name, or lists one the receipt names
    /// but does not serve it.
    #[error("{0}; nothing was written to the output directory")]
    OutputSet(String),
}

/// An output whose bytes are not the ones the receipt commits to.
#[derive(Debug, thiserror::Error)]
#[error(
    "output {name} does not match the receipt: sha256 {found} ({found_bytes} bytes), the \
     receipt commits to sha256 {expected} ({expected_bytes} bytes); nothing was written to {}",
    dir.display()
)]
pub struct OutputMismatch {
    pub name: String,
    pub expected: Digest,
    pub expected_bytes: u64,
    pub found: Digest,
    pub found_bytes: u64,
    pub dir: PathBuf,
}

impl Failure {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Self::NodeRefused { .. } => NODE_REFUSED,
            Self::Unreachable { .. } | Self::NodeError { .. } => UNREACHABLE,
            Self::JobNotCompleted { .. } => JOB_NOT_COMPLETED,
            Self::Receipt { code, .. } => *code,
            Self::OutputDigest(_) | Self::OutputSet(_) => VERIFICATION,
        }
    }

    /// A stable name for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NodeRefused { .. } => "node-refused",
            Self::Unreachable { .. } => "node-unreachable",
            Self::NodeError { .. } => "node-error",
            Self::JobNotCompleted { .. } => "job-not-completed",
            Self::Receipt { class, .. } => class,
            Self::OutputDigest(_) => "output-digest-mismatch",
            Self::OutputSet(_) => "output-set-mismatch",
        }
    }
}

/// The exit code and `--json` kind of any error a command returns.
pub fn classify(e: &anyhow::Error) -> (u8, &'static str) {
    match e.downcast_ref::<Failure>() {
        Some(f) => (f.code(), f.kind()),
        None => (LOCAL, "local-error"),
    }
}

/// Prints a failure as JSON on stdout (for `--json`), with its exit code.
pub fn print_json_error(e: &anyhow::Error) {
    let (code, kind) = classify(e);
    let out = serde_json::json!({
        "ok": false,
        "error": kind,
        "message": format!("{e:#}"),
        "exit_code": code,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
    );
}
