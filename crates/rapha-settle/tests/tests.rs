#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure

mod anvil;
mod artifact;
mod common;
mod confirm;
mod escrow;
mod interop;
mod ledger;
mod network;
mod parse;
mod settler;
mod worker;
