//! [`Payments`] on a chain through rapha-settle: the deposit checks read the escrow (exact fee,
//! deadline rule, confirmations), the settlement goes through the [`Settler`] and its SQLite
//! ledger (idempotent across crashes), one non-blocking step per call.

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use rapha_core::{JobId, JobRequest, ReasonCode};
use rapha_receipt::{ReceiptBody, ReceiptFile};
use rapha_settle::network::connect_http;
use rapha_settle::{
    check_deposit, recheck_deposit, DepositCheck, DepositRequirement, Escrow, Finality, JobStatus,
    Ledger, Progress, SettleError, SettlementFields, Settler, SettlerConfig, SignedSettlement,
    WalletKey,
};

use super::{DepositStatus, PaymentTerms, Payments, SettleStatus};

/// The escrow on one chain.
pub struct ChainPayments {
    rt: tokio::runtime::Runtime,
    escrow: Escrow,
    settler: Settler,
    hospital: Address,
    confirmations: u64,
    settle_margin_secs: u64,
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
    /// Seconds kept for guard, receipt and settlement after the trainer's wall time: a deposit
    /// is accepted (and the trainer started) only if its refund deadline is at least chain
    /// time + wall time + this.
    pub settle_margin_secs: u64,
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
                escrow.check_version().await?;
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
            settle_margin_secs: s.settle_margin_secs,
            terms: PaymentTerms {
                chain_id,
                escrow: addr(s.escrow),
                token: addr(token),
                payout: addr(s.payout),
            },
        })
    }
}

impl ChainPayments {
    fn requirement(&self, request: &JobRequest, wall_secs: u64) -> DepositRequirement {
        DepositRequirement {
            hospital: self.hospital,
            fee: request.fee,
            confirmations: self.confirmations,
            wall_secs,
            settle_margin_secs: self.settle_margin_secs,
        }
    }
}

/// A deposit that can never fund the job, as the refusal the job ends with; other errors
/// (RPC) leave the job where it is.
fn refusal(e: SettleError) -> Result<DepositStatus, String> {
    let code = match e {
        SettleError::DepositDeadlineTooSoon { .. } => ReasonCode::DepositExpiresTooSoon,
        SettleError::DepositWrongHospital { .. }
        | SettleError::DepositAmountMismatch { .. }
        | SettleError::DepositClosed { .. }
        | SettleError::NoDeposit(_) => ReasonCode::DepositRefused,
        e => return Err(e.to_string()),
    };
    Ok(DepositStatus::Refused {
        code,
        reason: e.to_string(),
    })
}

impl Payments for ChainPayments {
    fn terms(&self) -> PaymentTerms {
        self.terms
    }

    fn check_deposit(
        &mut self,
        request: &JobRequest,
        wall_secs: u64,
    ) -> Result<DepositStatus, String> {
        let req = self.requirement(request, wall_secs);
        let escrow = &self.escrow;
        let job = request.job_id;
        match self
            .rt
            .block_on(async move { check_deposit(escrow, &job, &req).await })
        {
            Ok(DepositCheck::Confirmed(c)) => Ok(DepositStatus::Confirmed(serde_json::json!({
                "depositor": c.depositor.to_string(),
                "amount_base_units": c.amount.base_units(),
                "deadline": c.deadline,
                "checked_at": c.checked_at,
                "wall_secs": wall_secs,
                "settle_margin_secs": req.settle_margin_secs,
                "tx": c.tx.to_string(),
                "block": c.block,
                "confirmations": c.confirmations,
            }))),
            Ok(DepositCheck::Awaiting(a)) => Ok(DepositStatus::Waiting(a.to_string())),
            Err(e) => refusal(e),
        }
    }

    fn recheck_deposit(
        &mut self,
        request: &JobRequest,
        wall_secs: u64,
    ) -> Result<DepositStatus, String> {
        let req = self.requirement(request, wall_secs);
        let escrow = &self.escrow;
        let job = request.job_id;
        match self
            .rt
            .block_on(async move { recheck_deposit(escrow, &job, &req).await })
        {
            Ok(j) => Ok(DepositStatus::Confirmed(serde_json::json!({
                "deadline": j.deadline,
                "wall_secs": wall_secs,
                "settle_margin_secs": req.settle_margin_secs,
            }))),
            Err(e) => refusal(e),
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
        let progress = self
            .rt
            .block_on(async move { settler.poll(&job, &signed).await })
            .map_err(|e| e.to_string())?;
        match progress {
            Progress::Final(Finality::Settled {
                tx,
                block,
                confirmations,
                status,
            }) => {
                let paid = status == JobStatus::Paid;
                Ok(SettleStatus::Done {
                    record: serde_json::json!({
                        "outcome": body.outcome,
                        "tx": tx.to_string(),
                        "block": block,
                        "confirmations": confirmations,
                        "escrow_status": status,
                        "paid": paid,
                    }),
                    paid,
                })
            }
            Progress::Final(Finality::RefundedByExpiry { tx }) => Ok(SettleStatus::Done {
                record: serde_json::json!({
                    "outcome": body.outcome,
                    "escrow_status": JobStatus::Refunded,
                    "refunded_by_expiry": tx.to_string(),
                    "paid": false,
                }),
                paid: false,
            }),
            Progress::Pending(state) => Ok(SettleStatus::Pending(format!("{state:?}"))),
        }
    }
}
