//! The one Ethereum layer of Rapha: addresses, EIP-712 typed-data digests and recoverable
//! secp256k1 signatures, on alloy's types (`alloy_primitives::Address`, `B256`, `sol!`
//! structs, `Eip712Domain`).
//!
//! Serves **I6** and **I7**: a receipt's signature is an EIP-712 `Settlement` the node key
//! signs ([`eip712`]), the escrow takes another `Settlement` signed when the node settles, and
//! both are checked as the EVM's `ecrecover` checks them ([`recover_signer`]). The receipt
//! crate (issuing and offline verification) and the settlement crate (the escrow client) both
//! hash and sign through this crate, so the digest a node signs, the digest an auditor checks
//! and the digest the contract recomputes come from one definition of each type:
//!
//! ```text
//!  rapha-eth ◀──┬── rapha-receipt   (receipts, the log, `rapha verify`)
//!               └── rapha-settle    (escrow client, deposit checks, ledger, settler)
//! ```
//!
//! This crate takes alloy's primitives and EIP-712 encoding only: no provider, network,
//! wallet or JSON ABI, so the offline verifier stays small. It is cross-checked against
//! `eth-account` (rapha-receipt's tests) and against the deployed contract's own
//! `settlementDigest` (rapha-settle's tests).
//!
//! Addresses are alloy's [`Address`]. Outside input is parsed with [`parse_address`], which is
//! stricter than `Address::from_str`: a `0x` prefix is required and a mixed-case address must
//! carry a valid EIP-55 checksum. Receipts write addresses in EIP-55 form
//! ([`address::checksummed`]); alloy's own serde form (lowercase) is what the settlement
//! ledger and settlement files have always used.

pub mod address;
pub mod eip712;
mod error;
pub mod signature;

pub use address::{address_of, parse_address};
pub use alloy_primitives::{keccak256, Address, B256, U256};
pub use eip712::{
    escrow_settlement_digest, settlement_digest, tree_head_digest, EscrowSettlement, Settlement,
    SettlementDomain, TreeHead,
};
pub use error::{EthError, Result};
pub use signature::{recover_signer, sign_digest, Signature};
