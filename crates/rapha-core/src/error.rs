use std::path::PathBuf;

/// Errors of the shared types. Messages say what was refused and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("invalid digest {0:?}: expected 64 lowercase or uppercase hex digits, optionally prefixed 'sha256:'")]
    InvalidDigest(String),
    #[error("invalid job id {0:?}: expected 32 hex digits")]
    InvalidJobId(String),
    #[error("invalid hashed id {0:?}: expected 64 hex digits")]
    InvalidHashedId(String),
    #[error(
        "HMAC key file {path}: expected exactly 32 bytes, found {len}; \
         create one with `rapha-node keygen --hmac --out FILE`"
    )]
    HmacKeyLength { path: PathBuf, len: usize },
    // A deliberate duplicate (issue 23): rapha-core, rapha-bundle and rapha-receipt each have
    // this variant for the key file they read (the hospital's HMAC key here); the check is one
    // (`rapha_core::fs::read_secret`), the variants stay in each crate's error type so that its
    // callers match their own key's refusal and its text names that key.
    #[error(
        "HMAC key file {path} has mode {mode:o}: it must not be readable by group or others; \
         run `chmod 600 {path}`"
    )]
    HmacKeyPermissions { path: PathBuf, mode: u32 },
    #[error("cannot read HMAC key file {path}: {source}")]
    HmacKeyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid USDC amount {input:?}: {reason}")]
    InvalidAmount { input: String, reason: &'static str },
    #[error("invalid Merkle proof: {0}")]
    InvalidProof(&'static str),
    #[error(
        "invalid linkage group {0:?}: expected 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidLinkageGroup(String),
    #[error(
        "publisher name {0:?} cannot scope pseudonyms: expected 1 to 64 characters of a-z, 0-9, \
         '.', '_' and '-', as the trust store names publishers"
    )]
    InvalidPublisherName(String),
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
