#![no_main]
// Signed settlements arrive as JSON (worker input, node API); parsing must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rapha_settle::SignedSettlement::from_json(data);
});
