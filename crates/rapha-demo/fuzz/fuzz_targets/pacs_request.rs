//! The embedded demo PACS parses HTTP requests from a socket: no byte stream may panic it or
//! make it allocate past its limits. Same entry point as the proptest in tests/pacs.rs; seeds
//! in corpus/pacs_request/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = rapha_demo::pacs::fuzz_requests(bytes);
});
