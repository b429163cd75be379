use std::path::PathBuf;

use crate::json::JsonError;
use crate::pixels::PixelError;
use crate::scope::ScopeRefusal;

/// Errors of rapha-dicom. Messages name what was refused and why, never a patient: PACS URLs
/// are reported without their path (which carries UIDs) and values are never quoted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DicomError {
    /// The query does not narrow the cohort (**I2**); no request was sent.
    #[error(transparent)]
    ScopeRefused(#[from] ScopeRefusal),
    /// The PACS sent DICOM JSON that does not follow PS3.18 Annex F.
    #[error("the PACS sent malformed DICOM JSON: {0}")]
    Json(#[from] JsonError),
    /// Pixel data could not be decoded.
    #[error(transparent)]
    Pixels(#[from] PixelError),
    /// The HTTP request failed before an answer arrived (connection, TLS, timeout).
    #[error("request to the PACS at {base} ({what}) failed: {source}")]
    Http {
        base: String,
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The PACS did not finish answering within the request's time limit.
    #[error(
        "the PACS at {base} did not finish answering {what} within {seconds} s \
         (dicom.pacs.request_timeout_seconds)"
    )]
    Timeout {
        base: String,
        what: &'static str,
        seconds: u64,
    },
    /// The PACS sent more bytes than the limit for this kind of answer.
    #[error("the PACS at {base} sent more than {limit} bytes for {what} (dicom.pacs.{setting})")]
    ResponseTooLarge {
        base: String,
        what: &'static str,
        limit: u64,
        setting: &'static str,
    },
    /// The cohort build as a whole ran past its deadline.
    #[error(
        "the cohort build did not finish within its deadline of {seconds} s \
         (dicom.pacs.cohort_deadline_seconds); no partial cohort is kept"
    )]
    CohortDeadline { seconds: u64 },
    /// The cohort build needed more QIDO-RS pages than allowed.
    #[error(
        "the cohort build needed more than {limit} QIDO-RS pages (dicom.pacs.max_pages); \
         no partial cohort is kept"
    )]
    TooManyPages { limit: u64 },
    /// The cohort would keep more instances than allowed.
    #[error(
        "the cohort would keep more than {limit} instances ([cohort] max_instances); no \
         partial cohort is kept"
    )]
    TooManyInstances { limit: u64 },
    /// A QIDO-RS page brought nothing new: the PACS ignores `offset` or repeats itself.
    #[error(
        "the PACS at {base} answered page {page} of a {what} with no result it had not sent \
         before (it ignores offset or repeats pages); paging stopped"
    )]
    PagingStalled {
        base: String,
        what: &'static str,
        page: u64,
    },
    /// The PACS answered with a non-success status.
    #[error("the PACS at {base} answered HTTP {status} to {what}")]
    HttpStatus {
        base: String,
        what: &'static str,
        status: u16,
    },
    /// A WADO-RS response that is not `multipart/related; type="application/dicom"` or whose
    /// multipart framing is broken.
    #[error("WADO-RS response from the PACS is not valid multipart/related DICOM: {0}")]
    Multipart(String),
    /// The client configuration is unusable (base URL, CA file, auth header).
    #[error("DICOMweb client configuration: {0}")]
    ClientConfig(String),
    /// A DICOM file could not be parsed.
    #[error("cannot parse DICOM file {path}: {reason}")]
    MalformedFile { path: PathBuf, reason: String },
    /// A DICOM object lacks an identifier every record needs.
    #[error("DICOM object has no {0}: it cannot be pseudonymized and is excluded")]
    MissingIdentifier(&'static str),
    /// The hospital's config for this crate is invalid.
    #[error("DICOM configuration: {0}")]
    Config(String),
    /// The opt-out list or label table is unreadable or malformed.
    #[error("{what} file {path}: {reason}")]
    ListFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// Reading local files failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A cohort file is not the one committed, or cannot be written or parsed
    /// ([`crate::cohort_file`]).
    #[error("cohort file {path}: {reason}")]
    CohortFile { path: PathBuf, reason: String },
    /// Key handling (loading the HMAC key) failed.
    #[error(transparent)]
    Core(#[from] rapha_core::CoreError),
}

/// Result with [`DicomError`].
pub type Result<T, E = DicomError> = std::result::Result<T, E>;
