//! Submitting settlements so that a crash at any point never pays twice and never forgets a
//! payment.
//!
//! ```text
//!  enqueue ──> pending ──sign tx, RECORD (hash, nonce, raw)──> submitted ──broadcast──> mined
//!                 ^                                             │  │ stuck: re-sign same nonce,
//!                 │ nonce taken by another tx, job still open   │  │ higher fee, RECORD, send
//!                 └─────────────────────────────────────────────┘  v
//!                                           confirmed(n blocks) | failed (escrow refused)
//! ```
//!
//! The transaction is signed locally and written to the ledger before it is sent, so whatever
//! may be on the chain is in the ledger.
//!
//! # One ordered path, signed at the head
//!
//! The escrow refuses a settlement whose log size is below the node's anchored one
//! (`LogRewrite`). The node's settlements go through [`Settler::poll_at_head`], which signs each
//! one only when it is about to send it, over the receipt log's head at that moment
//! ([`SignAtHead`]), and sends it only while no other settlement transaction of this settler is
//! in flight. Every settlement the escrow has seen from the node was therefore signed at a
//! head no larger than the one signed now, whatever order jobs were receipted or driven in, and
//! nobody can land a larger one first by copying a later settlement out of the mempool: there
//! is none until this one is mined. A transaction that reverts while its job is still open
//! goes back to `pending` and is signed again at the newest head (at most
//! [`MAX_SETTLEMENT_ROUNDS`] times). On restart, [`Settler::reconcile`] reads the chain —
//! the escrow's status for the job, its `Settled`/`Refunded` events and the receipts of every
//! recorded attempt — and only then acts: it waits for a mined attempt, re-sends a recorded
//! one the chain never saw (same bytes, same hash), or starts over only once the nonce is
//! provably used by something else while the job is still open. The contract pays each job id
//! at most once, so even a mistake here could not pay twice; the ledger makes sure the node
//! also never loses track.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use rapha_core::JobId;

use crate::bindings::RaphaEscrow;
use crate::error::{JobStatus, Result, SettleError};
use crate::escrow::{Escrow, WalletKey};
use crate::ledger::{Ledger, LedgerRow, LedgerState};
use crate::settlement::{job_key, SignedSettlement};

mod send;

/// Signs a job's settlement at the moment the settler sends it.
pub trait SignAtHead {
    /// The job's settlement (always the same job, depositor, outcome, receipt and terms),
    /// signed now by the node key over the receipt log's current head. A head is never below a
    /// size the node signed before, so the escrow's anchor never refuses it as a rewrite.
    ///
    /// # Errors
    /// [`SettleError::Signer`] when the log or the key cannot be read (the row stays as it is;
    /// the next poll tries again).
    fn sign_at_head(&self) -> Result<SignedSettlement>;
}

/// How many times a job's settlement is signed and sent afresh (after a transaction that
/// reverted while the job stayed open, or whose nonce another transaction took) before the
/// settler gives up and the operator must look.
pub const MAX_SETTLEMENT_ROUNDS: usize = 8;

/// How the settler waits and bumps.
#[derive(Clone, Copy, Debug)]
pub struct SettlerConfig {
    /// Blocks a settlement must be buried under before the ledger says `confirmed`.
    pub confirmations: u64,
    /// Pause between chain checks.
    pub poll_interval: Duration,
    /// An unmined attempt older than this is replaced with a higher fee at the same nonce.
    pub stuck_after: Duration,
    /// Fee increase per replacement, in percent (nodes require at least 10).
    pub fee_bump_percent: u128,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            confirmations: 12,
            poll_interval: Duration::from_secs(2),
            stuck_after: Duration::from_secs(120),
            fee_bump_percent: 25,
        }
    }
}

/// Where a job's settlement stands after one [`Settler::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not final yet: the ledger's state (pending, submitted, or confirmed but not deep
    /// enough). Poll again.
    Pending(LedgerState),
    /// The money has moved on chain and never moves again.
    Final(Finality),
}

/// How a job's money moved, for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finality {
    /// A settlement (the node's or anyone's: the escrow checked the node's signature) is on
    /// chain under `tx`, at least the configured confirmations deep. `status` is the escrow's:
    /// `Paid` for a charged outcome (70/30 credited), `Refunded` for a refund.
    Settled {
        tx: B256,
        block: u64,
        confirmations: u64,
        status: JobStatus,
    },
    /// Nobody settled before the deadline and the deposit was credited back to the depositor
    /// by `refundExpired` (`tx`): no settlement of this job can ever land, nothing is paid.
    RefundedByExpiry { tx: B256 },
}

/// Where the chain says a job's money went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnChain {
    Open,
    /// Settled by `tx` in `block` (ours or anyone's: the escrow checked the node's signature).
    Settled {
        tx: B256,
        block: u64,
    },
    /// Refunded after its deadline: our settlement can never land.
    RefundedExpired {
        tx: B256,
    },
    /// Closed, but the RPC has no event yet: check again.
    ClosedNoEvent,
}

/// The node's settlement submitter.
pub struct Settler {
    ledger: Ledger,
    escrow: Escrow,
    provider: DynProvider,
    wallet: EthereumWallet,
    from: Address,
    chain_id: u64,
    cfg: SettlerConfig,
    /// When this process last sent each job's transaction (a job absent here has not been
    /// sent by this process: its recorded bytes are re-sent once after a restart).
    sent: HashMap<JobId, Instant>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("escrow", &self.escrow.address())
            .field("from", &self.from)
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

fn is_benign_send_error(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("already known") || m.contains("already imported") || m.contains("nonce too low")
}

impl Settler {
    /// A settler sending from `key` through `provider` (a plain provider, e.g.
    /// [`crate::network::connect_http`], already checked against the configured chain id).
    ///
    /// # Errors
    /// RPC failure reading the chain id.
    pub async fn new(
        ledger: Ledger,
        provider: DynProvider,
        escrow: Address,
        key: &WalletKey,
        cfg: SettlerConfig,
    ) -> Result<Self> {
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(crate::rpc("eth_chainId"))?;
        Ok(Self {
            ledger,
            escrow: Escrow::at(provider.clone(), escrow),
            provider,
            wallet: EthereumWallet::from(key.signer().clone()),
            from: key.address(),
            chain_id,
            cfg,
            sent: HashMap::new(),
        })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Settles `job` and returns when the ledger says `confirmed` (deep enough) or `failed`.
    /// Safe to call again for the same job at any time (after a crash, twice in a row): it
    /// continues from the ledger and the chain, never from scratch. [`Settler::poll`] does the
    /// same one step at a time, for a caller that must not wait.
    ///
    /// # Errors
    /// RPC or ledger failures (the row keeps its state; call again).
    pub async fn settle(&mut self, job: &JobId, signed: &SignedSettlement) -> Result<LedgerState> {
        self.ledger.enqueue(job, signed)?;
        loop {
            let state = self.step(job, None).await?;
            if self.is_final(&state) {
                return Ok(state);
            }
            tokio::time::sleep(self.cfg.poll_interval).await;
        }
    }

    /// One step of [`Settler::settle`] without waiting: enqueues the settlement, signs,
    /// records and sends its transaction, follows it on chain, re-sends or replaces it, and
    /// says where the job's money stands. Call it again (every poll interval) until it returns
    /// [`Progress::Final`].
    ///
    /// # Errors
    /// [`SettleError::SettlementFailed`] when the escrow refused the settlement for good (a
    /// signer or payout the hospital no longer has registered, a log rewrite): the node's
    /// operator must act. RPC or ledger failures (the row keeps its state; call again).
    pub async fn poll(&mut self, job: &JobId, signed: &SignedSettlement) -> Result<Progress> {
        self.ledger.enqueue(job, signed)?;
        let state = self.step(job, None).await?;
        self.progress(job, state).await
    }

    /// [`Settler::poll`] for the node: the settlement is signed by `signer` each time a
    /// transaction for it is about to be sent, over the receipt log's head then, and sent only
    /// while no other settlement transaction of this settler is in flight (see the module
    /// documentation). While it waits its turn, the job's state stays `pending`.
    ///
    /// # Errors
    /// As [`Settler::poll`]; [`SettleError::Signer`] when the settlement cannot be signed now;
    /// [`SettleError::SignedOtherSettlement`] when `signer` signs other terms than it signed
    /// for this job before.
    pub async fn poll_at_head(&mut self, job: &JobId, signer: &dyn SignAtHead) -> Result<Progress> {
        if self.ledger.get(job)?.is_none() {
            self.ledger.enqueue(job, &signer.sign_at_head()?)?;
        }
        let state = self.step(job, Some(signer)).await?;
        self.progress(job, state).await
    }

    /// Where the job's money stands after a step that left its row in `state`.
    async fn progress(&mut self, job: &JobId, state: LedgerState) -> Result<Progress> {
        match state {
            LedgerState::Confirmed {
                tx,
                block,
                confirmations,
            } if confirmations >= self.cfg.confirmations => {
                let status = self.escrow.job(self.depositor(job)?, job).await?.status;
                Ok(Progress::Final(Finality::Settled {
                    tx,
                    block,
                    confirmations,
                    status,
                }))
            }
            LedgerState::Failed { reason } => match self.on_chain(job).await? {
                OnChain::RefundedExpired { tx } => {
                    Ok(Progress::Final(Finality::RefundedByExpiry { tx }))
                }
                OnChain::Settled { tx, block } => {
                    let confirmations = self.depth(block).await?;
                    let status = self.escrow.job(self.depositor(job)?, job).await?.status;
                    Ok(Progress::Final(Finality::Settled {
                        tx,
                        block,
                        confirmations,
                        status,
                    }))
                }
                OnChain::Open | OnChain::ClosedNoEvent => {
                    Err(SettleError::SettlementFailed { job: *job, reason })
                }
            },
            other => Ok(Progress::Pending(other)),
        }
    }

    fn is_final(&self, state: &LedgerState) -> bool {
        match state {
            LedgerState::Confirmed { confirmations, .. } => {
                *confirmations >= self.cfg.confirmations
            }
            LedgerState::Failed { .. } => true,
            LedgerState::Pending | LedgerState::Submitted { .. } => false,
        }
    }

    /// One pass over the job's ledger row and the chain; returns the row's state afterwards.
    async fn step(&mut self, job: &JobId, signer: Option<&dyn SignAtHead>) -> Result<LedgerState> {
        let row = self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?;
        if self.is_final(&row.state) {
            return Ok(row.state);
        }
        match row.state {
            LedgerState::Pending => {
                if !self.resolve_from_chain(&row).await?
                    && self.prepare_with(job, signer).await?.is_some()
                {
                    self.broadcast(job).await?;
                    self.sent.insert(*job, Instant::now());
                }
            }
            LedgerState::Submitted { .. } | LedgerState::Confirmed { .. } => {
                if self.check(job).await? {
                    match self.sent.get(job) {
                        // First look in this process (after a restart): make sure the chain
                        // has our bytes.
                        None => {
                            self.broadcast(job).await?;
                            self.sent.insert(*job, Instant::now());
                        }
                        Some(at) if at.elapsed() >= self.cfg.stuck_after => {
                            self.bump(job).await?;
                            self.sent.insert(*job, Instant::now());
                        }
                        Some(_) => {}
                    }
                }
            }
            LedgerState::Failed { .. } => {}
        }
        Ok(self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?
            .state)
    }

    /// After a restart: brings every open ledger row up to date with the chain without
    /// signing anything new, and re-sends recorded transactions the chain does not know.
    /// Returns the rows as they stand afterwards.
    ///
    /// # Errors
    /// RPC or ledger failures.
    pub async fn reconcile(&mut self) -> Result<Vec<LedgerRow>> {
        let rows = self.ledger.open_rows()?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match row.state {
                LedgerState::Pending => {
                    self.resolve_from_chain(&row).await?;
                }
                LedgerState::Submitted { .. } => {
                    if self.check(&row.job).await? {
                        self.broadcast(&row.job).await?;
                    }
                }
                LedgerState::Confirmed { .. } | LedgerState::Failed { .. } => {}
            }
            out.push(
                self.ledger
                    .get(&row.job)?
                    .ok_or(SettleError::NotInLedger(row.job))?,
            );
        }
        Ok(out)
    }

    /// For a pending row: if the chain already closed the job, record that and return true.
    async fn resolve_from_chain(&mut self, row: &LedgerRow) -> Result<bool> {
        match self.on_chain(&row.job).await? {
            OnChain::Open => Ok(false),
            OnChain::Settled { tx, block } => {
                let confirmations = self.depth(block).await?;
                self.ledger
                    .mark_confirmed(&row.job, tx, block, confirmations)?;
                Ok(true)
            }
            OnChain::RefundedExpired { tx } => {
                self.ledger.mark_failed(
                    &row.job,
                    &format!("refunded to the depositor after the deadline by {tx}"),
                )?;
                Ok(true)
            }
            OnChain::ClosedNoEvent => Ok(false),
        }
    }

    async fn depth(&self, block: u64) -> Result<u64> {
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(crate::rpc("eth_blockNumber"))?;
        Ok(if head >= block { head - block + 1 } else { 0 })
    }

    /// The depositor whose deposit the job's settlement settles.
    fn depositor(&self, job: &JobId) -> Result<Address> {
        Ok(self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?
            .settlement
            .fields
            .depositor)
    }

    async fn on_chain(&self, job: &JobId) -> Result<OnChain> {
        let depositor = self.depositor(job)?;
        let status = self.escrow.job(depositor, job).await?.status;
        if !status.is_closed() {
            return Ok(OnChain::Open);
        }
        let settled = self
            .find_event(job, depositor, RaphaEscrow::Settled::SIGNATURE_HASH)
            .await?;
        if let Some((tx, block)) = settled {
            return Ok(OnChain::Settled { tx, block });
        }
        if status == JobStatus::Refunded {
            if let Some((tx, _)) = self
                .find_event(job, depositor, RaphaEscrow::Refunded::SIGNATURE_HASH)
                .await?
            {
                return Ok(OnChain::RefundedExpired { tx });
            }
        }
        Ok(OnChain::ClosedNoEvent)
    }

    /// The first `Settled` or `Refunded` event of `depositor`'s deposit for `job` (both events
    /// index the job id, then the depositor).
    async fn find_event(
        &self,
        job: &JobId,
        depositor: Address,
        signature: B256,
    ) -> Result<Option<(B256, u64)>> {
        let filter = Filter::new()
            .address(self.escrow.address())
            .event_signature(signature)
            .topic1(job_key(job))
            .topic2(depositor.into_word())
            .from_block(0);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(crate::rpc("eth_getLogs"))?;
        Ok(logs
            .first()
            .and_then(|l| Some((l.transaction_hash?, l.block_number?))))
    }
}
