//! Integration tests for rapha-policy (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod approvals;
mod common;
mod crosscheck;
mod digests;
mod fuzz;
mod gates;
#[path = "../../rapha-core/tests/python.rs"]
mod python;
mod rego_unit;

/// A cohort summary for review tests.
pub fn gates_cohort() -> rapha_policy::CohortSummary {
    rapha_policy::CohortSummary {
        commitment: rapha_core::Digest::of(b"cohort"),
        patients: 80,
        train_patients: 64,
        validation_patients: 16,
        studies: 90,
        instances: 200,
        modalities: [("CR".to_owned(), 200)].into(),
        exclusions: [("opted-out".to_owned(), 3)].into(),
        demographics: None,
    }
}
