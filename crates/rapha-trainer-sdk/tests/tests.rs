//! Integration tests for rapha-trainer-sdk: the SDK against a scripted peer over a real socket
//! pair, bad frames from a hostile node, and output round trips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod audit_runner;
mod reference;
mod sdk;
