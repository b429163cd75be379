//! Integration tests for rapha-enclave (one binary per crate keeps link time down).

