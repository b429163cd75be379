//! Integration tests for rapha-core (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod common;
mod fs;
mod jcs;
mod merkle;
mod percent;
mod python;
