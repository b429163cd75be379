//! Arbitrary bytes as an uploaded bundle archive: the unpacker must return, never panic, never
//! write outside its destination, and leave no destination behind when it refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let dest = tmp.path().join("bundle");
    let result = rapha_bundle::fuzzing::unpack_bundle_archive_bytes(data, &dest);
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    match result {
        Ok(_) => assert_eq!(beside, vec![std::ffi::OsString::from("bundle")]),
        Err(_) => assert!(beside.is_empty(), "a refused archive left files behind"),
    }
});
