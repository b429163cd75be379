#![no_main]
//! cargo fuzz run wado_response seeds/wado -- a WADO-RS instance response (its Content-Type on
//! the first line, then the multipart body) as the negotiating client reads it. The same entry
//! point runs on stable in the crate's proptest (tests/hostile_pacs.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rapha_dicom::fuzzing::wado_response(data);
});
