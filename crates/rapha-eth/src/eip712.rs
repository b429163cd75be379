//! EIP-712 typed data: the messages a node signs, as `sol!` structs hashed by alloy.
//!
//! The exact contract with the escrow and with auditors (see `docs/receipts.md` and
//! `docs/settlement.md`):
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
//! the job, over its log head then:
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
//!
//! The type strings are also written out below as constants: they are the wire contract, and a
//! test pins each `sol!` struct's encoded type to its constant.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};

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

// Both settlement messages are named `Settlement` on the wire (the name is part of the type
// hash), so each lives in its own module.
mod receipt_message {
    alloy_sol_types::sol! {
        /// The message a receipt's signature signs (domain version "1"): job, outcome
        /// (`Outcome::code()`), SHA-256 of the canonical body bytes, the hospital's payout
        /// address, the fee in USDC base units, the token, and the receipt log's size and root
        /// right after the receipt's leaf was appended.
        #[derive(Copy, Debug, PartialEq, Eq)]
        struct Settlement {
            bytes32 jobId;
            uint8 outcome;
            bytes32 receiptDigest;
            address payout;
            uint256 fee;
            address token;
            uint64 logSize;
            bytes32 logRoot;
        }
    }
}

mod escrow_message {
    alloy_sol_types::sol! {
        /// The settlement the escrow takes (domain version "2"): a receipt's terms, the
        /// account whose deposit for the job it settles, and the receipt log's head when the
        /// node signed it.
        // A deliberate duplicate (issue 23): contracts/RaphaEscrow.sol declares the same
        // struct for the escrow that verifies it. The contract is compiled by solc and
        // immutable once deployed, this crate by rustc, so neither can take the other's; the
        // type string is pinned below, and the settlement tests have the contract verify the
        // node's signatures.
        #[derive(Copy, Debug, PartialEq, Eq)]
        struct Settlement {
            bytes32 jobId;
            address depositor;
            uint8 outcome;
            bytes32 receiptDigest;
            address payout;
            uint256 fee;
            address token;
            uint64 logSize;
            bytes32 logRoot;
        }
    }
}

mod log_message {
    alloy_sol_types::sol! {
        /// A signed tree head of the receipt log (timestamp in Unix ms).
        #[derive(Copy, Debug, PartialEq, Eq)]
        struct TreeHead {
            uint64 treeSize;
            bytes32 rootHash;
            uint64 timestamp;
        }
    }
}

pub use escrow_message::Settlement as EscrowSettlement;
pub use log_message::TreeHead;
pub use receipt_message::Settlement;

/// Where a settlement signature is valid: the chain and the escrow contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettlementDomain {
    pub chain_id: u64,
    pub verifying_contract: Address,
}

impl SettlementDomain {
    /// The domain of receipt signatures (version "1").
    pub fn receipt_domain(&self) -> Eip712Domain {
        self.domain(DOMAIN_VERSION)
    }

    /// The domain of the escrow's settlements (version "2"), as the contract is built with.
    pub fn escrow_domain(&self) -> Eip712Domain {
        self.domain(ESCROW_DOMAIN_VERSION)
    }

    fn domain(&self, version: &'static str) -> Eip712Domain {
        Eip712Domain::new(
            Some(DOMAIN_NAME.into()),
            Some(version.into()),
            Some(U256::from(self.chain_id)),
            Some(self.verifying_contract),
            None,
        )
    }
}

/// The EIP-712 digest a node signs for a receipt (its proof; the escrow takes
/// [`escrow_settlement_digest`]).
pub fn settlement_digest(domain: &SettlementDomain, s: &Settlement) -> B256 {
    s.eip712_signing_hash(&domain.receipt_domain())
}

/// The EIP-712 digest a node signs for a settlement the escrow takes.
pub fn escrow_settlement_digest(domain: &SettlementDomain, s: &EscrowSettlement) -> B256 {
    s.eip712_signing_hash(&domain.escrow_domain())
}

/// The chain-independent domain of signed tree heads.
pub fn log_domain() -> Eip712Domain {
    Eip712Domain::new(
        Some(LOG_DOMAIN_NAME.into()),
        Some(LOG_DOMAIN_VERSION.into()),
        None,
        None,
        None,
    )
}

/// The EIP-712 digest of a signed tree head.
pub fn tree_head_digest(tree_size: u64, root_hash: B256, timestamp_ms: u64) -> B256 {
    TreeHead {
        treeSize: tree_size,
        rootHash: root_hash,
        timestamp: timestamp_ms,
    }
    .eip712_signing_hash(&log_domain())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolStruct;

    #[test]
    fn sol_structs_encode_the_documented_type_strings() {
        assert_eq!(Settlement::eip712_encode_type(), SETTLEMENT_TYPE);
        assert_eq!(
            EscrowSettlement::eip712_encode_type(),
            ESCROW_SETTLEMENT_TYPE
        );
        assert_eq!(TreeHead::eip712_encode_type(), TREE_HEAD_TYPE);
        let d = SettlementDomain {
            chain_id: 137,
            verifying_contract: Address::ZERO,
        };
        assert_eq!(d.receipt_domain().encode_type(), DOMAIN_TYPE);
        assert_eq!(d.escrow_domain().encode_type(), DOMAIN_TYPE);
        assert_eq!(log_domain().encode_type(), LOG_DOMAIN_TYPE);
    }
}
