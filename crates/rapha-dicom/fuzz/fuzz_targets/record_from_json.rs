#![no_main]
//! cargo fuzz run record_from_json -- seeds in ../seeds; the same entry point runs on stable in the crate's
//! proptest (tests/json.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| rapha_dicom::fuzzing::record_from_json(data));
