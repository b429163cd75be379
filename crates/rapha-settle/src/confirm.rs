//! The node's check that a job is paid for before it runs (**I7**: a job runs only after its
//! deposit is confirmed in escrow), made with exactly the escrow's own rules so that a deposit
//! the node accepts can always be settled:
//!
//! - the deposit is the one the job's request names: its depositor's own deposit for the job
//!   id (the escrow keeps each account's deposit for an id apart, so another account's deposit
//!   for the same id, a front-run or another company's prepaid round, is not this job's);
//! - the deposit names this hospital and is still open (`Deposited`);
//! - its amount is **exactly** the agreed fee (the escrow settles only `fee == amount`: a
//!   deposit of fee + 1 would make every settlement revert and come back to the depositor at
//!   expiry);
//! - its refund deadline leaves time to run and settle the job:
//!   `deadline >= chain_now + wall + settle_margin`, with `chain_now` the latest block's time,
//!   `wall` the job's trainer wall time and `settle_margin` the node's allowance for guard,
//!   receipt, settlement and its confirmations;
//! - it is buried under enough blocks.
//!
//! [`check_deposit`] makes all four checks before the job is confirmed; [`recheck_deposit`]
//! repeats the first three against the chain's time right before the trainer starts.

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use rapha_core::{JobId, Usdc};

use crate::bindings::RaphaEscrow;
use crate::error::{JobStatus, Result, SettleError};
use crate::escrow::{Escrow, EscrowJob};
use crate::settlement::job_key;

/// What the node requires of a job's deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepositRequirement {
    /// The account the job's request names as paying, already checked to be one the hospital
    /// lets the job's publisher pay from. Only this account's deposit for the job counts.
    pub depositor: Address,
    /// This hospital's registered account.
    pub hospital: Address,
    /// The fee agreed in the job request; the deposit must be exactly this.
    pub fee: Usdc,
    /// Blocks the deposit must be buried under (1 = mined).
    pub confirmations: u64,
    /// The job's trainer wall time in seconds (the node's clamp already applied).
    pub wall_secs: u64,
    /// Seconds the node keeps for everything after the trainer: guard, receipt, settlement and
    /// its confirmations (`[settlement] settle_margin_secs`).
    pub settle_margin_secs: u64,
}

impl DepositRequirement {
    /// The earliest refund deadline this requirement accepts at chain time `now`.
    pub fn deadline_needed(&self, now: u64) -> u64 {
        now.saturating_add(self.wall_secs)
            .saturating_add(self.settle_margin_secs)
    }
}

/// A deposit the node accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmedDeposit {
    pub depositor: Address,
    pub amount: Usdc,
    pub deadline: u64,
    /// The chain time the deadline rule was checked against.
    pub checked_at: u64,
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

impl std::fmt::Display for Awaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoDeposit => f.write_str("no deposit in escrow for this job yet"),
            Self::Confirmations { have, need } => {
                write!(f, "deposit seen, {have} of {need} confirmations")
            }
        }
    }
}

/// Checks an open deposit against everything but its confirmations, at chain time `now`.
fn check_terms(job: &JobId, onchain: &EscrowJob, req: &DepositRequirement, now: u64) -> Result<()> {
    // The escrow keys deposits by depositor; a different one here means another contract.
    if onchain.depositor != req.depositor {
        return Err(SettleError::DepositWrongDepositor {
            job: *job,
            expected: req.depositor,
            actual: onchain.depositor,
        });
    }
    if onchain.hospital != req.hospital {
        return Err(SettleError::DepositWrongHospital {
            job: *job,
            expected: req.hospital,
            actual: onchain.hospital,
        });
    }
    if onchain.amount != req.fee {
        return Err(SettleError::DepositAmountMismatch {
            job: *job,
            deposited: onchain.amount.base_units(),
            fee: req.fee.base_units(),
        });
    }
    let needed = req.deadline_needed(now);
    if onchain.deadline < needed {
        return Err(SettleError::DepositDeadlineTooSoon {
            job: *job,
            deadline: onchain.deadline,
            needed,
            wall: req.wall_secs,
            margin: req.settle_margin_secs,
        });
    }
    Ok(())
}

/// Reads the job and refuses one that can never fund a run (closed); `None` if nothing is
/// deposited yet.
async fn open_job(escrow: &Escrow, depositor: Address, job: &JobId) -> Result<Option<EscrowJob>> {
    let onchain = escrow.job(depositor, job).await?;
    match onchain.status {
        JobStatus::None => Ok(None),
        JobStatus::Deposited => Ok(Some(onchain)),
        status => Err(SettleError::DepositClosed { job: *job, status }),
    }
}

/// Checks `req.depositor`'s deposit for `job` against `req` at the latest block's time.
///
/// # Errors
/// A deposit that can never fund this job: [`SettleError::DepositWrongHospital`],
/// [`SettleError::DepositAmountMismatch`], [`SettleError::DepositDeadlineTooSoon`],
/// [`SettleError::DepositClosed`]; or RPC failures.
pub async fn check_deposit(
    escrow: &Escrow,
    job: &JobId,
    req: &DepositRequirement,
) -> Result<DepositCheck> {
    let Some(onchain) = open_job(escrow, req.depositor, job).await? else {
        return Ok(DepositCheck::Awaiting(Awaiting::NoDeposit));
    };
    let now = escrow.chain_time().await?;
    check_terms(job, &onchain, req, now)?;
    let provider = escrow.provider();
    let filter = Filter::new()
        .address(escrow.address())
        .event_signature(RaphaEscrow::Deposited::SIGNATURE_HASH)
        .topic1(job_key(job))
        .topic2(req.depositor.into_word())
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
        checked_at: now,
        tx: log.transaction_hash.unwrap_or_default(),
        block,
        confirmations: have,
    }))
}

/// Checks a confirmed deposit again right before the trainer starts, at the latest block's
/// time: still open, same hospital, exact fee, and the deadline rule still holds (time has
/// passed since [`check_deposit`]: attestation, the final gate, a busy node).
///
/// # Errors
/// [`SettleError::NoDeposit`] if the job has no deposit at all, and the errors of
/// [`check_deposit`].
pub async fn recheck_deposit(
    escrow: &Escrow,
    job: &JobId,
    req: &DepositRequirement,
) -> Result<EscrowJob> {
    let onchain = open_job(escrow, req.depositor, job)
        .await?
        .ok_or(SettleError::NoDeposit(*job))?;
    let now = escrow.chain_time().await?;
    check_terms(job, &onchain, req, now)?;
    Ok(onchain)
}
