//! A receipt file from anyone: parsing and verification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rapha_receipt::{verify, SignedTreeHead, VerifyOptions};

fuzz_target!(|data: &[u8]| {
    let _ = verify(data, &VerifyOptions::default());
    let _ = SignedTreeHead::from_json(data);
});
