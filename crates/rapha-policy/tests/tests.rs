//! Integration tests for rapha-policy (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod approvals;
mod common;
mod crosscheck;
mod fuzz;
mod gates;
mod rego_unit;
