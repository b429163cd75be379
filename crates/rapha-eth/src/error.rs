/// What the Ethereum layer refuses. The messages keep the words rapha-receipt has always
/// used, so a refused receipt reads the same.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EthError {
    /// Not an address as Rapha writes one (`0x` + 40 hex digits, EIP-55 if mixed case).
    #[error("address {input:?}: {why}")]
    Address {
        /// The input, cut to its first 50 characters.
        input: String,
        why: &'static str,
    },
    /// A signature that is not 65 bytes `r || s || v` as the escrow takes it.
    #[error("invalid signature encoding: {0}")]
    Signature(&'static str),
    /// Signing failed (a negligible case for a valid key).
    #[error("signing failed: {0}")]
    Signing(&'static str),
}

/// Result with [`EthError`].
pub type Result<T, E = EthError> = std::result::Result<T, E>;
