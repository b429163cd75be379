//! Receipt body bytes: either refused, or canonical bytes that re-serialise to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rapha_receipt::ReceiptBody;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = ReceiptBody::from_canonical_bytes(data) {
        assert_eq!(body.canonical_bytes().ok().as_deref(), Some(data));
    }
});
