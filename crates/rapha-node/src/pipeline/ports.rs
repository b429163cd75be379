//! What the pipeline needs from outside the node: attestation evidence, the escrow, the PACS.

use super::*;

/// Makes attestation evidence bound to a job's binding digest.
pub trait EvidenceProvider: Send {
    /// Evidence whose binding is `binding`.
    ///
    /// # Errors
    /// A reason in words (the job fails with it).
    fn evidence(&mut self, binding: &Digest) -> std::result::Result<Evidence, String>;
}

/// No evidence at all: only a development-mode verifier accepts it, and the receipt says
/// `none-development`.
#[derive(Debug, Default)]
pub struct NoEvidence;

impl EvidenceProvider for NoEvidence {
    fn evidence(&mut self, binding: &Digest) -> std::result::Result<Evidence, String> {
        Ok(Evidence::new(*binding))
    }
}

/// A TPM quote over the configured PCRs with the binding as qualifying data.
pub struct TpmEvidence {
    pub attester: TpmAttester,
    pub pcrs: BTreeSet<u8>,
}

impl EvidenceProvider for TpmEvidence {
    fn evidence(&mut self, binding: &Digest) -> std::result::Result<Evidence, String> {
        let quote = self
            .attester
            .quote(&self.pcrs, binding)
            .map_err(|e| format!("TPM quote failed: {e}"))?;
        let mut ev = Evidence::new(*binding);
        ev.tpm = Some(quote);
        Ok(ev)
    }
}

/// The payment terms every receipt of this node signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentTerms {
    pub chain_id: u64,
    pub escrow: rapha_receipt::Address,
    pub token: rapha_receipt::Address,
    pub payout: rapha_receipt::Address,
}

/// Result of one deposit check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepositStatus {
    /// The deposit is confirmed; the JSON record goes into the job store.
    Confirmed(serde_json::Value),
    /// Not yet (no deposit, too few confirmations): the job stays in `awaiting-deposit`.
    Waiting(String),
    /// A deposit that can never fund this job: the job is refused with `code`
    /// (`deposit-expires-too-soon` when it is refundable before the job could run and settle,
    /// `deposit-refused` when it is not exactly the fee, names another hospital or is closed)
    /// and `reason` in words for the hospital.
    Refused { code: ReasonCode, reason: String },
}

/// What the payments backend signs a job's escrow settlement with, when it sends it: the node
/// key and the receipt log, read as it stands at that moment (the settlement names the log's
/// head then, never the size the receipt was signed at; see [`Payments::settle`]).
#[derive(Clone)]
pub struct SettlementSigner {
    key: Arc<NodeKey>,
    log: PathBuf,
}

impl std::fmt::Debug for SettlementSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementSigner")
            .field("node", &self.key.address())
            .field("log", &self.log)
            .finish()
    }
}

impl SettlementSigner {
    pub(crate) fn new(key: Arc<NodeKey>, log: PathBuf) -> Self {
        Self { key, log }
    }

    /// The escrow's settlement of `receipt` for `depositor`'s deposit, signed now over the
    /// receipt log's current head.
    ///
    /// # Errors
    /// The log cannot be read or does not hold the receipt, or the receipt is not this node's.
    pub fn sign(
        &self,
        receipt: &ReceiptFile,
        depositor: rapha_receipt::Address,
    ) -> std::result::Result<(rapha_receipt::EscrowSettlement, rapha_receipt::Signature), String>
    {
        let log = ReceiptLog::open_read_only(&self.log).map_err(|e| e.to_string())?;
        rapha_receipt::sign_escrow_settlement(receipt, depositor, &self.key, &log)
            .map_err(|e| e.to_string())
    }
}

/// Result of one settlement step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleStatus {
    /// The money moved on chain for good (or nothing was ever deposited): the job may be
    /// marked settled, with `record` as its settlement artifact. `paid` is true only when the
    /// escrow shows the job paid (the 70/30 split credited): the one case in which a completed
    /// job's outputs are released. A completed job found refunded (the deposit expired before
    /// the settlement landed) is settled unpaid and never released.
    Done {
        record: serde_json::Value,
        paid: bool,
    },
    /// Sent or being sent, not yet confirmed: try again later.
    Pending(String),
}

/// The escrow side of the node (rapha-settle on a chain: [`chain::ChainPayments`]).
///
/// Both deposit checks apply the escrow's own rules: the deposit names this hospital, is
/// still open, is **exactly** the request's fee (the escrow settles nothing else), and its
/// refund deadline is at least chain time + `wall_secs` (the job's trainer wall time) + the
/// node's settlement margin, so the depositor cannot take the money back before the node
/// has had time to run the job and settle it.
pub trait Payments: Send {
    fn terms(&self) -> PaymentTerms;
    /// Checks the deposit for `request` (step 5).
    ///
    /// # Errors
    /// RPC failures (the job stays where it is).
    fn check_deposit(
        &mut self,
        request: &JobRequest,
        wall_secs: u64,
    ) -> std::result::Result<DepositStatus, String>;
    /// Checks the confirmed deposit again against the chain's time right before the trainer
    /// starts: `Confirmed` lets it start, `Refused` ends the job refused (refunded).
    ///
    /// # Errors
    /// RPC failures (the job stays where it is; the trainer does not start).
    fn recheck_deposit(
        &mut self,
        request: &JobRequest,
        wall_secs: u64,
    ) -> std::result::Result<DepositStatus, String>;
    /// Submits (or continues submitting) the settlement of `request`'s deposit (its job, the
    /// depositor it names) for `receipt`, one step per call without waiting for confirmations.
    /// Must be idempotent. The settlement is signed with `signer` each time a transaction for
    /// it is sent, over the receipt log's head then: all of the node's settlements go through
    /// this one backend in turn, so none is ever below a log size the escrow has anchored.
    ///
    /// # Errors
    /// RPC or ledger failures, or a settlement the escrow refused for good (the job stays
    /// where it is).
    fn settle(
        &mut self,
        request: &JobRequest,
        receipt: &ReceiptFile,
        signer: &SettlementSigner,
    ) -> std::result::Result<SettleStatus, String>;
}

/// Opens a DICOMweb client to the PACS (a new one per step).
pub type PacsConnect =
    Box<dyn Fn() -> std::result::Result<DicomWebClient, rapha_dicom::DicomError> + Send>;

/// The escrow, used by the deposit and settlement steps without the node lock (one RPC
/// conversation at a time).
#[derive(Clone)]
pub(crate) struct SharedPayments(pub(super) Arc<Mutex<Box<dyn Payments>>>);

impl SharedPayments {
    /// Runs `f` on the payments backend. A panic in an earlier call leaves the backend as
    /// usable as any RPC failure does (its state is the chain's and the ledger's).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut dyn Payments) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(guard.as_mut())
    }

    pub(super) fn terms(&self) -> PaymentTerms {
        self.with(|p| p.terms())
    }
}

/// Opens a DICOMweb client through the node's connector (shared with work outside the lock).
pub(super) fn connect_pacs(
    pacs: &Mutex<PacsConnect>,
) -> std::result::Result<DicomWebClient, rapha_dicom::DicomError> {
    // The connector is a plain function: a panic in it leaves nothing half-changed.
    let connect = pacs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    (*connect)()
}
