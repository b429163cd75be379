//! Integration tests of rapha-attest: one binary (see STYLE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod binding;
mod chain;
mod evidence;
mod fuzz_corpus;
mod seal;
mod sgx;
mod tpm;
