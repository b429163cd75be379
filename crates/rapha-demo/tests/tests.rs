//! Integration tests for the `rapha-demo` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod pacs;
mod run;
mod walkthrough;
