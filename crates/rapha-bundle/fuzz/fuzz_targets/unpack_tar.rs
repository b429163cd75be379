//! Arbitrary bytes as an uncompressed tar layer: the unpacker must return, never panic, and
//! never write outside its destination.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let dest = tmp.path().join("root");
    if std::fs::create_dir(&dest).is_err() {
        return;
    }
    let _ = rapha_bundle::fuzzing::unpack_tar_bytes(data, &dest);
    let beside = std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(1);
    assert_eq!(beside, 1, "the unpacker wrote outside its destination");
});
