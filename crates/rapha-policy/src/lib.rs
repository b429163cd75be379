//! Rego policy evaluation (regorus), the default policy, and DPO approvals.
//!
//! Runs the two gates of the job path (see ARCHITECTURE.md), both from one Rego package
//! `rapha` (`policy/rapha.rego` by default):
//!
//! ```text
//!   job request + bundle outputs ──▶ admission (step 2) ──▶ PACS is queried only if allowed
//!   approval + attestation + cohort ──▶ final (step 7) ──▶ trainer runs only if allowed
//! ```
//!
//! Each gate returns a [`Decision`]: allow, every denial reason in words a Data Protection
//! Officer understands, and a digest binding the policy, the input and the hospital's data, so
//! the receipt proves what was decided on what (**I6**).
//!
//! DPO approvals are Ed25519 signatures over a job digest that covers the job request and the
//! cohort commitment ([`job_digest`]: v2, SHA-256 of RFC 8785 JSON any JCS library recomputes;
//! v1 digests of jobs reviewed before still verify, see [`JobDigestVersion`]); the [`ApprovalStore`] lets the DPO revoke an approval
//! until the job starts, and never after. Development keys carry [`DEV_KEY_PREFIX`] so that a
//! production node refuses them (**I8**).

mod approval;
mod error;
mod gate;
mod keys;
mod rego_tests;
mod store;

pub use approval::{
    job_digest, job_digest_v1, job_digest_v2, Approval, ApprovalRecord, CohortSummary,
    DpoPublicKey, DpoSigningKey, ImageReview, JobDigestRef, JobDigestVersion, LinkedJob,
    PublisherBits, ReleaseReview, ResourceReview, ReviewRequest, JOB_DIGEST_V2,
};
pub use error::{PolicyError, Result};
pub use gate::{
    date_range_days, decision_digest, AdmissionInput, ApprovalFacts, AttestationFacts, CohortFacts,
    Decision, Declared, FinalInput, Gate, HospitalPolicy, JobBudget, Mode, OutputLimits, PastJob,
    Policy, PublisherTrust, QueryScope, ScopeLimits, DEFAULT_MAX_PUBLISHER_BITS,
    DEFAULT_MIN_PATIENTS, DEFAULT_MIN_VALIDATION_PATIENTS, DEFAULT_POLICY, PACKAGE,
};
pub use keys::{is_dev_key, read_secret_hex, write_secret_file, write_secret_hex, DEV_KEY_PREFIX};
pub use rego_tests::{run_rego_tests, RegoTestResult};
pub use store::{ApprovalStore, StoreEntry};
