//! Integration tests for rapha-enclave (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod attacks;
mod audit;
mod cdi;
mod corpus;
mod dicom;
mod feed;
mod fuzz;
mod guard;
mod limits;
mod metrics;
mod precision;
mod release;
mod served;
mod support;
