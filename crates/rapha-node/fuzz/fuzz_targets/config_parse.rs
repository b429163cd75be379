//! The node configuration is edited by hand: no file may panic the parser. Same entry point
//! as the proptest in tests/config_errors.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = rapha_node::config::Config::parse(text);
    }
});
