//! Integration tests for rapha-receipt (one binary per crate keeps link time down).

