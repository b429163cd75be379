//! WebAuthn parsers on arbitrary bytes: authenticatorData, CBOR (attestation objects, COSE
//! keys), clientDataJSON, and a whole registration. Never panics; driven on stable by
//! `tests/fuzz.rs` (`webauthn_parsers_never_panic`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rapha_receipt::webauthn::fuzz_entry(data);
});
