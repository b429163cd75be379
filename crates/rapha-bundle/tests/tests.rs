//! Integration tests for rapha-bundle (one binary per crate keeps link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod archive;
mod audit_decl;
mod common;
mod dsse;
mod fuzz_props;
mod hostile;
mod interop;
mod keys_trust;
mod unpack;
mod unpack_images;
mod verify;
