#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rapha_enclave::fuzzing::protocol_request(data));
