//! Integration tests for the `rapha-node` binary.

