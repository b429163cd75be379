//! Secret key files shared by the node's keys (DPO Ed25519 seed, node secp256k1 secret) and the
//! development-key marker that production refuses (**I8**).
//!
//! Format of a hex key file: 64 hex digits (32 bytes) and an optional trailing newline, mode
//! 0600 or stricter. The HMAC key is the exception: 32 raw bytes (see `rapha_core::HmacKey`).

use std::path::Path;

use rapha_core::fs::{read_secret, SecretFileError};
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};

/// Every development key's secret starts with these 10 bytes; a random key does so with
/// probability 2^-80. Demo tooling makes dev keys with this prefix so that `doctor` and
/// production start-up can recognise and refuse them.
pub const DEV_KEY_PREFIX: &[u8; 10] = b"RAPHA-DEV!";

/// Whether `secret` is a development key.
pub fn is_dev_key(secret: &[u8]) -> bool {
    secret.starts_with(DEV_KEY_PREFIX)
}

/// Reads a hex key file after checking its mode.
///
/// # Errors
/// [`PolicyError::KeyFile`] for loose permissions or a malformed file, [`PolicyError::KeyIo`].
pub fn read_secret_hex(path: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let key_file = |reason: String| PolicyError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = read_secret(path, 4096).map_err(|e| match e {
        SecretFileError::Loose(mode) => key_file(format!(
            "mode {mode:o} lets group or others read it; run `chmod 600 {}`",
            path.display()
        )),
        e => PolicyError::KeyIo {
            path: path.to_owned(),
            source: e.into(),
        },
    })?;
    let body_len = text.strip_suffix(b"\n").map_or(text.len(), <[u8]>::len);
    let mut out = Zeroizing::new([0u8; 32]);
    let ok = body_len == 64 && hex::decode_to_slice(&text[..body_len], &mut out[..]).is_ok();
    if !ok {
        return Err(key_file(format!(
            "expected 64 hex digits (a 32-byte key) and an optional newline, found {body_len} bytes \
             that are not that"
        )));
    }
    Ok(out)
}

/// Writes a secret file with mode 0600, refusing to overwrite an existing file.
///
/// # Errors
/// [`PolicyError::KeyIo`] (including when the file already exists).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    rapha_core::fs::write_new_secret(path, contents).map_err(|source| PolicyError::KeyIo {
        path: path.to_owned(),
        source,
    })
}

/// Writes a 32-byte secret as a hex key file (64 hex digits and a newline), mode 0600.
///
/// # Errors
/// As [`write_secret_file`].
pub fn write_secret_hex(path: &Path, secret: &[u8; 32]) -> Result<()> {
    let mut text = Zeroizing::new(hex::encode(secret).into_bytes());
    text.push(b'\n');
    write_secret_file(path, &text)
}
