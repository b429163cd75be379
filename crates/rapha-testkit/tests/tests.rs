//! Integration tests for rapha-testkit: the harness against the real services, the cohort
//! generator against pydicom and Orthanc.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod cohort;
mod services;
mod support;
