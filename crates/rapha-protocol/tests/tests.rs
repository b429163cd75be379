//! Integration tests for rapha-protocol: the names the wire carries, the messages' bytes, and
//! the Python SDK's generated constants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod python;
mod wire;
