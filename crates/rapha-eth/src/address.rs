//! Addresses as Rapha reads and writes them.
//!
//! alloy's `Address::from_str` takes any 40 hex digits, with or without `0x`, and ignores the
//! case. Rapha's inputs (receipt files, `--node-address`, `--depositor`) are stricter, as they
//! have been since the first receipt: the `0x` prefix is required, and a mixed-case address
//! must carry a valid EIP-55 checksum (a mistyped address is refused instead of paying or
//! trusting someone else). All-lowercase and all-uppercase inputs carry no checksum.

use alloy_primitives::Address;
use k256::ecdsa::VerifyingKey;

use crate::error::{EthError, Result};

/// Parses `0x` + 40 hex digits; a mixed-case input must carry a valid EIP-55 checksum.
///
/// # Errors
/// [`EthError::Address`] naming what is wrong.
pub fn parse_address(s: &str) -> Result<Address> {
    let bad = |why| EthError::Address {
        input: s.chars().take(50).collect(),
        why,
    };
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| bad("expected a 0x prefix"))?;
    let mut out = [0u8; 20];
    if h.len() != 40 || hex::decode_to_slice(h, &mut out).is_err() {
        return Err(bad("expected 40 hex digits"));
    }
    let a = Address::from(out);
    let mixed =
        h.chars().any(|c| c.is_ascii_lowercase()) && h.chars().any(|c| c.is_ascii_uppercase());
    if mixed && a.to_checksum_buffer(None).as_str() != s {
        return Err(bad(
            "mixed-case address with a wrong EIP-55 checksum (mistyped?)",
        ));
    }
    Ok(a)
}

/// The Ethereum address of a public key: the last 20 bytes of keccak256 of its 64-byte
/// uncompressed encoding.
pub fn address_of(key: &VerifyingKey) -> Address {
    Address::from_public_key(key)
}

/// Serde for an address in EIP-55 form, parsed with [`parse_address`]: the spelling of every
/// address in a receipt body. Use as `#[serde(with = "rapha_eth::address::checksummed")]`.
pub mod checksummed {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the EIP-55 form.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.to_checksum_buffer(None).as_str())
    }

    /// Reads an address as [`super::parse_address`] does.
    ///
    /// # Errors
    /// Not a string, or not an address.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_address(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn strict_parsing_refuses_no_prefix_wrong_length_and_a_wrong_checksum() {
        let good = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let a = parse_address(good).unwrap();
        assert_eq!(a.to_string(), good, "Display is EIP-55");
        assert_eq!(parse_address(&good.to_ascii_lowercase()).unwrap(), a);
        assert_eq!(
            parse_address(&format!("0x{}", good[2..].to_ascii_uppercase())).unwrap(),
            a
        );
        for (bad, why) in [
            ("0x5FBDB2315678afecb367f032d93F642f64180aa3", "wrong EIP-55"),
            ("5fbdb2315678afecb367f032d93f642f64180aa3", "0x prefix"),
            ("0x5fbdb2315678afecb367f032d93f642f64180a", "40 hex"),
            ("0x5fbdb2315678afecb367f032d93f642f64180aaz", "40 hex"),
        ] {
            let e = parse_address(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn checksummed_serde_writes_eip55_and_reads_strictly() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct W(#[serde(with = "checksummed")] Address);
        let lower = "\"0x5fbdb2315678afecb367f032d93f642f64180aa3\"";
        let w: W = serde_json::from_str(lower).unwrap();
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            "\"0x5FbDB2315678afecb367f032d93F642f64180aa3\""
        );
        assert!(
            serde_json::from_str::<W>("\"0x5FBDB2315678afecb367f032d93F642f64180aa3\"").is_err()
        );
    }
}
