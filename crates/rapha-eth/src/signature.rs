//! Recoverable secp256k1 signatures as the escrow's `ecrecover` takes them: 65 bytes
//! `r || s || v`, low `s`, `v` in {27, 28}.
//!
//! [`Signature`] keeps the 65 bytes exactly as they were written, not alloy's parsed
//! `Signature` (which maps `v` 0, 1, 27, 28 and EIP-155 values to one parity bit): a receipt
//! with `v` = 0 or a high `s` must be refused at verification, as the escrow would refuse it,
//! not normalised into a valid one.
//!
//! [`recover_signer`] is a deliberate re-implementation of recovery on k256's curve arithmetic:
//! k256's `VerifyingKey::recover_from_prehash` (and alloy's `recover_address_from_prehash`,
//! built on it) verifies the signature again with the key it just recovered, which holds by
//! construction and doubles the cost (rapha-receipt's benchmark: 1.9x; an auditor checks two
//! recoveries per receipt over whole logs). It can go when k256 offers recovery without the
//! re-verification. A property test holds it equal to k256's own recovery, and rapha-receipt's
//! tests to `eth-account`.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256};
use k256::ecdsa::{Signature as EcSignature, SigningKey, VerifyingKey};
use k256::elliptic_curve::ops::{LinearCombination, Reduce};
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::subtle::Choice;
use k256::elliptic_curve::PrimeField;
use k256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{EthError, Result};

/// A 65-byte recoverable signature `r || s || v`, `v` in {27, 28}. Serialises as `0x` hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 65]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = EthError;
    fn from_str(s: &str) -> Result<Self> {
        let h = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 65];
        if h.len() != 130 || hex::decode_to_slice(h, &mut out).is_err() {
            return Err(EthError::Signature("expected 65 bytes as 130 hex digits"));
        }
        Ok(Self(out))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Signs a 32-byte digest: RFC 6979 nonce, low `s` (the escrow, like Ethereum itself, accepts
/// only low-s signatures), `v` in {27, 28}.
///
/// # Errors
/// [`EthError::Signing`] in the negligible case that signing fails.
pub fn sign_digest(key: &SigningKey, digest: &B256) -> Result<Signature> {
    let signed = key
        .sign_prehash_recoverable(digest.as_slice())
        .map_err(|_| EthError::Signing("secp256k1 signing failed"))?;
    Ok(Signature(
        alloy_primitives::Signature::from(signed)
            .normalized_s()
            .as_bytes(),
    ))
}

/// The address that signed `digest`, as the escrow's `ecrecover` computes it.
///
/// # Errors
/// [`EthError::Signature`] for `v` outside {27, 28}, a high `s`, zero or out-of-range
/// `r`/`s`, or a signature no public key produces.
pub fn recover_signer(digest: &B256, sig: &Signature) -> Result<Address> {
    let v = sig.0[64];
    if v != 27 && v != 28 {
        return Err(EthError::Signature("v must be 27 or 28"));
    }
    let ec = EcSignature::from_slice(&sig.0[..64])
        .map_err(|_| EthError::Signature("r or s is zero or not below the curve order"))?;
    if ec.normalize_s().is_some() {
        return Err(EthError::Signature(
            "s is in the upper half of the curve order",
        ));
    }
    // Q = r⁻¹ (s·R − z·G), where R is the curve point with x = r and the parity of v: what
    // the EVM's ecrecover computes, without k256's re-verification (see the module doc).
    let (r, s) = ec.split_scalars();
    let r_bytes = r.to_repr();
    let big_r =
        Option::<AffinePoint>::from(AffinePoint::decompress(&r_bytes, Choice::from(v - 27)))
            .ok_or(EthError::Signature("no curve point has x = r"))?;
    let z = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(digest.0));
    let r_inv = Option::<Scalar>::from(r.invert()).ok_or(EthError::Signature("r is zero"))?;
    let u1 = -(r_inv * z);
    let u2 = r_inv * *s;
    let q = ProjectivePoint::lincomb(
        &ProjectivePoint::GENERATOR,
        &u1,
        &ProjectivePoint::from(big_r),
        &u2,
    );
    let key = VerifyingKey::from_affine(q.to_affine())
        .map_err(|_| EthError::Signature("the signature recovers to no public key"))?;
    Ok(Address::from_public_key(&key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_signature_recovers_to_its_key_and_its_malleable_or_renumbered_twins_are_refused() {
        let key = SigningKey::from_bytes(&[0x11; 32].into()).unwrap();
        let me = Address::from_private_key(&key);
        for i in 0..16u8 {
            let digest = crate::keccak256([i]);
            let sig = sign_digest(&key, &digest).unwrap();
            assert!(sig.0[64] == 27 || sig.0[64] == 28);
            assert_eq!(recover_signer(&digest, &sig).unwrap(), me);
            assert_eq!(sig.to_string().parse::<Signature>().unwrap(), sig);
            // v as 0/1 (what alloy's parser would accept and map) is not what the escrow takes.
            let mut renumbered = sig;
            renumbered.0[64] -= 27;
            assert_eq!(
                recover_signer(&digest, &renumbered),
                Err(EthError::Signature("v must be 27 or 28"))
            );
            let high = alloy_primitives::Signature::from_raw(&sig.0).unwrap();
            let twin = alloy_primitives::Signature::new(
                high.r(),
                alloy_primitives::U256::from_be_slice(
                    &hex::decode(
                        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
                    )
                    .unwrap(),
                ) - high.s(),
                !high.v(),
            );
            assert_eq!(
                recover_signer(&digest, &Signature(twin.as_bytes())),
                Err(EthError::Signature(
                    "s is in the upper half of the curve order"
                ))
            );
        }
    }
}
