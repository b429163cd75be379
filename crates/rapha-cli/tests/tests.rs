//! Integration tests for the `rapha` binary.

