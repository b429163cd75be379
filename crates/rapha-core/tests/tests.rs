//! Integration tests for rapha-core (one binary per crate keeps link time down).

mod common;
mod jcs;
mod merkle;
