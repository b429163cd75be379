//! Integration tests for rapha-bundle (one binary per crate keeps link time down).
