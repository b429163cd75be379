//! Integration tests for rapha-protocol: the names the wire carries, and the messages'
//! bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod wire;
