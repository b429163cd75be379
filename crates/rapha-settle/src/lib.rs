//! USDC escrow bindings, the exact 70/30 fee split and the settlement ledger.
//!
//! Enforces **I7** (money moves exactly once): integer base units, settlement keyed by job id,
//! idempotent across crashes, paid only for a completed receipt, refunded otherwise.
//!
//! ```text
//!  AI company                      chain (RaphaEscrow, contracts/)               hospital node
//!  ──────────                      ───────────────────────────────               ─────────────
//!  approve + deposit(job, hosp,  ─> job: Deposited ──────────────────────────>  confirm::check_deposit
//!          fee, deadline)                                                        (amount ≥ fee, hospital,
//!                                                                                 N confirmations)
//!                                                                                 ... job runs ...
//!                                   settle(Settlement, sig) <── Settler ─────── signed receipt
//!                                   completed: 70% payout, 30% treasury         (ledger: pending →
//!                                   refused/failed: 100% back to depositor       submitted → confirmed)
//!                                   LogAnchored(node, size, root)
//!  refundExpired(job) after the deadline if nobody settled
//! ```
//!
//! The contract is the last line of defence: it pays a job id at most once, only to the
//! registered payout, only for a signature of the hospital's registered node key, and
//! refuses a log size that would rewrite the receipt log's history. The node side keeps a
//! crash-safe [`ledger::Ledger`] so it never double-submits and never forgets a payment.
//! Chain access is checked against [`network::NetworkConfig`]: a wrong chain id or an
//! unofficial token (unless explicitly a test token) is refused.

pub mod bindings;
pub mod confirm;
mod error;
pub mod escrow;
pub mod ledger;
pub mod network;
pub mod settlement;
pub mod settler;

pub use confirm::{check_deposit, Awaiting, ConfirmedDeposit, DepositCheck, DepositRequirement};
pub use error::{EscrowRefusal, JobStatus, Result, SettleError};
pub use escrow::{
    deposit_for_job, wallet_provider, DepositDone, DepositOrder, Escrow, EscrowJob, Mined,
    TestMarket, TestMarketPlan, WalletKey,
};
pub use ledger::{Attempt, Ledger, LedgerRow, LedgerState};
pub use network::{NetworkConfig, TokenKind};
pub use settlement::{SettlementFields, SignedSettlement};
pub use settler::{Settler, SettlerConfig};

/// Maps an RPC transport error to [`SettleError::Rpc`] naming the call.
pub(crate) fn rpc(call: &'static str) -> impl Fn(alloy::transports::TransportError) -> SettleError {
    move |e| SettleError::Rpc {
        call,
        reason: e.to_string(),
    }
}
