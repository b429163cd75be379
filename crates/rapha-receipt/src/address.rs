use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest as _, Keccak256};

use crate::error::ReceiptError;

/// A 20-byte Ethereum address.
///
/// Parses from `0x` + 40 hex digits. A mixed-case input must carry a valid EIP-55 checksum
/// (all-lowercase and all-uppercase inputs carry none). Serialises and prints in EIP-55 form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The EIP-55 checksummed form.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The address left-padded to a 32-byte ABI word.
    pub fn to_word(&self) -> [u8; 32] {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(&self.0);
        w
    }
}

impl FromStr for Address {
    type Err = ReceiptError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ReceiptError::Malformed(format!(
                "address {:?}: {why}",
                s.chars().take(50).collect::<String>()
            ))
        };
        let h = s
            .strip_prefix("0x")
            .ok_or_else(|| bad("expected a 0x prefix"))?;
        let mut out = [0u8; 20];
        if h.len() != 40 || hex::decode_to_slice(h, &mut out).is_err() {
            return Err(bad("expected 40 hex digits"));
        }
        let a = Self(out);
        let mixed =
            h.chars().any(|c| c.is_ascii_lowercase()) && h.chars().any(|c| c.is_ascii_uppercase());
        if mixed && a.to_checksum() != s {
            return Err(bad(
                "mixed-case address with a wrong EIP-55 checksum (mistyped?)",
            ));
        }
        Ok(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_checksum())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
