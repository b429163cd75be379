//! The node's secp256k1 signing key.

use std::path::Path;

use k256::ecdsa::SigningKey;
use rand_core::OsRng;
use rapha_core::fs::{read_secret_text, SecretFileError};
use zeroize::Zeroizing;

use rapha_eth::{address_of, sign_digest, Address, Signature, B256};

use crate::error::{ReceiptError, Result};

/// The node's receipt-signing key (secp256k1).
///
/// No `Debug`, `Display` or `Clone`; the secret scalar is zeroized on drop (k256's
/// `SigningKey` does so). The key file holds the 32-byte secret as 64 hex digits (an optional
/// `0x` prefix and trailing newline are accepted) and must have mode 0600 or stricter.
pub struct NodeKey {
    key: SigningKey,
    address: Address,
}

impl NodeKey {
    /// From the 32-byte secret.
    ///
    /// # Errors
    /// [`ReceiptError::Signing`] if the bytes are zero or not below the curve order.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let key = SigningKey::from_bytes(bytes.into())
            .map_err(|_| ReceiptError::Signing("secret is zero or not below the curve order"))?;
        Ok(Self::wrap(key))
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        Self::wrap(SigningKey::random(&mut OsRng))
    }

    fn wrap(key: SigningKey) -> Self {
        let address = address_of(key.verifying_key());
        Self { key, address }
    }

    /// The node's address: what receipts name and what `ecrecover` returns.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs a 32-byte EIP-712 digest (low-s, `v` in {27, 28}).
    ///
    /// # Errors
    /// [`ReceiptError::Signing`] in the negligible case that signing fails.
    pub fn sign(&self, digest: &B256) -> Result<Signature> {
        Ok(sign_digest(&self.key, digest)?)
    }

    /// Reads a key file ([`rapha_core::fs::read_secret`]: not a link, owned by the reader, mode
    /// 0600 or stricter).
    ///
    /// # Errors
    /// [`ReceiptError::KeyPermissions`], [`ReceiptError::KeyIo`], [`ReceiptError::KeyFormat`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_secret_text(path, 4096).map_err(|e| match e {
            SecretFileError::Loose(mode) => ReceiptError::KeyPermissions {
                path: path.to_owned(),
                mode,
            },
            e => ReceiptError::KeyIo {
                path: path.to_owned(),
                source: e.into(),
            },
        })?;
        let trimmed = text.trim_end_matches(['\n', '\r']);
        let h = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        let format = |reason| ReceiptError::KeyFormat {
            path: path.to_owned(),
            reason,
        };
        if h.len() != 64 {
            return Err(format("wrong length"));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(h, secret.as_mut()).map_err(|_| format("not hex"))?;
        Self::from_secret_bytes(&secret).map_err(|_| format("not a valid secp256k1 secret"))
    }

    /// Writes the key to a new file with mode 0600 (refuses to overwrite).
    ///
    /// # Errors
    /// [`ReceiptError::KeyIo`].
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.key.to_bytes())));
        rapha_core::fs::write_new_secret(path, text.as_bytes()).map_err(|source| {
            ReceiptError::KeyIo {
                path: path.to_owned(),
                source,
            }
        })
    }
}
