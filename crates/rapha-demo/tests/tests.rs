//! Integration tests for the `rapha-demo` binary.
