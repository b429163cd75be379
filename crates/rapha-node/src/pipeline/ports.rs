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
    /// A deposit that can never fund this job (too small, wrong hospital, closed).
    Refused(String),
}

/// Result of one settlement attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleStatus {
    /// Settled on chain (or nothing was ever deposited): the job may be marked settled.
    Done(serde_json::Value),
    /// Sent, not yet confirmed: try again later.
    Pending(String),
}

/// The escrow side of the node (rapha-settle on a chain: [`chain::ChainPayments`]).
pub trait Payments: Send {
    fn terms(&self) -> PaymentTerms;
    /// Checks the deposit for `request`.
    ///
    /// # Errors
    /// RPC failures (the job stays where it is).
    fn check_deposit(&mut self, request: &JobRequest)
        -> std::result::Result<DepositStatus, String>;
    /// Submits (or continues submitting) the receipt's settlement. Must be idempotent.
    ///
    /// # Errors
    /// RPC or ledger failures (the job stays where it is).
    fn settle(
        &mut self,
        job: JobId,
        receipt: &ReceiptFile,
    ) -> std::result::Result<SettleStatus, String>;
}

/// Opens a DICOMweb client to the PACS (a new one per step).
pub type PacsConnect =
    Box<dyn Fn() -> std::result::Result<DicomWebClient, rapha_dicom::DicomError> + Send>;
