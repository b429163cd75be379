//! Integration tests for rapha-policy (one binary per crate keeps link time down).

