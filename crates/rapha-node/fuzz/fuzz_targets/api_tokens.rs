//! The API token file is edited by hand: no file may panic its parser. Same entry point as
//! the proptest in tests/api.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = rapha_node::api::Tokens::parse(text);
    }
});
