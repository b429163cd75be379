use alloy::primitives::{Address, B256};
use rapha_core::JobId;

use crate::bindings::RaphaEscrow::RaphaEscrowErrors;

/// Everything rapha-settle refuses or fails at, in words a hospital admin can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    #[error("the RPC endpoint reports chain id {actual}, but this node is configured for {expected}; refusing to use it")]
    ChainIdMismatch { expected: u64, actual: u64 },
    #[error("chain id {0} is not a supported settlement network (137 Polygon PoS, 80002 Amoy)")]
    UnsupportedChain(u64),
    #[error(
        "token {configured} is not the official USDC {official} for chain {chain_id}; set `test_token = true` only on a test chain (non-production)"
    )]
    UnofficialToken {
        chain_id: u64,
        configured: Address,
        official: Address,
    },
    #[error("chain id {chain_id} has no official USDC known to Rapha and `test_token` is not set")]
    NoOfficialToken { chain_id: u64 },
    #[error("invalid RPC URL {url:?}: {reason}")]
    BadRpcUrl { url: String, reason: String },
    #[error("invalid wallet key: expected 32 bytes of hex")]
    BadKey,
    #[error("invalid fee: {0}")]
    BadFee(#[from] rapha_core::CoreError),
    #[error("the escrow contract refused the call: {0}")]
    Refused(EscrowRefusal),
    #[error("RPC call `{call}` failed: {reason}")]
    Rpc { call: &'static str, reason: String },
    #[error("transaction {tx} was mined but reverted")]
    Reverted { tx: B256 },
    #[error("no deposit in escrow for job {0}")]
    NoDeposit(JobId),
    #[error("the escrow returned the deposit of {actual} for job {job} when asked for {expected}'s; check chain.escrow_address names a Rapha escrow v2")]
    DepositWrongDepositor {
        job: JobId,
        expected: Address,
        actual: Address,
    },
    #[error("the deposit for job {job} names hospital {actual}, not this hospital {expected}")]
    DepositWrongHospital {
        job: JobId,
        expected: Address,
        actual: Address,
    },
    #[error(
        "the deposit for job {job} is {deposited} USDC base units, not the agreed fee of exactly {fee}; the escrow settles only the exact fee, so this deposit can never pay for the job (the depositor gets it back after its deadline)"
    )]
    DepositAmountMismatch {
        job: JobId,
        deposited: u64,
        fee: u64,
    },
    #[error("the deposit for job {job} becomes refundable at unix time {deadline}, before the job could run and settle (need at least {needed}: chain time + {wall} s wall time + {margin} s settlement margin)")]
    DepositDeadlineTooSoon {
        job: JobId,
        deadline: u64,
        needed: u64,
        wall: u64,
        margin: u64,
    },
    #[error("the escrow for job {job} is already closed ({status}); it cannot fund a new run")]
    DepositClosed { job: JobId, status: JobStatus },
    #[error("settlement ledger: {0}")]
    Ledger(#[from] rusqlite::Error),
    #[error(transparent)]
    StoreVersion(#[from] rapha_migrate::VersionError),
    #[error("settlement ledger holds no row for job {0}")]
    NotInLedger(JobId),
    #[error("settlement ledger row for job {job} is {state}; cannot {action}")]
    BadTransition {
        job: JobId,
        state: String,
        action: &'static str,
    },
    #[error("settlement ledger row for job {0} is corrupt: {1}")]
    CorruptLedger(JobId, String),
    #[error("the escrow refused the settlement of job {job} for good: {reason}; check the hospital's registered signer and payout")]
    SettlementFailed { job: JobId, reason: String },
    #[error("cannot sign the settlement of job {job}: {reason}")]
    Signer { job: JobId, reason: String },
    #[error("the settlement signed for job {job} is not this job's: {what} differs from the one recorded")]
    SignedOtherSettlement { job: JobId, what: &'static str },
    #[error("the signed settlement for job {signed} was handed in for job {job}")]
    SettlementForOtherJob { job: JobId, signed: JobId },
    #[error("signed settlement is malformed: {0}")]
    BadSettlement(String),
    #[error("the contract at {escrow} is not a Rapha escrow v2 (it reports version {found:?}); point the node at the v2 escrow")]
    WrongEscrowVersion { escrow: Address, found: Option<u8> },
    #[error("contract artifact: {0}")]
    Deploy(String),
}

/// The escrow contract's own refusal, decoded from its custom error.
#[derive(Debug)]
pub struct EscrowRefusal(pub RaphaEscrowErrors);

impl std::fmt::Display for EscrowRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use RaphaEscrowErrors as E;
        match &self.0 {
            E::JobNotOpen(e) => {
                write!(
                    f,
                    "job is not open for settlement (status {})",
                    JobStatus::from(e.status)
                )
            }
            E::UnauthorizedSigner(e) => write!(
                f,
                "signature is from {} but the hospital's registered node signer is {}",
                e.recovered, e.registered
            ),
            E::BadSignature(_) => f.write_str("malformed signature"),
            E::FeeMismatch(e) => {
                write!(
                    f,
                    "signed fee {} differs from the deposit {}",
                    e.signed, e.deposited
                )
            }
            E::PayoutMismatch(e) => write!(
                f,
                "signed payout {} differs from the registered payout {}",
                e.signed, e.registered
            ),
            E::WrongToken(e) => write!(f, "signed token {} is not the escrow's USDC", e.token),
            E::BadOutcome(e) => write!(f, "outcome code {} is not one of 1 to 5", e.outcome),
            E::LogRewrite(e) => write!(
                f,
                "log of node {} is anchored at size {}; size {} would rewrite its history",
                e.node, e.anchoredSize, e.size
            ),
            E::DeadlineNotReached(e) => write!(f, "deadline {} not reached yet", e.deadline),
            E::DeadlineInPast(e) => write!(f, "deadline {} is in the past", e.deadline),
            E::JobExists(e) => write!(
                f,
                "{} already has a deposit for job id {}",
                e.depositor, e.jobId
            ),
            E::HospitalNotRegistered(e) => write!(f, "hospital {} is not registered", e.hospital),
            E::ZeroAmount(_) => f.write_str("amount is zero"),
            E::AmountTooLarge(e) => write!(f, "amount {} is too large", e.amount),
            E::ZeroAddress(_) => f.write_str("zero address"),
            E::EmptyBatch(_) => f.write_str("a batch deposit needs at least one job"),
            E::NothingOwed(e) => write!(f, "the escrow owes {} nothing", e.account),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A job's escrow status as the contract stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    None,
    Deposited,
    Paid,
    Refunded,
    Unknown,
}

impl From<u8> for JobStatus {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::None,
            1 => Self::Deposited,
            2 => Self::Paid,
            3 => Self::Refunded,
            _ => Self::Unknown,
        }
    }
}

impl JobStatus {
    /// Paid or refunded: the money has moved and never moves again.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Paid | Self::Refunded)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "no deposit",
            Self::Deposited => "deposited",
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Unknown => "unknown",
        })
    }
}

pub type Result<T, E = SettleError> = std::result::Result<T, E>;
