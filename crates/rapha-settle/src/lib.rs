//! USDC escrow bindings (escrow v2), the node's deposit checks, the exact 70/30 fee split and
//! the settlement ledger.
//!
//! Enforces **I7** (money moves exactly once): integer base units, deposits and settlements
//! keyed by depositor and job id, idempotent across crashes, charged (70/30) for an outcome the trainer could choose after
//! seeing data (completed, violated, trainer-failed), refunded otherwise (refused, failed).
//!
//! ```text
//!  AI company                      chain (RaphaEscrow v2, contracts/)            hospital node
//!  ──────────                      ──────────────────────────────────            ─────────────
//!  approve + deposit(job, hosp,  ─> (depositor, job): Deposited ─────────────>  confirm::check_deposit
//!    fee, deadline) or                                                           (depositor, amount == fee, hospital,
//!    depositBatch([...])                                                          deadline >= now + wall
//!                                                                                 + margin, N confirmations)
//!                                                                                confirm::recheck_deposit
//!                                                                                 ... job runs ...
//!                                   settle(Settlement, sig) <── Settler ─────── receipt, signed at the
//!                                                                                log head when sent
//!                                   1, 4, 5: owed[payout] += 70%,               (ledger: pending →
//!                                            owed[treasury] += 30%               submitted → confirmed)
//!                                   2, 3:    owed[depositor] += 100%            outputs released only
//!                                   LogAnchored(node, size, root)                once confirmed + Paid
//!  refundExpired(depositor, job) after the deadline if nobody settled: owed[depositor] += 100%
//!  withdraw(): each account takes what it is owed (a frozen address blocks only itself)
//! ```
//!
//! The contract is the last line of defence: it pays each deposit at most once, only to the
//! registered payout, only for a signature of the hospital's registered node key, only the
//! exact deposited fee, and refuses a log size that would rewrite the receipt log's history.
//! The node checks exactly what the contract will check before it runs a job, so a deposit it
//! accepts can always be settled. The node side keeps a crash-safe [`ledger::Ledger`] so it
//! never double-submits and never forgets a payment. Chain access is checked against
//! [`network::NetworkConfig`]: a wrong chain id or an unofficial token (unless explicitly a
//! test token) is refused.

pub mod bindings;
pub mod confirm;
mod error;
pub mod escrow;
pub mod ledger;
pub mod network;
pub mod settlement;
pub mod settler;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use confirm::{
    check_deposit, recheck_deposit, Awaiting, ConfirmedDeposit, DepositCheck, DepositRequirement,
};
pub use error::{EscrowRefusal, JobStatus, Result, SettleError};
pub use escrow::{
    deposit_for_job, wallet_provider, BatchDeposit, DepositDone, DepositOrder, Escrow, EscrowJob,
    Mined, TestMarket, TestMarketPlan, WalletKey, ESCROW_VERSION,
};
pub use ledger::{Attempt, Ledger, LedgerRow, LedgerState};
pub use network::{NetworkConfig, TokenKind};
pub use settlement::{escrow_key, SettlementFields, SignedSettlement};
pub use settler::{Finality, Progress, Settler, SettlerConfig, SignAtHead, MAX_SETTLEMENT_ROUNDS};

/// Maps an RPC transport error to [`SettleError::Rpc`] naming the call.
pub(crate) fn rpc(call: &'static str) -> impl Fn(alloy::transports::TransportError) -> SettleError {
    move |e| SettleError::Rpc {
        call,
        reason: e.to_string(),
    }
}
