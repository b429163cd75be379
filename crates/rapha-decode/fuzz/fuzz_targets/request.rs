#![no_main]
//! cargo fuzz run request -- the worker's framing: the fixed request header it reads from its
//! standard input before the frame (codec, geometry, sample size, input length). A header that
//! parses must encode back to the same bytes and bound its input and output by
//! MAX_INPUT_BYTES and MAX_OUTPUT_BYTES. The stable driver is tests/fuzz.rs (proptest); the
//! frames after the header are fuzzed through rapha-dicom's `sandboxed_frame` target.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = rapha_decode::Request::decode(data) {
        assert_eq!(&r.encode()[..], &data[..rapha_decode::REQUEST_LEN]);
        assert!(r.input_len() <= rapha_decode::MAX_INPUT_BYTES);
        assert!(r.output_len() <= rapha_decode::MAX_OUTPUT_BYTES);
    }
});
