//! Integration tests for the `rapha` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod bundle;
mod deposit;
mod job;
mod verify;
