//! Integration tests for rapha-attest (one binary per crate keeps link time down).

