//! [`Payments`] on a chain through rapha-settle: the deposit check reads the escrow, the
//! settlement goes through the [`Settler`] and its SQLite ledger (idempotent across crashes).

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use rapha_core::{JobId, JobRequest};
use rapha_receipt::{ReceiptBody, ReceiptFile};
use rapha_settle::network::connect_http;
use rapha_settle::{
    check_deposit, DepositCheck, DepositRequirement, Escrow, Ledger, LedgerState, SettleError,
    SettlementFields, Settler, SettlerConfig, SignedSettlement, WalletKey,
};

use super::{DepositStatus, PaymentTerms, Payments, SettleStatus};

/// The escrow on one chain.
pub struct ChainPayments {
    rt: tokio::runtime::Runtime,
    escrow: Escrow,
    settler: Settler,
    hospital: Address,
    confirmations: u64,
    run_window_secs: u64,
    terms: PaymentTerms,
}

impl std::fmt::Debug for ChainPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainPayments")
            .field("escrow", &self.escrow.address())
            .finish_non_exhaustive()
    }
}

/// How to reach and use the escrow.
#[derive(Clone, Debug)]
pub struct ChainSettings {
    pub rpc_url: String,
    pub escrow: Address,
    /// The hospital's registered account (deposits must name it).
    pub hospital: Address,
    /// Where the hospital's share goes (as registered in the escrow).
    pub payout: Address,
    /// Blocks a deposit and a settlement must be buried under.
    pub confirmations: u64,
    /// A deposit must stay non-refundable for at least this long after it is checked.
    pub run_window_secs: u64,
    /// Pause between chain checks while settling.
    pub poll_interval: Duration,
}

fn addr(a: Address) -> rapha_receipt::Address {
    rapha_receipt::Address(a.0 .0)
}

impl ChainPayments {
    /// Connects, reads the escrow's token and opens the settlement ledger at `ledger`.
    ///
    /// # Errors
    /// RPC or ledger failures, as text.
    pub fn connect(s: &ChainSettings, key: &WalletKey, ledger: &Path) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the settlement runtime: {e}"))?;
        let (escrow, settler, token, chain_id) = rt
            .block_on(async {
                let provider = connect_http(&s.rpc_url)?;
                let escrow = Escrow::at(provider.clone(), s.escrow);
                let token = escrow.token().await?;
                let settler = Settler::new(
                    Ledger::open(ledger)?,
                    provider.clone(),
                    s.escrow,
                    key,
                    SettlerConfig {
                        confirmations: s.confirmations,
                        poll_interval: s.poll_interval,
                        ..SettlerConfig::default()
                    },
                )
                .await?;
                use alloy::providers::Provider;
                let chain_id = provider
                    .get_chain_id()
                    .await
                    .map_err(|e| SettleError::BadSettlement(format!("eth_chainId: {e}")))?;
                Ok::<_, SettleError>((escrow, settler, token, chain_id))
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            rt,
            escrow,
            settler,
            hospital: s.hospital,
            confirmations: s.confirmations,
            run_window_secs: s.run_window_secs,
            terms: PaymentTerms {
                chain_id,
                escrow: addr(s.escrow),
                token: addr(token),
                payout: addr(s.payout),
            },
        })
    }
}

impl Payments for ChainPayments {
    fn terms(&self) -> PaymentTerms {
        self.terms
    }

    fn check_deposit(&mut self, request: &JobRequest) -> Result<DepositStatus, String> {
        let escrow = &self.escrow;
        let hospital = self.hospital;
        let confirmations = self.confirmations;
        let window = self.run_window_secs;
        let job = request.job_id;
        let fee = request.fee;
        let r = self.rt.block_on(async move {
            let now = escrow.chain_time().await?;
            let req = DepositRequirement {
                hospital,
                fee,
                confirmations,
                not_refundable_before: now + window,
            };
            check_deposit(escrow, &job, &req).await
        });
        match r {
            Ok(DepositCheck::Confirmed(c)) => Ok(DepositStatus::Confirmed(serde_json::json!({
                "depositor": c.depositor.to_string(),
                "amount_base_units": c.amount.base_units(),
                "deadline": c.deadline,
                "tx": c.tx.to_string(),
                "block": c.block,
                "confirmations": c.confirmations,
            }))),
            Ok(DepositCheck::Awaiting(a)) => Ok(DepositStatus::Waiting(format!("{a:?}"))),
            Err(
                e @ (SettleError::DepositWrongHospital { .. }
                | SettleError::DepositTooSmall { .. }
                | SettleError::DepositDeadlineTooSoon { .. }
                | SettleError::DepositClosed { .. }),
            ) => Ok(DepositStatus::Refused(e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn settle(&mut self, job: JobId, receipt: &ReceiptFile) -> Result<SettleStatus, String> {
        let body: ReceiptBody = serde_json::from_value(receipt.body.clone())
            .map_err(|e| format!("receipt body: {e}"))?;
        let p = &body.payment;
        let fields = SettlementFields {
            job_id: job,
            outcome: body.outcome,
            receipt_digest: B256::from(*receipt.receipt_digest.as_bytes()),
            payout: Address::from(p.payout.0),
            fee: p.fee,
            token: Address::from(p.token.0),
            log_size: receipt.log_at_signing.tree_size,
            log_root: B256::from(*receipt.log_at_signing.root_hash.as_bytes()),
        };
        let signed = SignedSettlement {
            fields,
            signature: receipt.signature.0.to_vec().into(),
        };
        let settler = &mut self.settler;
        let state = self
            .rt
            .block_on(async move { settler.settle(&job, &signed).await })
            .map_err(|e| e.to_string())?;
        match state {
            LedgerState::Confirmed {
                tx,
                block,
                confirmations,
            } => Ok(SettleStatus::Done(serde_json::json!({
                "outcome": body.outcome,
                "tx": tx.to_string(),
                "block": block,
                "confirmations": confirmations,
            }))),
            LedgerState::Failed { reason } => Err(format!("settlement failed: {reason}")),
            other => Ok(SettleStatus::Pending(format!("{other:?}"))),
        }
    }
}
