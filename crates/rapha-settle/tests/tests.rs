//! Integration tests for rapha-settle (one binary per crate keeps link time down).

