#![no_main]
//! RAPHA_DECODE_WORKER=target/debug/rapha-decode cargo fuzz run sandboxed_frame -- the JPEG-LS,
//! 12-bit JPEG and HTJ2K decoders in the sandboxed worker (one process per input, so slow: the
//! worker's own crash is what to look for, reported by the entry point as a refusal, which is
//! why the worker is also worth fuzzing directly under its sandbox). The same entry point runs
//! on stable in rapha-decode's proptest (tests/fuzz.rs), on corpus frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rapha_dicom::fuzzing::sandboxed_frame(data);
});
