//! EIP-712 typed-data digests and recoverable secp256k1 signatures.
//!
//! The exact contract with the escrow (see `docs/receipts.md`):
//!
//! ```text
//! EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
//!   name "Rapha", version "1", chainId = settlement chain, verifyingContract = escrow
//! Settlement(bytes32 jobId,uint8 outcome,bytes32 receiptDigest,address payout,uint256 fee,
//!            address token,uint64 logSize,bytes32 logRoot)
//! digest    = keccak256(0x19 0x01 || domainSeparator || hashStruct(Settlement))
//! signature = r || s || v, 65 bytes, low s, v in {27, 28}
//! ```
//!
//! A receipt's signature is that message over the log size right after the receipt's leaf. It
//! proves the receipt; the escrow (v2) takes another one, which the node signs when it settles
//! the job, over its log head then (see `docs/settlement.md`):
//!
//! ```text
//!   name "Rapha", version "2", same chainId and verifyingContract
//! Settlement(bytes32 jobId,address depositor,uint8 outcome,bytes32 receiptDigest,
//!            address payout,uint256 fee,address token,uint64 logSize,bytes32 logRoot)
//! ```
//!
//! Signed tree heads use a chain-independent domain `EIP712Domain(string name,string version)`
//! with name "Rapha Receipt Log", version "1", and the type
//! `TreeHead(uint64 treeSize,bytes32 rootHash,uint64 timestamp)` (timestamp in Unix ms).

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::{RecoveryId, Signature as EcSignature, SigningKey, VerifyingKey};
use k256::elliptic_curve::ops::{LinearCombination, Reduce};
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::subtle::Choice;
use k256::elliptic_curve::PrimeField;
use k256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest as _, Keccak256};

use crate::error::{ReceiptError, Result};
use crate::Address;

/// EIP-712 domain name of settlement signatures.
pub const DOMAIN_NAME: &str = "Rapha";
/// EIP-712 domain version of receipt signatures.
pub const DOMAIN_VERSION: &str = "1";
/// EIP-712 domain version of the settlements the escrow takes.
pub const ESCROW_DOMAIN_VERSION: &str = "2";
/// EIP-712 domain name of signed tree heads.
pub const LOG_DOMAIN_NAME: &str = "Rapha Receipt Log";
/// EIP-712 domain version of signed tree heads.
pub const LOG_DOMAIN_VERSION: &str = "1";

/// The domain type string of settlement signatures.
pub const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
/// The settlement type string.
pub const SETTLEMENT_TYPE: &str = "Settlement(bytes32 jobId,uint8 outcome,bytes32 receiptDigest,\
address payout,uint256 fee,address token,uint64 logSize,bytes32 logRoot)";
/// The type string of the settlements the escrow takes: a receipt's, plus the account whose
/// deposit it settles.
pub const ESCROW_SETTLEMENT_TYPE: &str = "Settlement(bytes32 jobId,address depositor,\
uint8 outcome,bytes32 receiptDigest,address payout,uint256 fee,address token,uint64 logSize,\
bytes32 logRoot)";
/// The domain type string of signed tree heads.
pub const LOG_DOMAIN_TYPE: &str = "EIP712Domain(string name,string version)";
/// The tree-head type string.
pub const TREE_HEAD_TYPE: &str = "TreeHead(uint64 treeSize,bytes32 rootHash,uint64 timestamp)";

/// keccak256.
pub fn keccak(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

fn word_u64(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

fn hash_words(words: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for w in words {
        h.update(w);
    }
    h.finalize().into()
}

/// Where a settlement signature is valid: the chain and the escrow contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettlementDomain {
    pub chain_id: u64,
    pub verifying_contract: Address,
}

impl SettlementDomain {
    /// `hashStruct(EIP712Domain)` of receipt signatures (version "1").
    pub fn separator(&self) -> [u8; 32] {
        self.separator_of(DOMAIN_VERSION)
    }

    /// `hashStruct(EIP712Domain)` of the escrow's settlements (version "2").
    pub fn escrow_separator(&self) -> [u8; 32] {
        self.separator_of(ESCROW_DOMAIN_VERSION)
    }

    fn separator_of(&self, version: &str) -> [u8; 32] {
        hash_words(&[
            keccak(DOMAIN_TYPE.as_bytes()),
            keccak(DOMAIN_NAME.as_bytes()),
            keccak(version.as_bytes()),
            word_u64(self.chain_id),
            self.verifying_contract.to_word(),
        ])
    }
}

/// The message the escrow checks with `ecrecover`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// `JobId::to_bytes32()`.
    pub job_id: [u8; 32],
    /// `Outcome::code()`: 1 completed, 2 refused, 3 failed.
    pub outcome: u8,
    /// SHA-256 of the canonical receipt body bytes.
    pub receipt_digest: [u8; 32],
    /// The hospital's payout address.
    pub payout: Address,
    /// Fee in USDC base units.
    pub fee: u64,
    /// The USDC token contract.
    pub token: Address,
    /// Receipt log size right after this receipt's leaf was appended.
    pub log_size: u64,
    /// Receipt log root (RFC 9162) at `log_size`.
    pub log_root: [u8; 32],
}

impl Settlement {
    /// `hashStruct(Settlement)`.
    pub fn hash_struct(&self) -> [u8; 32] {
        hash_words(&[
            keccak(SETTLEMENT_TYPE.as_bytes()),
            self.job_id,
            word_u64(u64::from(self.outcome)),
            self.receipt_digest,
            self.payout.to_word(),
            word_u64(self.fee),
            self.token.to_word(),
            word_u64(self.log_size),
            self.log_root,
        ])
    }
}

/// The settlement the escrow takes ([`ESCROW_SETTLEMENT_TYPE`]): a receipt's settlement
/// message, the depositor whose deposit it settles, and the log head the node signed it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscrowSettlement {
    /// `JobId::to_bytes32()`.
    pub job_id: [u8; 32],
    /// The account whose deposit for the job this settles.
    pub depositor: Address,
    /// `Outcome::code()`, 1 to 5.
    pub outcome: u8,
    /// SHA-256 of the canonical receipt body bytes.
    pub receipt_digest: [u8; 32],
    /// The hospital's payout address.
    pub payout: Address,
    /// Fee in USDC base units.
    pub fee: u64,
    /// The USDC token contract.
    pub token: Address,
    /// Receipt log size when the node signed the settlement.
    pub log_size: u64,
    /// Receipt log root (RFC 9162) at `log_size`.
    pub log_root: [u8; 32],
}

impl EscrowSettlement {
    /// `hashStruct(Settlement)` of the escrow's type.
    pub fn hash_struct(&self) -> [u8; 32] {
        hash_words(&[
            keccak(ESCROW_SETTLEMENT_TYPE.as_bytes()),
            self.job_id,
            self.depositor.to_word(),
            word_u64(u64::from(self.outcome)),
            self.receipt_digest,
            self.payout.to_word(),
            word_u64(self.fee),
            self.token.to_word(),
            word_u64(self.log_size),
            self.log_root,
        ])
    }
}

/// The EIP-712 digest a node signs for a settlement the escrow takes.
pub fn escrow_settlement_digest(domain: &SettlementDomain, s: &EscrowSettlement) -> [u8; 32] {
    typed_digest(&domain.escrow_separator(), &s.hash_struct())
}

fn typed_digest(separator: &[u8; 32], struct_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update([0x19, 0x01]);
    h.update(separator);
    h.update(struct_hash);
    h.finalize().into()
}

/// The EIP-712 digest a node signs for a receipt (its proof; the escrow takes
/// [`escrow_settlement_digest`]).
pub fn settlement_digest(domain: &SettlementDomain, s: &Settlement) -> [u8; 32] {
    typed_digest(&domain.separator(), &s.hash_struct())
}

/// The separator of the tree-head domain.
pub fn log_domain_separator() -> [u8; 32] {
    hash_words(&[
        keccak(LOG_DOMAIN_TYPE.as_bytes()),
        keccak(LOG_DOMAIN_NAME.as_bytes()),
        keccak(LOG_DOMAIN_VERSION.as_bytes()),
    ])
}

/// The EIP-712 digest of a signed tree head.
pub fn tree_head_digest(tree_size: u64, root_hash: &[u8; 32], timestamp_ms: u64) -> [u8; 32] {
    let s = hash_words(&[
        keccak(TREE_HEAD_TYPE.as_bytes()),
        word_u64(tree_size),
        *root_hash,
        word_u64(timestamp_ms),
    ]);
    typed_digest(&log_domain_separator(), &s)
}

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
    type Err = ReceiptError;
    fn from_str(s: &str) -> Result<Self> {
        let h = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 65];
        if h.len() != 130 || hex::decode_to_slice(h, &mut out).is_err() {
            return Err(ReceiptError::BadSignature(
                "expected 65 bytes as 130 hex digits",
            ));
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

/// The Ethereum address of a public key: the last 20 bytes of keccak256 of its 64-byte
/// uncompressed encoding.
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let h = keccak(&point.as_bytes()[1..]);
    let mut a = [0u8; 20];
    a.copy_from_slice(&h[12..]);
    Address(a)
}

pub(crate) fn sign_digest(key: &SigningKey, digest: &[u8; 32]) -> Result<Signature> {
    let (mut sig, mut recid) = key
        .sign_prehash_recoverable(digest)
        .map_err(|_| ReceiptError::Signing("secp256k1 signing failed"))?;
    // The escrow (like Ethereum itself) accepts only low-s signatures.
    if let Some(low) = sig.normalize_s() {
        sig = low;
        recid = RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced());
    }
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&sig.to_bytes());
    out[64] = 27 + u8::from(recid.is_y_odd());
    Ok(Signature(out))
}

/// Signs `digest` with `key`. Same as [`crate::NodeKey::sign`].
///
/// # Errors
/// [`ReceiptError::Signing`].
pub fn sign(key: &crate::NodeKey, digest: &[u8; 32]) -> Result<Signature> {
    key.sign(digest)
}

/// The address that signed `digest`, as the escrow's `ecrecover` computes it.
///
/// # Errors
/// [`ReceiptError::BadSignature`] for `v` outside {27, 28}, a high `s`, zero or out-of-range
/// `r`/`s`, or a signature no public key produces.
pub fn recover_signer(digest: &[u8; 32], sig: &Signature) -> Result<Address> {
    let v = sig.0[64];
    if v != 27 && v != 28 {
        return Err(ReceiptError::BadSignature("v must be 27 or 28"));
    }
    let ec = EcSignature::from_slice(&sig.0[..64])
        .map_err(|_| ReceiptError::BadSignature("r or s is zero or not below the curve order"))?;
    if ec.normalize_s().is_some() {
        return Err(ReceiptError::BadSignature(
            "s is in the upper half of the curve order",
        ));
    }
    // Q = r⁻¹ (s·R − z·G), where R is the curve point with x = r and the parity of v: what
    // the EVM's ecrecover computes. (k256's own recovery then re-verifies the signature with Q,
    // which holds by construction and doubles the cost; verification throughput matters for
    // auditors checking whole logs.)
    let (r, s) = ec.split_scalars();
    let r_bytes = r.to_repr();
    let big_r =
        Option::<AffinePoint>::from(AffinePoint::decompress(&r_bytes, Choice::from(v - 27)))
            .ok_or(ReceiptError::BadSignature("no curve point has x = r"))?;
    let z = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(*digest));
    let r_inv =
        Option::<Scalar>::from(r.invert()).ok_or(ReceiptError::BadSignature("r is zero"))?;
    let u1 = -(r_inv * z);
    let u2 = r_inv * *s;
    let q = ProjectivePoint::lincomb(
        &ProjectivePoint::GENERATOR,
        &u1,
        &ProjectivePoint::from(big_r),
        &u2,
    );
    let key = VerifyingKey::from_affine(q.to_affine())
        .map_err(|_| ReceiptError::BadSignature("the signature recovers to no public key"))?;
    Ok(address_of(&key))
}
