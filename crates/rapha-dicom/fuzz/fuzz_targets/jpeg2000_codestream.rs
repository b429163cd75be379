#![no_main]
//! cargo fuzz run jpeg2000_codestream seeds/j2k -- the same entry point runs on stable in the
//! crate's proptest (tests/j2k.rs), on codestreams made by OpenJPH.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rapha_dicom::fuzzing::jpeg2000_codestream(data));
