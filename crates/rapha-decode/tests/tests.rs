//! The sandboxed decode process, from the attacker's side and against the reference decoders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

/// rapha-dicom's test helpers (the pydicom corpus, its reference decoder), shared as they are.
#[allow(dead_code)]
#[path = "../../rapha-dicom/tests/common.rs"]
mod dicom_common;

mod attacks;
mod corpus;
mod fuzz;
mod htj2k;
mod malformed;
mod sessions;
mod support;
