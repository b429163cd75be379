//! [`Payments`] on a chain through rapha-settle: the deposit checks read the escrow (the
//! request's depositor, one the hospital lets the publisher pay from; exact fee, deadline rule,
//! confirmations), the settlement goes through the [`Settler`] and its SQLite ledger
//! (idempotent across crashes), one non-blocking step per call, signed when it is sent over
//! the receipt log's head then.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::Address;
use rapha_core::{JobId, JobRequest, ReasonCode};
use rapha_receipt::{ReceiptBody, ReceiptFile};
use rapha_settle::network::connect_http;
use rapha_settle::{
    check_deposit, recheck_deposit, DepositCheck, DepositRequirement, Escrow, Finality, JobStatus,
    Ledger, Progress, SettleError, SettlementFields, Settler, SettlerConfig, SignAtHead,
    SignedSettlement, WalletKey,
};

use super::{DepositStatus, PaymentTerms, Payments, SettleStatus, SettlementSigner};

/// The escrow on one chain.
pub struct ChainPayments {
    rt: tokio::runtime::Runtime,
    escrow: Escrow,
    settler: Settler,
    hospital: Address,
    depositors: BTreeMap<String, Vec<Address>>,
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
    /// The accounts each publisher may pay its jobs' deposits from (`[depositors]` in the
    /// node's configuration). A job runs only on a deposit from the account its request names,
    /// and only if that account is listed for the job's publisher; a publisher not listed here
    /// can have no job run.
    pub depositors: BTreeMap<String, Vec<Address>>,
    /// Blocks a deposit and a settlement must be buried under.
    pub confirmations: u64,
    /// Seconds kept for guard, receipt and settlement after the trainer's wall time: a deposit
    /// is accepted (and the trainer started) only if its refund deadline is at least chain
    /// time + wall time + this.
    pub settle_margin_secs: u64,
    /// Pause between chain checks while settling.
    pub poll_interval: Duration,
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
            depositors: s.depositors.clone(),
            confirmations: s.confirmations,
            settle_margin_secs: s.settle_margin_secs,
            terms: PaymentTerms {
                chain_id,
                escrow: s.escrow,
                token,
                payout: s.payout,
            },
        })
    }
}

impl ChainPayments {
    /// What the deposit for `request` must be, or why no deposit can fund it: the depositor
    /// the request names must be an account the hospital lets its publisher pay from. Without
    /// this, a publisher could name another company's account and run its job on that
    /// company's deposit (a prepaid federated round, say) under the same job id.
    fn requirement(
        &self,
        request: &JobRequest,
        wall_secs: u64,
    ) -> Result<DepositRequirement, DepositStatus> {
        let refused = |reason: String| DepositStatus::Refused {
            code: ReasonCode::DepositRefused,
            reason,
        };
        let depositor: Address = request.depositor.parse().map_err(|_| {
            refused(format!(
                "the request names depositor {:?}, which is not an account address",
                request.depositor.chars().take(64).collect::<String>()
            ))
        })?;
        let allowed = self
            .depositors
            .get(&request.publisher)
            .is_some_and(|list| list.contains(&depositor));
        if !allowed {
            return Err(refused(format!(
                "{depositor} is not an account this hospital lets publisher {} pay from; the \
                 node's configuration lists a publisher's accounts under [depositors]",
                request.publisher
            )));
        }
        Ok(DepositRequirement {
            depositor,
            hospital: self.hospital,
            fee: request.fee,
            confirmations: self.confirmations,
            wall_secs,
            settle_margin_secs: self.settle_margin_secs,
        })
    }
}

/// The node's [`SignAtHead`]: the escrow's settlement of one receipt for one deposit, signed
/// each time with the node key over the receipt log as it stands.
struct AtHead<'a> {
    job: JobId,
    receipt: &'a ReceiptFile,
    depositor: Address,
    signer: &'a SettlementSigner,
}

impl SignAtHead for AtHead<'_> {
    fn sign_at_head(&self) -> rapha_settle::Result<SignedSettlement> {
        let (s, signature) = self
            .signer
            .sign(self.receipt, self.depositor)
            .map_err(|reason| SettleError::Signer {
                job: self.job,
                reason,
            })?;
        let body: ReceiptBody =
            serde_json::from_value(self.receipt.body.clone()).map_err(|e| SettleError::Signer {
                job: self.job,
                reason: format!("receipt body: {e}"),
            })?;
        Ok(SignedSettlement {
            fields: SettlementFields::from_eip712(self.job, body.outcome, body.payment.fee, &s)?,
            signature: signature.0.to_vec().into(),
        })
    }
}

/// A deposit that can never fund the job, as the refusal the job ends with; other errors
/// (RPC) leave the job where it is.
fn refusal(e: SettleError) -> Result<DepositStatus, String> {
    let code = match e {
        SettleError::DepositDeadlineTooSoon { .. } => ReasonCode::DepositExpiresTooSoon,
        SettleError::DepositWrongHospital { .. }
        | SettleError::DepositWrongDepositor { .. }
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
        let req = match self.requirement(request, wall_secs) {
            Ok(req) => req,
            Err(refused) => return Ok(refused),
        };
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
        // The configuration may have changed since the deposit was confirmed (a restart).
        let req = match self.requirement(request, wall_secs) {
            Ok(req) => req,
            Err(refused) => return Ok(refused),
        };
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

    fn settle(
        &mut self,
        request: &JobRequest,
        receipt: &ReceiptFile,
        signer: &SettlementSigner,
    ) -> Result<SettleStatus, String> {
        let body: ReceiptBody = serde_json::from_value(receipt.body.clone())
            .map_err(|e| format!("receipt body: {e}"))?;
        let job = request.job_id;
        // The account whose deposit the deposit step confirmed for this job.
        let depositor: Address = request.depositor.parse().map_err(|_| {
            format!(
                "job {job}: the request's depositor {:?} is not an account address",
                request.depositor.chars().take(64).collect::<String>()
            )
        })?;
        let at_head = AtHead {
            job,
            receipt,
            depositor,
            signer,
        };
        let settler = &mut self.settler;
        let progress = self
            .rt
            .block_on(async move { settler.poll_at_head(&job, &at_head).await })
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
