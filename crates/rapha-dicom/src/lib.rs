//! DICOMweb client, scope guard, metadata extraction and pseudonymizer.
//!
//! Enforces **I1** (no raw PHI reaches the trainer: identifiers become HMAC-SHA256 pseudonyms
//! per role and per job ([`Pseudonymizer`]), free text is suppressed, only allow-listed
//! technical attributes survive), **I2** (a query that does not narrow the cohort is refused
//! before any request is built) and the DICOM half of **I3** (instances with burned-in-PHI
//! risk are excluded from the cohort).
//!
//! ```text
//!  query string / CohortQuery ──scope::ScopedQuery::parse──▶ ScopedQuery   (refusal names a rule)
//!                                                              │
//!  DicomWebClient: QIDO studies (paged) ─▶ ScopedStudy ─▶ series ─▶ WADO-RS metadata
//!                                                              │ json::parse_datasets (strict)
//!                                                              ▼
//!  cohort::CohortBuilder: exclusion::ExclusionPolicy, OptOuts ─▶ record::extract ─▶ Record
//!                          (Pseudonymizer over rapha_core::HashedId)
//!
//!  enclave runtime only: DicomWebClient::retrieve_instance_bytes (WADO-RS) ─▶ pixels::Instance
//!    (guard: inflate with a cap, lengths, depth ≤ 16) ─▶ cohort::verify_served ─▶ decode
//! ```
//!
//! The trainer sees [`Record`]s and decoded pixels, never a DICOM object. Everything the PACS
//! or a file says is outside input: parsers return typed errors and never panic on it, within
//! bounded memory and time ([`guard`], [`pixels::DecodeLimits`], the JSON nesting check), and
//! the conversation with the PACS is bounded too ([`PacsLimits`]: per-request deadline and
//! size cap, per-build deadline and page allowance, a paging loop that stops when a page
//! brings nothing new). At fetch time the served object must be the approved one
//! ([`cohort::verify_served`]).

pub mod attrs;
pub mod client;
pub mod cohort;
pub mod cohort_file;
pub mod config;
pub mod date;
mod error;
pub mod exclusion;
pub mod frames;
pub mod fuzzing;
pub mod guard;
pub mod json;
pub mod multipart;
pub mod pixels;
pub mod pseudonym;
pub mod record;
pub mod scope;

pub use client::{Auth, Budget, ClientOptions, DicomWebClient, ScopedStudy};
pub use config::{DicomConfig, PacsLimits};
pub use error::{DicomError, Result};
pub use pseudonym::Pseudonymizer;
pub use record::Record;
pub use scope::{ScopeLimits, ScopeRefusal, ScopeRule, ScopedQuery};
