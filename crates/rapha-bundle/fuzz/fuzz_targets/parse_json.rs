//! Arbitrary bytes to every JSON/TOML parser of outside input: DSSE envelope, in-toto
//! statement, OCI index, manifest, config, trainer.toml.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rapha_bundle::fuzzing::parse_all(data);
});
