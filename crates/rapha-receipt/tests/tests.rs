//! Integration tests for rapha-receipt (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod common;
mod crash;
mod eip712;
mod escrow_settlement;
mod fuzz;
mod jcs;
mod log;
mod passkey;
#[path = "../../rapha-core/tests/python.rs"]
mod python;
#[path = "../../rapha-testkit/src/passkey.rs"]
mod softauth;
mod tamper;
mod versions;
