//! The node's check that a job is paid for before it runs (**I7**: a job runs only after its
//! deposit is confirmed in escrow): the deposit exists, names this hospital, covers the agreed
//! fee, leaves enough time before its refund deadline, and is buried under enough blocks.

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use rapha_core::{JobId, Usdc};

use crate::bindings::RaphaEscrow;
use crate::error::{JobStatus, Result, SettleError};
use crate::escrow::Escrow;
use crate::settlement::job_key;

/// What the node requires of a job's deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositRequirement {
    /// This hospital's registered account.
    pub hospital: Address,
    /// The fee agreed in the job request; the deposit must be at least this.
    pub fee: Usdc,
    /// Blocks the deposit must be buried under (1 = mined).
    pub confirmations: u64,
    /// The deposit's refund deadline must be at or after this unix time (time to run and
    /// settle the job before the depositor may take the money back).
    pub not_refundable_before: u64,
}

/// A deposit the node accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmedDeposit {
    pub depositor: Address,
    pub amount: Usdc,
    pub deadline: u64,
    pub tx: B256,
    pub block: u64,
    pub confirmations: u64,
}

/// The result of one check: the job may run, or it waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositCheck {
    Confirmed(ConfirmedDeposit),
    /// The job stays in "awaiting deposit".
    Awaiting(Awaiting),
}

/// Why a job is still awaiting its deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaiting {
    /// Nothing deposited for this job id yet.
    NoDeposit,
    /// Deposited, not yet buried deep enough.
    Confirmations { have: u64, need: u64 },
}

/// Checks the deposit for `job` against `req`.
///
/// # Errors
/// A deposit that can never fund this job: [`SettleError::DepositWrongHospital`],
/// [`SettleError::DepositTooSmall`], [`SettleError::DepositDeadlineTooSoon`],
/// [`SettleError::DepositClosed`]; or RPC failures.
pub async fn check_deposit(
    escrow: &Escrow,
    job: &JobId,
    req: &DepositRequirement,
) -> Result<DepositCheck> {
    let onchain = escrow.job(job).await?;
    match onchain.status {
        JobStatus::None => return Ok(DepositCheck::Awaiting(Awaiting::NoDeposit)),
        JobStatus::Deposited => {}
        status => return Err(SettleError::DepositClosed { job: *job, status }),
    }
    if onchain.hospital != req.hospital {
        return Err(SettleError::DepositWrongHospital {
            job: *job,
            expected: req.hospital,
            actual: onchain.hospital,
        });
    }
    if onchain.amount < req.fee {
        return Err(SettleError::DepositTooSmall {
            job: *job,
            deposited: onchain.amount.base_units(),
            fee: req.fee.base_units(),
        });
    }
    if onchain.deadline < req.not_refundable_before {
        return Err(SettleError::DepositDeadlineTooSoon {
            job: *job,
            deadline: onchain.deadline,
            needed: req.not_refundable_before,
        });
    }
    let provider = escrow.provider();
    let filter = Filter::new()
        .address(escrow.address())
        .event_signature(RaphaEscrow::Deposited::SIGNATURE_HASH)
        .topic1(job_key(job))
        .from_block(0);
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(crate::rpc("eth_getLogs"))?;
    let Some(log) = logs.last() else {
        // The state says deposited but the node's RPC has no log yet: wait for it.
        return Ok(DepositCheck::Awaiting(Awaiting::Confirmations {
            have: 0,
            need: req.confirmations,
        }));
    };
    let block = log.block_number.unwrap_or(u64::MAX);
    let head = provider
        .get_block_number()
        .await
        .map_err(crate::rpc("eth_blockNumber"))?;
    let have = if head >= block { head - block + 1 } else { 0 };
    if have < req.confirmations {
        return Ok(DepositCheck::Awaiting(Awaiting::Confirmations {
            have,
            need: req.confirmations,
        }));
    }
    Ok(DepositCheck::Confirmed(ConfirmedDeposit {
        depositor: onchain.depositor,
        amount: onchain.amount,
        deadline: onchain.deadline,
        tx: log.transaction_hash.unwrap_or_default(),
        block,
        confirmations: have,
    }))
}
