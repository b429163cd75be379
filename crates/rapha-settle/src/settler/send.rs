//! The life of one settlement transaction: signed and recorded before it is sent, sent one at
//! a time, replaced at the same nonce with a higher fee when stuck, followed until it is mined
//! deep enough or refused (the module documentation of [`super`] has the whole path).

use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::{NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Bytes, B256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use rapha_core::JobId;

use super::{is_benign_send_error, OnChain, Settler, SignAtHead, MAX_SETTLEMENT_ROUNDS};
use crate::bindings::RaphaEscrow;
use crate::error::{EscrowRefusal, Result, SettleError};
use crate::ledger::{Attempt, LedgerRow, LedgerState};
use crate::settlement::SignedSettlement;

impl Settler {
    /// Signs a settlement transaction for a pending job and records it (state `submitted`)
    /// WITHOUT sending it. Returns `None` if the escrow refuses the settlement (the row is
    /// then `failed`, with the escrow's reason) or the job is already closed on chain.
    ///
    /// # Errors
    /// RPC or ledger failures.
    pub async fn prepare(&mut self, job: &JobId) -> Result<Option<Attempt>> {
        self.prepare_with(job, None).await
    }

    /// Another job whose settlement transaction may still be mined, if any (each is looked
    /// at on chain first, so a mined one no longer counts).
    async fn other_in_flight(&mut self, job: &JobId) -> Result<Option<JobId>> {
        for other in self.ledger.submitted_jobs()? {
            if other != *job && self.check(&other).await? {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }

    /// The settlement to send for a pending row: the recorded one, or with `signer` one
    /// signed now over the log's head (the same terms, checked). `None`: another settlement
    /// is in flight, this one waits its turn.
    async fn settlement_to_send(
        &mut self,
        row: &LedgerRow,
        signer: Option<&dyn SignAtHead>,
    ) -> Result<Option<SignedSettlement>> {
        let Some(signer) = signer else {
            return Ok(Some(row.settlement.clone()));
        };
        if let Some(other) = self.other_in_flight(&row.job).await? {
            tracing::info!(job = %row.job, waiting_for = %other, "settlement waits for the one in flight");
            return Ok(None);
        }
        let fresh = signer.sign_at_head()?;
        let (a, b) = (&fresh.fields, &row.settlement.fields);
        let differs = [
            (a.job_id != b.job_id, "the job id"),
            (a.depositor != b.depositor, "the depositor"),
            (a.outcome != b.outcome, "the outcome"),
            (a.receipt_digest != b.receipt_digest, "the receipt digest"),
            (a.payout != b.payout, "the payout"),
            (a.fee != b.fee, "the fee"),
            (a.token != b.token, "the token"),
            (a.log_size < b.log_size, "the log size (smaller)"),
        ];
        if let Some((_, what)) = differs.iter().find(|(d, _)| *d) {
            return Err(SettleError::SignedOtherSettlement { job: row.job, what });
        }
        Ok(Some(fresh))
    }

    /// [`Settler::prepare`], with the settlement signed now by `signer` when one is given
    /// (and only while no other settlement transaction is in flight: `None` until then).
    pub(super) async fn prepare_with(
        &mut self,
        job: &JobId,
        signer: Option<&dyn SignAtHead>,
    ) -> Result<Option<Attempt>> {
        let row = self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?;
        if row.state != LedgerState::Pending {
            return Err(SettleError::BadTransition {
                job: *job,
                state: format!("{:?}", row.state),
                action: "prepare",
            });
        }
        if self.resolve_from_chain(&row).await? {
            return Ok(None);
        }
        let mut rounds: Vec<u64> = self.ledger.attempts(job)?.iter().map(|a| a.nonce).collect();
        rounds.dedup();
        if rounds.len() >= MAX_SETTLEMENT_ROUNDS {
            let reason = format!(
                "{} settlement transactions were sent and none landed (reverted, or their nonce \
                 taken) while the job stayed open",
                rounds.len()
            );
            tracing::error!(job = %job, %reason, "settlement given up");
            self.ledger.mark_failed(job, &reason)?;
            return Ok(None);
        }
        let Some(settlement) = self.settlement_to_send(&row, signer).await? else {
            return Ok(None);
        };
        let input = RaphaEscrow::settleCall {
            s: settlement.fields.to_sol(),
            signature: settlement.signature.clone(),
        }
        .abi_encode();
        let call = TransactionRequest::default()
            .with_from(self.from)
            .with_to(self.escrow.address())
            .with_input(Bytes::from(input));
        let gas = match self.provider.estimate_gas(call.clone()).await {
            Ok(gas) => gas,
            Err(e) => {
                let refusal = e
                    .as_error_resp()
                    .and_then(|r| r.as_decoded_interface_error::<RaphaEscrow::RaphaEscrowErrors>());
                return match refusal {
                    Some(RaphaEscrow::RaphaEscrowErrors::JobNotOpen(_)) => Ok(None),
                    // Signed at the newest head and still below the anchor: the chain has seen
                    // a larger log from this node key than the log the node holds.
                    Some(RaphaEscrow::RaphaEscrowErrors::LogRewrite(e)) if signer.is_some() => {
                        let reason = format!(
                            "the escrow has anchored this node's receipt log at size {}, but the \
                             node's log head is size {}: the receipt log is behind what the node \
                             signed before (restored from an old backup?) or another node signs \
                             with the same key",
                            e.anchoredSize, e.size
                        );
                        tracing::error!(job = %job, %reason, "escrow refuses the settlement");
                        self.ledger.mark_failed(job, &reason)?;
                        Ok(None)
                    }
                    Some(r) => {
                        let reason = SettleError::Refused(EscrowRefusal(r)).to_string();
                        tracing::warn!(job = %job, %reason, "escrow refuses the settlement");
                        self.ledger.mark_failed(job, &reason)?;
                        Ok(None)
                    }
                    None => Err(SettleError::Rpc {
                        call: "eth_estimateGas",
                        reason: e.to_string(),
                    }),
                };
            }
        };
        let pending_nonce = self
            .provider
            .get_transaction_count(self.from)
            .pending()
            .await
            .map_err(crate::rpc("eth_getTransactionCount"))?;
        let nonce = match self.ledger.max_open_nonce()? {
            Some(n) => pending_nonce.max(n + 1),
            None => pending_nonce,
        };
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(crate::rpc("eth_feeHistory"))?;
        let attempt = self
            .sign(
                call,
                nonce,
                gas + gas / 5,
                fees.max_fee_per_gas,
                fees.max_priority_fee_per_gas,
            )
            .await?;
        let signed_now = signer.is_some().then_some(&settlement);
        self.ledger.record_attempt_with(job, &attempt, signed_now)?;
        tracing::info!(job = %job, tx = %attempt.tx, nonce, log_size = settlement.fields.log_size, "settlement transaction recorded");
        Ok(Some(attempt))
    }

    async fn sign(
        &self,
        call: TransactionRequest,
        nonce: u64,
        gas: u64,
        max_fee: u128,
        priority: u128,
    ) -> Result<Attempt> {
        let tx = call
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(priority);
        let envelope = tx.build(&self.wallet).await.map_err(|e| SettleError::Rpc {
            call: "sign transaction",
            reason: e.to_string(),
        })?;
        Ok(Attempt {
            tx: *envelope.tx_hash(),
            nonce,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            raw: Bytes::from(envelope.encoded_2718()),
        })
    }

    /// Sends the job's latest recorded attempt (again). Idempotent: the same bytes have the
    /// same hash.
    ///
    /// # Errors
    /// RPC failures other than "already known" / "nonce too low" (which reconciliation
    /// resolves), or ledger failures.
    pub async fn broadcast(&mut self, job: &JobId) -> Result<B256> {
        let attempt =
            self.ledger
                .attempts(job)?
                .pop()
                .ok_or_else(|| SettleError::BadTransition {
                    job: *job,
                    state: "without attempts".into(),
                    action: "broadcast",
                })?;
        match self.provider.send_raw_transaction(&attempt.raw).await {
            Ok(_) => {
                tracing::info!(job = %job, tx = %attempt.tx, "settlement transaction broadcast")
            }
            Err(e) if is_benign_send_error(&e.to_string()) => {
                tracing::info!(job = %job, tx = %attempt.tx, "node already has the transaction or its nonce")
            }
            Err(e) => {
                return Err(SettleError::Rpc {
                    call: "eth_sendRawTransaction",
                    reason: e.to_string(),
                })
            }
        }
        Ok(attempt.tx)
    }

    /// Replaces the job's in-flight transaction with one paying a higher fee at the same
    /// nonce: signed, recorded, then sent.
    ///
    /// # Errors
    /// RPC or ledger failures.
    pub async fn bump(&mut self, job: &JobId) -> Result<B256> {
        let row = self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?;
        let LedgerState::Submitted { .. } = row.state else {
            return Err(SettleError::BadTransition {
                job: *job,
                state: format!("{:?}", row.state),
                action: "bump",
            });
        };
        let last =
            self.ledger.attempts(job)?.pop().ok_or_else(|| {
                SettleError::CorruptLedger(*job, "submitted without attempts".into())
            })?;
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(crate::rpc("eth_feeHistory"))?;
        let bump = |old: u128| old + (old * self.cfg.fee_bump_percent).div_ceil(100).max(1);
        let priority = bump(last.max_priority_fee_per_gas).max(fees.max_priority_fee_per_gas);
        let max_fee = bump(last.max_fee_per_gas)
            .max(fees.max_fee_per_gas)
            .max(priority);
        let input = RaphaEscrow::settleCall {
            s: row.settlement.fields.to_sol(),
            signature: row.settlement.signature.clone(),
        }
        .abi_encode();
        let call = TransactionRequest::default()
            .with_from(self.from)
            .with_to(self.escrow.address())
            .with_input(Bytes::from(input));
        let gas = alloy::consensus::Transaction::gas_limit(
            &alloy::consensus::TxEnvelope::decode_2718_exact(last.raw.as_ref()).map_err(|e| {
                SettleError::CorruptLedger(*job, format!("recorded transaction: {e}"))
            })?,
        );
        let attempt = self.sign(call, last.nonce, gas, max_fee, priority).await?;
        self.ledger.record_attempt(job, &attempt)?;
        tracing::info!(job = %job, tx = %attempt.tx, nonce = last.nonce, max_fee, "replacing stuck settlement transaction");
        self.broadcast(job).await
    }

    /// Looks at a submitted (or not yet deep enough confirmed) job on chain and updates the
    /// ledger. Returns true while a recorded attempt may still be mined.
    ///
    /// # Errors
    /// RPC or ledger failures.
    pub async fn check(&mut self, job: &JobId) -> Result<bool> {
        let row = self
            .ledger
            .get(job)?
            .ok_or(SettleError::NotInLedger(*job))?;
        match row.state {
            LedgerState::Submitted { .. } | LedgerState::Confirmed { .. } => {}
            _ => return Ok(false),
        }
        // Read the account's mined nonce before the receipts, so "no receipt" plus "nonce
        // used" can only mean another transaction took the nonce.
        let mined_nonce = self
            .provider
            .get_transaction_count(self.from)
            .latest()
            .await
            .map_err(crate::rpc("eth_getTransactionCount"))?;
        let attempts = self.ledger.attempts(job)?;
        // Only the latest round (its nonce; replacements share it) can still decide anything:
        // an earlier round's transaction that reverted was already dealt with.
        let latest_nonce = attempts.last().map(|a| a.nonce);
        let mut reverted = None;
        for a in attempts.iter().rev() {
            let receipt = self
                .provider
                .get_transaction_receipt(a.tx)
                .await
                .map_err(crate::rpc("eth_getTransactionReceipt"))?;
            let Some(receipt) = receipt else { continue };
            let block = receipt.block_number.unwrap_or(u64::MAX);
            if receipt.status() {
                let confirmations = self.depth(block).await?;
                self.ledger
                    .mark_confirmed(job, a.tx, block, confirmations)?;
                return Ok(false);
            }
            if reverted.is_none() && Some(a.nonce) == latest_nonce {
                reverted = Some(a.tx);
            }
        }
        if let Some(ours) = reverted {
            // Ours reverted: someone else's settlement may have landed first.
            return match self.on_chain(job).await? {
                OnChain::Settled { tx, block } => {
                    let confirmations = self.depth(block).await?;
                    self.ledger.mark_confirmed(job, tx, block, confirmations)?;
                    Ok(false)
                }
                OnChain::RefundedExpired { tx } => {
                    self.ledger.mark_failed(
                        job,
                        &format!("refunded to the depositor after the deadline by {tx}"),
                    )?;
                    Ok(false)
                }
                // The chain has not indexed the event that closed it yet: look again.
                OnChain::ClosedNoEvent => Ok(false),
                OnChain::Open => {
                    if matches!(row.state, LedgerState::Submitted { .. }) {
                        // Still open: sign and send again (a settlement landed first with a
                        // larger log size, or the chain refused it for a passing reason). The
                        // next prepare asks the escrow first and gives up on a lasting refusal.
                        tracing::warn!(job = %job, tx = %ours, "settlement transaction reverted with the job still open; it is signed and sent again");
                        self.ledger.mark_dropped(job)?;
                    }
                    Ok(false)
                }
            };
        }
        if matches!(row.state, LedgerState::Confirmed { .. }) {
            // Confirmed by another account's transaction: just deepen the count.
            if let OnChain::Settled { tx, block } = self.on_chain(job).await? {
                let confirmations = self.depth(block).await?;
                self.ledger.mark_confirmed(job, tx, block, confirmations)?;
            }
            return Ok(false);
        }
        let Some(last) = attempts.last() else {
            return Err(SettleError::CorruptLedger(
                *job,
                "submitted without attempts".into(),
            ));
        };
        match self.on_chain(job).await? {
            OnChain::Settled { tx, block } => {
                let confirmations = self.depth(block).await?;
                self.ledger.mark_confirmed(job, tx, block, confirmations)?;
                return Ok(false);
            }
            OnChain::RefundedExpired { tx } => {
                self.ledger.mark_failed(
                    job,
                    &format!("refunded to the depositor after the deadline by {tx}"),
                )?;
                return Ok(false);
            }
            OnChain::Open | OnChain::ClosedNoEvent => {}
        }
        if mined_nonce > last.nonce {
            tracing::warn!(job = %job, nonce = last.nonce, "nonce used by another transaction; settlement goes back to pending");
            self.ledger.mark_dropped(job)?;
            return Ok(false);
        }
        Ok(true)
    }
}
