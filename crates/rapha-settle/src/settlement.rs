//! The EIP-712 `Settlement` a node signs and the escrow verifies, in settlement's own types.
//!
//! Domain `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`
//! with name "Rapha", version "2", the chain id and the escrow's address; the struct is
//! `Settlement(bytes32 jobId,address depositor,uint8 outcome,bytes32 receiptDigest,
//! address payout,uint256 fee,address token,uint64 logSize,bytes32 logRoot)`. The signature is
//! 65 bytes r || s || v with v in {27, 28}. The message, its domain and its digest are defined
//! once, in `rapha_eth::eip712`, which receipts sign through as well; the contract binding's
//! `RaphaEscrow::Settlement` is only the call argument (a test pins its type string to
//! rapha-eth's).
//!
//! The node signs it when it sends the settlement, over its receipt log's head at that moment
//! ([`crate::SignAtHead`]). A receipt's own signature (domain version "1", the struct without
//! the depositor, over the log size right after the receipt's leaf) proves the receipt and
//! settles nothing: were it accepted, anyone holding a later receipt could anchor the log past
//! an earlier receipt's size and make that receipt's settlement a log rewrite.

use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::sol_types::Eip712Domain;
use rapha_core::{JobId, Outcome, Usdc};
use rapha_eth::{EscrowSettlement, SettlementDomain};
use serde::{Deserialize, Serialize};

use crate::bindings::RaphaEscrow;

/// EIP-712 domain name and version the escrow contract is built with.
pub use rapha_eth::eip712::{DOMAIN_NAME, ESCROW_DOMAIN_VERSION as DOMAIN_VERSION};

/// The fields of one settlement, in Rapha's own types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementFields {
    pub job_id: JobId,
    /// The account whose deposit for `job_id` this settles (the escrow keeps each account's
    /// deposit for a job id apart). Absent in ledger rows written before it existed, which
    /// read as the zero address and settle nothing.
    #[serde(default)]
    pub depositor: Address,
    pub outcome: Outcome,
    pub receipt_digest: B256,
    pub payout: Address,
    pub fee: Usdc,
    pub token: Address,
    pub log_size: u64,
    pub log_root: B256,
}

/// A settlement with the node's 65-byte signature: what anyone may submit to the escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSettlement {
    pub fields: SettlementFields,
    pub signature: Bytes,
}

impl SettlementFields {
    /// The ABI struct the contract takes.
    pub fn to_sol(&self) -> RaphaEscrow::Settlement {
        RaphaEscrow::Settlement {
            jobId: B256::from(self.job_id.to_bytes32()),
            depositor: self.depositor,
            outcome: self.outcome.code(),
            receiptDigest: self.receipt_digest,
            payout: self.payout,
            fee: U256::from(self.fee.base_units()),
            token: self.token,
            logSize: self.log_size,
            logRoot: self.log_root,
        }
    }

    /// The EIP-712 message the node signs.
    pub fn to_eip712(&self) -> EscrowSettlement {
        EscrowSettlement {
            jobId: job_key(&self.job_id),
            depositor: self.depositor,
            outcome: self.outcome.code(),
            receiptDigest: self.receipt_digest,
            payout: self.payout,
            fee: U256::from(self.fee.base_units()),
            token: self.token,
            logSize: self.log_size,
            logRoot: self.log_root,
        }
    }

    /// The fields of a settlement the node signed: `msg` with the job, outcome and fee in
    /// Rapha's types (the caller's, which `msg` must carry: checked here).
    ///
    /// # Errors
    /// [`crate::SettleError::BadSettlement`] when `msg` is not of `job`, `outcome` and `fee`.
    pub fn from_eip712(
        job: JobId,
        outcome: Outcome,
        fee: Usdc,
        msg: &EscrowSettlement,
    ) -> crate::Result<Self> {
        let fields = Self {
            job_id: job,
            depositor: msg.depositor,
            outcome,
            receipt_digest: msg.receiptDigest,
            payout: msg.payout,
            fee,
            token: msg.token,
            log_size: msg.logSize,
            log_root: msg.logRoot,
        };
        if fields.to_eip712() != *msg {
            return Err(crate::SettleError::BadSettlement(format!(
                "the signed settlement is not of job {job}, outcome {outcome:?} and fee {fee}"
            )));
        }
        Ok(fields)
    }

    /// The digest the node signs (EIP-712 `\x19\x01 || domainSeparator || structHash`).
    pub fn signing_digest(&self, chain_id: u64, escrow: Address) -> B256 {
        rapha_eth::escrow_settlement_digest(&settlement_domain(chain_id, escrow), &self.to_eip712())
    }
}

fn settlement_domain(chain_id: u64, escrow: Address) -> SettlementDomain {
    SettlementDomain {
        chain_id,
        verifying_contract: escrow,
    }
}

/// The escrow's EIP-712 domain on `chain_id` at `escrow`.
pub fn domain(chain_id: u64, escrow: Address) -> Eip712Domain {
    settlement_domain(chain_id, escrow).escrow_domain()
}

/// The job id's on-chain form.
pub fn job_key(job: &JobId) -> B256 {
    B256::from(job.to_bytes32())
}

/// Where the escrow keeps `depositor`'s deposit for `job`: `keccak256(abi.encode(depositor,
/// jobId))`, as the contract's `jobKey` computes it.
pub fn escrow_key(depositor: Address, job: &JobId) -> B256 {
    let mut words = [0u8; 64];
    words[12..32].copy_from_slice(depositor.as_slice());
    words[32..].copy_from_slice(&job.to_bytes32());
    alloy::primitives::keccak256(words)
}

impl SignedSettlement {
    /// Parses a signed settlement handed to the node or the worker as JSON (outside input):
    /// well-formed fields and a 65-byte signature with v in {27, 28}. Whether the signature
    /// is the registered node's is for the escrow to decide.
    ///
    /// # Errors
    /// [`crate::SettleError::BadSettlement`].
    pub fn from_json(bytes: &[u8]) -> crate::Result<Self> {
        let s: Self = serde_json::from_slice(bytes)
            .map_err(|e| crate::SettleError::BadSettlement(e.to_string()))?;
        if s.signature.len() != 65 || !matches!(s.signature[64], 27 | 28) {
            return Err(crate::SettleError::BadSettlement(
                "signature must be 65 bytes r || s || v with v 27 or 28".into(),
            ));
        }
        if s.fields.depositor == Address::ZERO {
            return Err(crate::SettleError::BadSettlement(
                "depositor must name the account whose deposit is settled".into(),
            ));
        }
        Ok(s)
    }
}
