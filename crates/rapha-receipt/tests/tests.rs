//! Integration tests for rapha-receipt (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod common;
mod crash;
mod eip712;
mod escrow_settlement;
mod fuzz;
mod jcs;
mod log;
#[path = "../../rapha-core/tests/python.rs"]
mod python;
mod tamper;
mod versions;
