//! The job pipeline: ARCHITECTURE.md's data flow, steps 1–12, driven one persisted step at a
//! time over the [`JobStore`].
//!
//! Every step reads what earlier steps stored, does its work, and commits its output as an
//! artifact in the same transaction as the state change. A step that is interrupted before its
//! commit runs again from the last committed state; the steps with outside effects are
//! idempotent (the receipt log de-duplicates a body it already holds, the release copy is made
//! in a staging directory and renamed into place once, the settlement ledger continues an
//! earlier attempt).
//!
//! The per-job enclave key exists only in this process's memory. A job found in `attested`,
//! `final-gate-passed` or `running` by a process that does not hold its session (after a
//! crash) is failed with a reason, receipted and refunded: never run a second time silently.

pub mod chain;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rapha_attest::tpm::{TpmAttester, TpmVerifier};
use rapha_attest::{AttestationLevel, Evidence, EvidenceVerifier};
use rapha_bundle::{verify_bundle, TrustStore, VerifiedBundle};
use rapha_core::{merkle, Digest, JobId, JobRequest, Outcome};
use rapha_dicom::cohort::{CohortBuilder, CohortEntry};
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, DicomWebClient, Pseudonymizer, ScopedQuery};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::session::RunPaths;
use rapha_enclave::{EnclaveSession, JobSpec, ManifestOutcome, SandboxConfig};
use rapha_policy::{
    AdmissionInput, ApprovalFacts, ApprovalStore, AttestationFacts, CohortFacts, CohortSummary,
    Decision, DpoPublicKey, FinalInput, HospitalPolicy, Policy, ReviewRequest,
};
use rapha_receipt::body::{
    Attestation as ReceiptAttestation, AttestationEvidence, CohortCommitment, DpoApproval,
    NodeIdentity, OutputFile, OutputManifest as ReceiptOutputs, Payment, PolicyDecision,
    PolicyDecisions, Timestamps,
};
use rapha_receipt::{NodeKey, ReceiptBody, ReceiptFile, ReceiptLog};
use serde::{Deserialize, Serialize};

use crate::audit::{job_object, AuditEvent, AuditKind, AuditLog, AuditOutcome, ParticipantObject};
use crate::progress::LiveRuns;
use crate::store::{JobState, JobStore, StoreError};

/// Errors of the pipeline itself (the node's own infrastructure). A job's own problems — a bad
/// bundle, a refused query, a failing trainer — are not errors: they move the job to
/// `refused` or `failed` with the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("receipt: {0}")]
    Receipt(#[from] rapha_receipt::ReceiptError),
    #[error("approval store: {0}")]
    Approvals(#[from] rapha_policy::PolicyError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("payment backend: {0}")]
    Payments(String),
    #[error("job {job}: stored artifact `{kind}` is missing or unreadable: {detail}")]
    Artifact {
        job: JobId,
        kind: &'static str,
        detail: String,
    },
    #[error("job request is for bundle {claimed} but the bundle directory is missing: {path}")]
    MissingBundle { claimed: Digest, path: PathBuf },
}

type Result<T, E = PipelineError> = std::result::Result<T, E>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
    let path = path.to_path_buf();
    move |source| PipelineError::Io { what, path, source }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

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

/// Everything a [`Node`] is built from. The binary fills it from the configuration file; the
/// demo and the tests fill it directly.
pub struct NodeParts {
    pub store: JobStore,
    pub trust: TrustStore,
    pub policy: Policy,
    pub hospital: HospitalPolicy,
    pub pseudonymizer: Pseudonymizer,
    pub dicom: DicomConfig,
    pub optouts: OptOuts,
    pub labels: Option<LabelTable>,
    pub pacs: PacsConnect,
    pub approvals: ApprovalStore,
    pub dpo_keys: Vec<DpoPublicKey>,
    pub evidence: Box<dyn EvidenceProvider>,
    pub verifier: EvidenceVerifier,
    /// Checks a TPM section when the evidence has one, also in development mode.
    pub tpm_verifier: Option<TpmVerifier>,
    pub sandbox: SandboxConfig,
    pub min_validation_patients: usize,
    pub node_key: NodeKey,
    pub node_name: String,
    pub receipts: ReceiptLog,
    pub payments: Box<dyn Payments>,
    pub audit: AuditLog,
    /// Per-job working directories (`jobs/<id>/bundle`, `work`, `staged`).
    pub work_dir: PathBuf,
    /// Released outputs: `<release_dir>/<job id>/`.
    pub release_dir: PathBuf,
}

/// What one call to [`Node::advance`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The job moved to this state.
    Moved(JobState),
    /// The job waits for something outside the node.
    Blocked(Blocked),
    /// The job is settled: nothing more to do.
    Done,
}

/// What a job waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A DPO approval of this job digest.
    Approval { job_digest: Digest },
    /// The deposit (with the backend's words).
    Deposit(String),
    /// The settlement transaction (with the backend's words).
    Settlement(String),
}

/// A crash-point hook: called right after each committed transition. The binary uses it for
/// its fault-injection environment variable; the library never exits by itself.
pub type AfterCommit = Box<dyn Fn(JobId, JobState) + Send>;

/// The hospital node's job pipeline.
pub struct Node {
    p: NodeParts,
    /// Live enclave sessions (their private keys), by job: lost with the process.
    sessions: HashMap<JobId, EnclaveSession>,
    after_commit: Option<AfterCommit>,
    /// Progress of running trainers, shared with the API (read without the node lock).
    live: Arc<LiveRuns>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.p.node_name)
            .finish_non_exhaustive()
    }
}

/// Artifact names in the job store.
pub mod artifact {
    pub const BUNDLE: &str = "bundle";
    pub const ADMISSION: &str = "admission";
    pub const COHORT: &str = "cohort";
    pub const COHORT_SUMMARY: &str = "cohort-summary";
    pub const REVIEW: &str = "review";
    pub const APPROVAL: &str = "approval";
    pub const DEPOSIT: &str = "deposit";
    pub const EVIDENCE: &str = "evidence";
    pub const ATTESTATION: &str = "attestation";
    pub const FINAL: &str = "final";
    pub const STARTED: &str = "started";
    pub const MANIFEST: &str = "manifest";
    pub const RECEIPT_BODY: &str = "receipt-body";
    pub const RECEIPT: &str = "receipt";
    pub const RELEASE: &str = "release";
    pub const SETTLEMENT: &str = "settlement";
}

/// The stored cohort: entries (with the raw identifiers the guard needs: this artifact never
/// leaves the node) and exclusion counts.
#[derive(Serialize, Deserialize)]
struct StoredCohort {
    entries: Vec<CohortEntry>,
    exclusions: rapha_core::ExclusionCounts,
}

/// What the bundle step records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleFacts {
    pub publisher: String,
    pub keyid: String,
    pub trainer: String,
    pub trainer_version: String,
    pub manifest: Digest,
}

/// What the attestation step records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationRecord {
    pub level: String,
    pub binding: Digest,
    pub evidence: Digest,
    pub tpm_quote: Option<Digest>,
    pub tpm_verified: bool,
    pub runtime_public_key: String,
}

/// What the run step records: the signed manifest and the staged files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub outcome: String,
    pub reasons: Vec<String>,
    pub manifest_json: String,
    pub signature: String,
    pub public_key: String,
    pub confinement: String,
    pub files: Vec<OutputFile>,
    pub metrics: BTreeMap<String, f64>,
    pub guard_accepted: bool,
    pub records_fed: usize,
}

/// Cohort commitment: the Merkle root of the sorted, distinct hashed instance ids (the same
/// value the enclave runtime signs as `cohort_root`).
pub fn cohort_commitment(entries: &[CohortEntry]) -> Digest {
    let ids: BTreeSet<[u8; 32]> = entries
        .iter()
        .map(|e| *e.record.instance.as_bytes())
        .collect();
    let v: Vec<[u8; 32]> = ids.into_iter().collect();
    merkle::root(&v)
}

fn summary_of(
    entries: &[CohortEntry],
    exclusions: &rapha_core::ExclusionCounts,
    validation_percent: u8,
) -> CohortSummary {
    let patients: BTreeSet<_> = entries.iter().map(|e| e.record.patient).collect();
    let studies: BTreeSet<_> = entries.iter().map(|e| e.record.study).collect();
    let mut modalities = BTreeMap::new();
    for e in entries {
        *modalities.entry(e.record.modality.clone()).or_insert(0u64) += 1;
    }
    let n = patients.len() as u64;
    let validation = n * u64::from(validation_percent) / 100;
    CohortSummary {
        commitment: cohort_commitment(entries),
        patients: n,
        train_patients: n - validation,
        validation_patients: validation,
        studies: studies.len() as u64,
        instances: entries.len() as u64,
        modalities,
        exclusions: exclusions.clone(),
    }
}

const ACTOR: (&str, &str) = ("rapha-node", "application");

impl Node {
    /// A node over `parts`. Creates the working and release directories.
    ///
    /// # Errors
    /// [`PipelineError::Io`] if they cannot be created.
    pub fn new(parts: NodeParts) -> Result<Self> {
        for d in [&parts.work_dir, &parts.release_dir] {
            std::fs::create_dir_all(d).map_err(io("cannot create directory", d))?;
        }
        Ok(Self {
            p: parts,
            sessions: HashMap::new(),
            after_commit: None,
            live: Arc::default(),
        })
    }

    /// Installs a hook called after every committed transition.
    pub fn set_after_commit(&mut self, hook: AfterCommit) {
        self.after_commit = Some(hook);
    }

    pub fn store(&self) -> &JobStore {
        &self.p.store
    }

    pub fn approvals(&self) -> &ApprovalStore {
        &self.p.approvals
    }

    pub fn audit_path(&self) -> &Path {
        self.p.audit.path()
    }

    pub fn receipt_log(&self) -> &ReceiptLog {
        &self.p.receipts
    }

    /// Progress of the trainers this node runs, for readers that must not wait for the node
    /// (the API's status and metrics).
    pub fn live(&self) -> Arc<LiveRuns> {
        Arc::clone(&self.live)
    }

    /// Records an administrative or DPO action in the audit trail (for the API and CLI).
    ///
    /// # Errors
    /// [`PipelineError::Audit`].
    pub fn audit(&self, event: AuditEvent) -> Result<()> {
        Ok(self.p.audit.record(event)?)
    }

    fn job_dir(&self, job: JobId) -> PathBuf {
        self.p.work_dir.join("jobs").join(job.to_string())
    }

    /// The trust store bundles are verified against.
    pub fn trust(&self) -> &TrustStore {
        &self.p.trust
    }

    /// The directory released outputs go to (one sub-directory per job).
    pub fn release_dir(&self) -> &Path {
        &self.p.release_dir
    }

    /// Where a completed job's outputs are released.
    pub fn release_path(&self, job: JobId) -> PathBuf {
        self.p.release_dir.join(job.to_string())
    }

    /// The job's receipt, once issued.
    ///
    /// # Errors
    /// Store errors or an unreadable stored receipt.
    pub fn receipt(&self, job: JobId) -> Result<Option<ReceiptFile>> {
        self.p
            .store
            .artifact(job, artifact::RECEIPT)?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| PipelineError::Artifact {
                    job,
                    kind: artifact::RECEIPT,
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// The job digest a DPO approves (once the cohort is built).
    ///
    /// # Errors
    /// Store errors.
    pub fn review_digest(&self, job: JobId) -> Result<Option<Digest>> {
        let Some(b) = self.p.store.artifact(job, artifact::REVIEW)? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&b).ok())
    }

    /// The DPO's view: job and cohort summary (no identifiers).
    ///
    /// # Errors
    /// Store errors.
    pub fn review(&self, job: JobId) -> Result<Option<ReviewRequest>> {
        let Some(b) = self.p.store.artifact(job, artifact::COHORT_SUMMARY)? else {
            return Ok(None);
        };
        let cohort: CohortSummary = self.load(job, artifact::COHORT_SUMMARY, &b)?;
        let row = self.p.store.get(job)?;
        Ok(Some(ReviewRequest {
            job: row.request,
            cohort,
        }))
    }

    fn load<T: for<'de> Deserialize<'de>>(
        &self,
        job: JobId,
        kind: &'static str,
        b: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(b).map_err(|e| PipelineError::Artifact {
            job,
            kind,
            detail: e.to_string(),
        })
    }

    fn need<T: for<'de> Deserialize<'de>>(&self, job: JobId, kind: &'static str) -> Result<T> {
        let b = self
            .p
            .store
            .artifact(job, kind)?
            .ok_or_else(|| PipelineError::Artifact {
                job,
                kind,
                detail: "not stored".into(),
            })?;
        self.load(job, kind, &b)
    }

    fn opt<T: for<'de> Deserialize<'de>>(
        &self,
        job: JobId,
        kind: &'static str,
    ) -> Result<Option<T>> {
        match self.p.store.artifact(job, kind)? {
            None => Ok(None),
            Some(b) => self.load(job, kind, &b).map(Some),
        }
    }

    /// Receives a job: copies the bundle directory into the job's working directory (the
    /// submitter's copy may go away) and records the request in `received`.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for a job id already known; I/O errors copying the bundle.
    pub fn submit(&mut self, bundle_dir: &Path, request: JobRequest) -> Result<JobId> {
        let job = request.job_id;
        if self.p.store.get(job).is_ok() {
            return Err(StoreError::Duplicate(job).into());
        }
        let dest = self.job_dir(job).join("bundle");
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io("cannot clear", &dest))?;
        }
        copy_dir(bundle_dir, &dest)?;
        self.p.store.insert(&request)?;
        tracing::info!(%job, "job received");
        self.committed(job, JobState::Received);
        Ok(job)
    }

    fn committed(&self, job: JobId, state: JobState) {
        if let Some(h) = &self.after_commit {
            h(job, state);
        }
    }

    fn advance_to(
        &mut self,
        job: JobId,
        from: JobState,
        to: JobState,
        artifacts: &[(&str, &[u8])],
        ending: Option<(Outcome, &str)>,
    ) -> Result<Step> {
        self.p.store.advance(job, from, to, artifacts, ending)?;
        tracing::info!(%job, %from, %to, "job advanced");
        self.committed(job, to);
        Ok(Step::Moved(to))
    }

    /// Ends the job as refused or failed (it still gets a receipt and a refund), with an
    /// audit event.
    fn end(&mut self, job: JobId, from: JobState, outcome: Outcome, reason: &str) -> Result<Step> {
        let to = if outcome == Outcome::Refused {
            JobState::Refused
        } else {
            JobState::Failed
        };
        let (ind, what) = if outcome == Outcome::Refused {
            (AuditOutcome::MinorFailure, "refused")
        } else {
            (AuditOutcome::SeriousFailure, "failed")
        };
        self.p.audit.record(AuditEvent::new(
            AuditKind::Refusal,
            ind,
            format!("job {what} in {from}: {reason}"),
            ACTOR,
            vec![job_object(job, None)],
        ))?;
        self.advance_to(job, from, to, &[], Some((outcome, reason)))
    }

    /// A DPO's rejection of a job waiting for approval: the job ends refused (receipt and
    /// refund follow as for any refusal). Returns `Ok(false)` when the job is not waiting for
    /// an approval (nothing changes).
    ///
    /// # Errors
    /// Store or audit errors ([`crate::store::StoreError::NotFound`] for an unknown job).
    pub fn reject(&mut self, job: JobId, reason: &str) -> Result<bool> {
        if self.p.store.get(job)?.state != JobState::AwaitingApproval {
            return Ok(false);
        }
        self.end(
            job,
            JobState::AwaitingApproval,
            Outcome::Refused,
            &format!("rejected by the DPO: {reason}"),
        )?;
        Ok(true)
    }

    /// Start-up: resumes every unfinished job as far as it can go, and fails those whose
    /// enclave session died with an earlier process. Returns each job's state afterwards.
    ///
    /// # Errors
    /// Infrastructure errors (store, audit, receipt log).
    pub fn resume_all(&mut self) -> Result<Vec<(JobId, JobState)>> {
        let mut out = Vec::new();
        for row in self.p.store.unfinished()? {
            let state = self.run_until_blocked(row.id)?;
            out.push((row.id, state));
        }
        Ok(out)
    }

    /// Advances `job` until it is settled or waits for something outside the node.
    ///
    /// # Errors
    /// Infrastructure errors; the job stays in its last committed state.
    pub fn run_until_blocked(&mut self, job: JobId) -> Result<JobState> {
        loop {
            match self.advance(job)? {
                Step::Moved(_) => continue,
                Step::Blocked(_) | Step::Done => return Ok(self.p.store.get(job)?.state),
            }
        }
    }

    /// Executes the job's next step.
    ///
    /// # Errors
    /// Infrastructure errors; the job stays in its last committed state.
    pub fn advance(&mut self, job: JobId) -> Result<Step> {
        let row = self.p.store.get(job)?;
        let state = row.state;
        let req = row.request;
        use JobState as S;
        match state {
            S::Received => self.step_verify(job, &req),
            S::BundleVerified => self.step_admit(job, &req),
            S::Admitted => self.step_cohort(job, &req),
            S::CohortBuilt => self.step_review(job, &req),
            S::AwaitingApproval => self.step_approval(job),
            S::Approved => self.advance_to(job, S::Approved, S::AwaitingDeposit, &[], None),
            S::AwaitingDeposit => self.step_deposit(job, &req),
            S::DepositConfirmed => self.step_attest(job, &req),
            S::Attested | S::FinalGatePassed | S::Running
                if !self.sessions.contains_key(&job) =>
            {
                self.end(
                    job,
                    state,
                    Outcome::Failed,
                    "the node stopped while this job's enclave key was live; the job was not re-run (no outputs released, deposit refunded)",
                )
            }
            S::Attested => self.step_final(job, &req),
            S::FinalGatePassed => {
                let started = now_ms().to_string();
                if let Some(d) = self.review_digest(job)? {
                    // The approval can no longer be revoked once the job starts.
                    self.p.approvals.mark_started(&d, now_s())?;
                }
                self.advance_to(
                    job,
                    S::FinalGatePassed,
                    S::Running,
                    &[(artifact::STARTED, started.as_bytes())],
                    None,
                )
            }
            S::Running => self.step_run(job, &req),
            S::OutputsGuarded | S::Refused | S::Failed => self.step_receipt(job, state, &req),
            S::Receipted => {
                if row.outcome == Some(Outcome::Completed) {
                    self.step_release(job)
                } else {
                    self.step_settle(job, S::Receipted)
                }
            }
            S::Released => self.step_settle(job, S::Released),
            S::Settled => Ok(Step::Done),
        }
    }

    fn bundle(&self, job: JobId, req: &JobRequest) -> std::result::Result<VerifiedBundle, String> {
        let dir = self.job_dir(job).join("bundle");
        verify_bundle(&dir, &self.p.trust)
            .map_err(|e| format!("bundle refused: {e}"))
            .and_then(|vb| {
                if vb.manifest_digest() != req.bundle_manifest {
                    Err(format!(
                        "the request names bundle {} but the bundle's manifest is {}",
                        req.bundle_manifest,
                        vb.manifest_digest()
                    ))
                } else if vb.publisher() != req.publisher || vb.trainer_name() != req.trainer {
                    Err(format!(
                        "the request names {}/{} but the bundle is signed as {}/{}",
                        req.publisher,
                        req.trainer,
                        vb.publisher(),
                        vb.trainer_name()
                    ))
                } else {
                    Ok(vb)
                }
            })
    }

    fn step_verify(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        match self.bundle(job, req) {
            Err(reason) => self.end(job, JobState::Received, Outcome::Refused, &reason),
            Ok(vb) => {
                let facts = BundleFacts {
                    publisher: vb.publisher().to_owned(),
                    keyid: vb.keyid().to_owned(),
                    trainer: vb.trainer_name().to_owned(),
                    trainer_version: vb.trainer_version().to_owned(),
                    manifest: vb.manifest_digest(),
                };
                let b = serde_json::to_vec(&facts).unwrap_or_default();
                self.advance_to(
                    job,
                    JobState::Received,
                    JobState::BundleVerified,
                    &[(artifact::BUNDLE, &b)],
                    None,
                )
            }
        }
    }

    fn step_admit(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::BundleVerified;
        let vb = match self.bundle(job, req) {
            Ok(vb) => vb,
            Err(reason) => return self.end(job, from, Outcome::Refused, &reason),
        };
        // The scope guard first: a query it refuses never reaches the PACS.
        if let Err(e) = ScopedQuery::from_cohort_query(&req.query, &self.p.dicom.scope) {
            return self.end(job, from, Outcome::Refused, &format!("query refused: {e}"));
        }
        let input = match AdmissionInput::new(req, vb.outputs(), now_s(), Vec::new()) {
            Ok(i) => i,
            Err(e) => return self.end(job, from, Outcome::Refused, &format!("query refused: {e}")),
        };
        let decision = match self.p.policy.admission(&input, &self.p.hospital) {
            Ok(d) => d,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    Outcome::Failed,
                    &format!("admission policy error: {e}"),
                )
            }
        };
        let b = serde_json::to_vec(&decision).unwrap_or_default();
        if !decision.allow {
            let reason = format!("admission policy: {}", decision.reasons.join("; "));
            self.p.store.put_artifact(job, artifact::ADMISSION, &b)?;
            return self.end(job, from, Outcome::Refused, &reason);
        }
        self.advance_to(
            job,
            from,
            JobState::Admitted,
            &[(artifact::ADMISSION, &b)],
            None,
        )
    }

    fn step_cohort(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::Admitted;
        let scoped = match ScopedQuery::from_cohort_query(&req.query, &self.p.dicom.scope) {
            Ok(q) => q,
            Err(e) => return self.end(job, from, Outcome::Refused, &format!("query refused: {e}")),
        };
        let query_digest = Digest::of(&serde_json::to_vec(&req.query).unwrap_or_default());
        let query_obj = ParticipantObject {
            id_type_code: "query-digest".into(),
            id: query_digest.to_hex(),
            detail: None,
        };
        let built = (self.p.pacs)().and_then(|client| {
            let mut b = CohortBuilder::new(&self.p.pseudonymizer, &self.p.dicom, &self.p.optouts);
            if let Some(l) = &self.p.labels {
                b = b.with_labels(l);
            }
            b.from_dicomweb(&client, &scoped)
        });
        let cohort = match built {
            Ok(c) => c,
            Err(e) => {
                self.p.audit.record(AuditEvent::new(
                    AuditKind::PacsQuery,
                    AuditOutcome::SeriousFailure,
                    format!("scoped QIDO-RS failed: {e}"),
                    ACTOR,
                    vec![job_object(job, None), query_obj],
                ))?;
                return self.end(
                    job,
                    from,
                    Outcome::Failed,
                    &format!("cohort query failed: {e}"),
                );
            }
        };
        let stored = StoredCohort {
            exclusions: cohort.exclusions.counts().clone(),
            entries: cohort.entries,
        };
        let summary = summary_of(&stored.entries, &stored.exclusions, req.validation_percent);
        self.p.audit.record(AuditEvent::new(
            AuditKind::PacsQuery,
            AuditOutcome::Success,
            format!(
                "scoped QIDO-RS (metadata only): {} instances kept, {} excluded",
                summary.instances,
                stored.exclusions.values().sum::<u64>()
            ),
            ACTOR,
            vec![
                job_object(job, None),
                query_obj,
                ParticipantObject {
                    id_type_code: "cohort-commitment".into(),
                    id: summary.commitment.to_hex(),
                    detail: None,
                },
            ],
        ))?;
        if stored.entries.is_empty() {
            return self.end(
                job,
                from,
                Outcome::Refused,
                "the query matched no usable instance",
            );
        }
        let c = serde_json::to_vec(&stored).unwrap_or_default();
        let s = serde_json::to_vec(&summary).unwrap_or_default();
        self.advance_to(
            job,
            from,
            JobState::CohortBuilt,
            &[(artifact::COHORT, &c), (artifact::COHORT_SUMMARY, &s)],
            None,
        )
    }

    fn step_review(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let cohort: CohortSummary = self.need(job, artifact::COHORT_SUMMARY)?;
        let review = ReviewRequest {
            job: req.clone(),
            cohort,
        };
        let digest = self.p.approvals.submit(&review)?;
        self.p.audit.record(AuditEvent::new(
            AuditKind::DpoAction,
            AuditOutcome::Success,
            "review requested from the DPO",
            ACTOR,
            vec![
                job_object(job, None),
                ParticipantObject {
                    id_type_code: "job-digest".into(),
                    id: digest.to_hex(),
                    detail: None,
                },
            ],
        ))?;
        let d = serde_json::to_vec(&digest).unwrap_or_default();
        self.advance_to(
            job,
            JobState::CohortBuilt,
            JobState::AwaitingApproval,
            &[(artifact::REVIEW, &d)],
            None,
        )
    }

    fn approval_facts(
        &self,
        job: JobId,
    ) -> Result<Option<(ApprovalFacts, rapha_policy::ApprovalRecord)>> {
        let Some(digest) = self.review_digest(job)? else {
            return Ok(None);
        };
        Ok(self
            .p
            .approvals
            .get(&digest)?
            .map(|rec| (ApprovalFacts::of(&rec, &self.p.dpo_keys), rec)))
    }

    fn step_approval(&mut self, job: JobId) -> Result<Step> {
        let digest: Digest = self.need(job, artifact::REVIEW)?;
        let Some((facts, rec)) = self.approval_facts(job)? else {
            return Ok(Step::Blocked(Blocked::Approval { job_digest: digest }));
        };
        let usable = facts.job_digest == digest
            && facts.signature_valid
            && facts.signer_trusted
            && !facts.revoked
            && facts.expires_at > now_s();
        if !usable {
            // An approval the node cannot use (wrong key, expired, revoked) is no approval.
            return Ok(Step::Blocked(Blocked::Approval { job_digest: digest }));
        }
        self.p.audit.record(AuditEvent::new(
            AuditKind::DpoAction,
            AuditOutcome::Success,
            "DPO approval accepted",
            (&format!("dpo:{}", rec.approval.dpo_key.to_hex()), "dpo"),
            vec![job_object(job, None)],
        ))?;
        let a = serde_json::to_vec(&rec).unwrap_or_default();
        self.advance_to(
            job,
            JobState::AwaitingApproval,
            JobState::Approved,
            &[(artifact::APPROVAL, &a)],
            None,
        )
    }

    fn step_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::AwaitingDeposit;
        match self.p.payments.check_deposit(req) {
            Err(e) => Ok(Step::Blocked(Blocked::Deposit(e))),
            Ok(DepositStatus::Waiting(w)) => Ok(Step::Blocked(Blocked::Deposit(w))),
            Ok(DepositStatus::Refused(reason)) => self.end(
                job,
                from,
                Outcome::Refused,
                &format!("deposit refused: {reason}"),
            ),
            Ok(DepositStatus::Confirmed(rec)) => {
                let b = serde_json::to_vec(&rec).unwrap_or_default();
                self.advance_to(
                    job,
                    from,
                    JobState::DepositConfirmed,
                    &[(artifact::DEPOSIT, &b)],
                    None,
                )
            }
        }
    }

    fn job_spec(&self, req: &JobRequest, vb: &VerifiedBundle) -> JobSpec {
        let outputs = vb.outputs().to_vec();
        let total_output_cap = outputs.iter().map(|o| o.max_bytes).sum();
        JobSpec {
            job_id: req.job_id,
            validation_percent: req.validation_percent,
            min_validation_patients: self.p.min_validation_patients,
            outputs,
            total_output_cap,
            limits: vb.resources().clone(),
            wall_override: None,
        }
    }

    fn step_attest(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::DepositConfirmed;
        let vb = match self.bundle(job, req) {
            Ok(vb) => vb,
            Err(reason) => return self.end(job, from, Outcome::Refused, &reason),
        };
        let session = match EnclaveSession::new(self.job_spec(req, &vb)) {
            Ok(s) => s,
            Err(e) => {
                return self.end(job, from, Outcome::Failed, &format!("enclave runtime: {e}"))
            }
        };
        let summary: CohortSummary = self.need(job, artifact::COHORT_SUMMARY)?;
        let pk = session.public_key();
        let binding = rapha_attest::binding(&job, &req.bundle_manifest, &summary.commitment, &pk);
        let ev = match self.p.evidence.evidence(&binding) {
            Ok(ev) => ev,
            Err(reason) => {
                return self.end(
                    job,
                    from,
                    Outcome::Failed,
                    &format!("attestation: {reason}"),
                )
            }
        };
        let verified = match self.p.verifier.verify_bound(&ev, &binding) {
            Ok(v) => v,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    Outcome::Refused,
                    &format!("attestation refused: {e}"),
                )
            }
        };
        let mut tpm_verified = verified.tpm.is_some();
        if let (Some(tpm), Some(v)) = (&ev.tpm, &self.p.tpm_verifier) {
            if let Err(e) = v.verify(tpm, &binding) {
                return self.end(
                    job,
                    from,
                    Outcome::Refused,
                    &format!("TPM evidence refused: {e}"),
                );
            }
            tpm_verified = true;
        }
        let level = if tpm_verified && verified.level != AttestationLevel::Hardware {
            "tpm-verified".to_owned()
        } else {
            verified.level.as_str().to_owned()
        };
        let rec = AttestationRecord {
            level,
            binding,
            evidence: verified.digests.evidence,
            tpm_quote: verified.digests.tpm_quote,
            tpm_verified,
            runtime_public_key: hex::encode(pk),
        };
        let r = serde_json::to_vec(&rec).unwrap_or_default();
        let e = ev.to_json();
        self.sessions.insert(job, session);
        self.advance_to(
            job,
            from,
            JobState::Attested,
            &[(artifact::EVIDENCE, &e), (artifact::ATTESTATION, &r)],
            None,
        )
    }

    fn step_final(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::Attested;
        let summary: CohortSummary = self.need(job, artifact::COHORT_SUMMARY)?;
        let approval = self.approval_facts(job)?.map(|(f, _)| f);
        let att: Option<AttestationRecord> = self.opt(job, artifact::ATTESTATION)?;
        let input = FinalInput {
            job_digest: rapha_policy::job_digest(req, &summary.commitment),
            now: now_s(),
            approval,
            attestation: AttestationFacts {
                present: att.is_some(),
                verified: att
                    .as_ref()
                    .is_some_and(|a| a.level == "hardware" || a.tpm_verified),
            },
            cohort: CohortFacts {
                patients: summary.patients,
                validation_patients: summary.validation_patients,
            },
        };
        let decision = match self.p.policy.final_gate(&input, &self.p.hospital) {
            Ok(d) => d,
            Err(e) => {
                self.sessions.remove(&job);
                return self.end(
                    job,
                    from,
                    Outcome::Failed,
                    &format!("final gate error: {e}"),
                );
            }
        };
        let b = serde_json::to_vec(&decision).unwrap_or_default();
        if !decision.allow {
            self.sessions.remove(&job);
            self.p.store.put_artifact(job, artifact::FINAL, &b)?;
            let reason = format!("final gate: {}", decision.reasons.join("; "));
            return self.end(job, from, Outcome::Refused, &reason);
        }
        self.advance_to(
            job,
            from,
            JobState::FinalGatePassed,
            &[(artifact::FINAL, &b)],
            None,
        )
    }

    fn step_run(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::Running;
        let Some(session) = self.sessions.remove(&job) else {
            return self.end(job, from, Outcome::Failed, "enclave session missing");
        };
        let vb = match self.bundle(job, req) {
            Ok(vb) => vb,
            Err(reason) => return self.end(job, from, Outcome::Refused, &reason),
        };
        // Live from here until this step returns (however it ends).
        let _live = self.live.track(
            job,
            std::time::Duration::from_secs(vb.resources().wall_seconds),
        );
        let dir = self.job_dir(job);
        let rootfs = dir.join("rootfs");
        // The runtime makes its own per-run directory (with the feed's unix socket) under a
        // short shared root: socket paths must stay under SUN_LEN (108 bytes).
        let work = self.p.work_dir.join("run");
        let staged = dir.join("staged");
        std::fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
        for d in [&rootfs, &staged] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(io("cannot clear", d))?;
            }
        }
        if let Err(e) = vb.unpack_rootfs(&rootfs) {
            return self.end(
                job,
                from,
                Outcome::Failed,
                &format!("cannot unpack the trainer: {e}"),
            );
        }
        let cohort: StoredCohort = self.need(job, artifact::COHORT)?;
        let client = match (self.p.pacs)() {
            Ok(c) => c,
            Err(e) => return self.end(job, from, Outcome::Failed, &format!("PACS: {e}")),
        };
        let (source, ids) = DicomSource::new(&cohort.entries, Some(client));
        let paths = RunPaths {
            work_root: &work,
            rootfs: &rootfs,
            release_dir: &staged,
        };
        let live = Arc::clone(&self.live);
        let result = session.run_observed(
            &self.p.sandbox,
            &paths,
            vb.entrypoint(),
            &source,
            &ids,
            &|p| live.update(job, p),
        );
        let result = match result {
            Ok(r) => r,
            Err(e) => return self.end(job, from, Outcome::Failed, &format!("enclave run: {e}")),
        };
        let m = &result.signed.manifest;
        self.p.audit.record(AuditEvent::new(
            AuditKind::PacsRetrieve,
            AuditOutcome::Success,
            format!(
                "WADO-RS pixels fed to the trainer: {} records, {} bytes",
                m.records_fed, result.stats.bytes_fed
            ),
            ACTOR,
            vec![job_object(job, None)],
        ))?;
        let mut metrics = BTreeMap::new();
        if let Some(v) = &m.metrics {
            metrics.insert("auc".to_owned(), v.auc);
            metrics.insert("auc_ci95_low".to_owned(), v.auc_ci95[0]);
            metrics.insert("auc_ci95_high".to_owned(), v.auc_ci95[1]);
            metrics.insert("accuracy".to_owned(), v.accuracy);
            metrics.insert("sensitivity".to_owned(), v.sensitivity);
            metrics.insert("specificity".to_owned(), v.specificity);
        }
        // Six decimals in the receipt: every reader (JSON parsers without exact float
        // round-tripping included) decodes such a number to the same f64, so the receipt's
        // decoded copy always matches its canonical bytes.
        metrics.retain(|_, v| v.is_finite());
        for v in metrics.values_mut() {
            *v = (*v * 1e6).round() / 1e6;
        }
        let files = m
            .guard
            .files
            .iter()
            .map(|f| OutputFile {
                name: f.name.clone(),
                sha256: f.digest,
                bytes: f.size,
            })
            .collect();
        let mut reasons = m.reasons.clone();
        reasons.extend(m.guard.rejections.iter().map(|r| format!("{r:?}")));
        let rec = RunRecord {
            outcome: format!("{:?}", m.outcome).to_lowercase(),
            reasons: reasons.clone(),
            manifest_json: String::from_utf8_lossy(&result.signed.bytes).into_owned(),
            signature: hex::encode(result.signed.signature),
            public_key: hex::encode(result.signed.public_key),
            confinement: m.confinement.to_owned(),
            files,
            metrics,
            guard_accepted: m.guard.accepted,
            records_fed: m.records_fed,
        };
        let b = serde_json::to_vec(&rec).unwrap_or_default();
        self.p.store.put_artifact(job, artifact::MANIFEST, &b)?;
        match m.outcome {
            ManifestOutcome::Completed => self.advance_to(
                job,
                from,
                JobState::OutputsGuarded,
                &[],
                Some((Outcome::Completed, "completed")),
            ),
            ManifestOutcome::Rejected => {
                let reason = format!("output guard refused the outputs: {}", reasons.join("; "));
                self.end(job, from, Outcome::Refused, &reason)
            }
            ManifestOutcome::Failed => {
                let reason = format!("trainer failed: {}", reasons.join("; "));
                self.end(job, from, Outcome::Failed, &reason)
            }
        }
    }

    fn receipt_body(&self, job: JobId, req: &JobRequest) -> Result<ReceiptBody> {
        let row = self.p.store.get(job)?;
        let outcome = row.outcome.unwrap_or(Outcome::Failed);
        let admission: Option<Decision> = self.opt(job, artifact::ADMISSION)?;
        let final_gate: Option<Decision> = self.opt(job, artifact::FINAL)?;
        let conv = |d: Decision| PolicyDecision {
            allow: d.allow,
            reasons: d.reasons,
            digest: d.digest,
        };
        let admission = admission.map(conv).unwrap_or_else(|| PolicyDecision {
            allow: false,
            reasons: vec![format!(
                "not evaluated: {}",
                row.reason.clone().unwrap_or_default()
            )],
            digest: Digest::of(b"rapha-node: admission not evaluated"),
        });
        let approval: Option<rapha_policy::ApprovalRecord> = self.opt(job, artifact::APPROVAL)?;
        let att: Option<AttestationRecord> = self.opt(job, artifact::ATTESTATION)?;
        let attestation = match att {
            None => ReceiptAttestation::NotReached,
            Some(a) if a.tpm_verified || a.level == "hardware" => ReceiptAttestation::Verified {
                evidence: {
                    let mut v = vec![AttestationEvidence {
                        kind: "evidence".into(),
                        digest: a.evidence,
                        result: a.level.clone(),
                    }];
                    if let Some(q) = a.tpm_quote {
                        v.push(AttestationEvidence {
                            kind: "tpm-quote".into(),
                            digest: q,
                            result: "verified".into(),
                        });
                    }
                    v
                },
            },
            Some(_) => ReceiptAttestation::NoneDevelopment,
        };
        let summary: Option<CohortSummary> = self.opt(job, artifact::COHORT_SUMMARY)?;
        let run: Option<RunRecord> = self.opt(job, artifact::MANIFEST)?;
        let started: Option<u64> = self
            .p
            .store
            .artifact(job, artifact::STARTED)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok());
        let terms = self.p.payments.terms();
        Ok(ReceiptBody {
            schema: rapha_receipt::body::SCHEMA.to_owned(),
            job_id: job,
            outcome,
            reason: row.reason.unwrap_or_else(|| "completed".into()),
            node: NodeIdentity {
                address: self.p.node_key.address(),
                name: self.p.node_name.clone(),
            },
            publisher: req.publisher.clone(),
            trainer: req.trainer.clone(),
            bundle_manifest: req.bundle_manifest,
            job_request: req.digest(),
            policy: PolicyDecisions {
                admission,
                final_gate: final_gate.map(conv),
            },
            dpo_approval: approval.map(|r| DpoApproval {
                signer: r.approval.dpo_key.to_hex(),
                signature: r.approval.signature,
            }),
            attestation,
            cohort: summary.map(|s| CohortCommitment {
                merkle_root: s.commitment,
                instances: s.instances,
                by_modality: s.modalities,
                exclusions: s.exclusions,
            }),
            confinement: run
                .as_ref()
                .map_or_else(|| "not-run".to_owned(), |r| r.confinement.clone()),
            outputs: run
                .filter(|_| outcome == Outcome::Completed)
                .map(|r| ReceiptOutputs {
                    guard_verdict: if r.guard_accepted {
                        "accepted"
                    } else {
                        "rejected"
                    }
                    .into(),
                    files: r.files,
                    metrics: r.metrics,
                    runtime_public_key: r.public_key,
                    signature: r.signature,
                }),
            payment: Payment::new(
                terms.chain_id,
                terms.escrow,
                terms.token,
                terms.payout,
                req.fee,
            ),
            timestamps: Timestamps {
                submitted_ms: row.created_at.saturating_mul(1000),
                started_ms: started,
                finished_ms: now_ms(),
            },
        })
    }

    fn step_receipt(&mut self, job: JobId, from: JobState, req: &JobRequest) -> Result<Step> {
        // The body is stored before it is appended, so a crash between the append and the
        // transition issues the identical body again (the log de-duplicates it).
        let body: ReceiptBody = match self.opt(job, artifact::RECEIPT_BODY)? {
            Some(b) => b,
            None => {
                let b = self.receipt_body(job, req)?;
                self.p.store.put_artifact(
                    job,
                    artifact::RECEIPT_BODY,
                    &serde_json::to_vec(&b).unwrap_or_default(),
                )?;
                b
            }
        };
        let mut file =
            rapha_receipt::issue(&body, &self.p.node_key, &mut self.p.receipts, now_ms())?;
        // The decoded copy as the typed body serialises it: a whole-number metric (an AUC of
        // 1.0) stays a float in the copy, as the verifier rebuilds it from the typed body.
        if let Ok(v) = serde_json::to_value(&body) {
            file.body = v;
        }
        let json = file.to_json()?;
        self.advance_to(
            job,
            from,
            JobState::Receipted,
            &[(artifact::RECEIPT, &json)],
            None,
        )
    }

    fn step_release(&mut self, job: JobId) -> Result<Step> {
        let from = JobState::Receipted;
        let run: RunRecord = self.need(job, artifact::MANIFEST)?;
        let staged = self.job_dir(job).join("staged");
        let dest = self.release_path(job);
        // Exactly once: the copy is built beside the destination and renamed into place; a
        // destination that exists is a release a crash interrupted before its commit.
        if !dest.exists() {
            let tmp = self.p.release_dir.join(format!(".{job}.partial"));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io("cannot clear", &tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
            for f in &run.files {
                let src = staged.join(&f.name);
                let bytes = std::fs::read(&src).map_err(io("cannot read staged output", &src))?;
                if Digest::of(&bytes) != f.sha256 {
                    return Err(PipelineError::Artifact {
                        job,
                        kind: artifact::MANIFEST,
                        detail: format!(
                            "staged output {} does not match its signed digest",
                            f.name
                        ),
                    });
                }
                let to = tmp.join(&f.name);
                std::fs::write(&to, &bytes).map_err(io("cannot write released output", &to))?;
            }
            if let Some(r) = self.receipt(job)? {
                let to = tmp.join("receipt.json");
                std::fs::write(&to, r.to_json()?).map_err(io("cannot write", &to))?;
            }
            std::fs::rename(&tmp, &dest).map_err(io("cannot move release into place", &dest))?;
        }
        self.p.audit.record(AuditEvent::new(
            AuditKind::Release,
            AuditOutcome::Success,
            format!("{} guarded output files released", run.files.len()),
            ACTOR,
            vec![
                job_object(job, None),
                ParticipantObject {
                    id_type_code: "output-manifest-signature".into(),
                    id: run.signature.chars().take(64).collect(),
                    detail: Some(
                        run.files
                            .iter()
                            .map(|f| format!("{}:{}", f.name, f.sha256.to_hex()))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                },
            ],
        ))?;
        let names: Vec<&str> = run.files.iter().map(|f| f.name.as_str()).collect();
        let b = serde_json::to_vec(&names).unwrap_or_default();
        self.advance_to(
            job,
            from,
            JobState::Released,
            &[(artifact::RELEASE, &b)],
            None,
        )
    }

    fn step_settle(&mut self, job: JobId, from: JobState) -> Result<Step> {
        let receipt = self.receipt(job)?.ok_or_else(|| PipelineError::Artifact {
            job,
            kind: artifact::RECEIPT,
            detail: "receipted job without a receipt".into(),
        })?;
        let deposited = self.p.store.artifact(job, artifact::DEPOSIT)?.is_some();
        let status = if deposited {
            match self.p.payments.settle(job, &receipt) {
                Ok(s) => s,
                Err(e) => return Ok(Step::Blocked(Blocked::Settlement(e))),
            }
        } else {
            SettleStatus::Done(
                serde_json::json!({"settled": false, "why": "no deposit was confirmed for this job"}),
            )
        };
        match status {
            SettleStatus::Pending(w) => Ok(Step::Blocked(Blocked::Settlement(w))),
            SettleStatus::Done(v) => {
                let b = serde_json::to_vec(&v).unwrap_or_default();
                self.advance_to(
                    job,
                    from,
                    JobState::Settled,
                    &[(artifact::SETTLEMENT, &b)],
                    None,
                )
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io("cannot create", to))?;
    let rd = std::fs::read_dir(from).map_err(|_| PipelineError::MissingBundle {
        claimed: Digest::of(b""),
        path: from.to_path_buf(),
    })?;
    for e in rd {
        let e = e.map_err(io("cannot read", from))?;
        let ty = e.file_type().map_err(io("cannot stat", &e.path()))?;
        let dest = to.join(e.file_name());
        if ty.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else if ty.is_file() {
            std::fs::copy(e.path(), &dest).map_err(io("cannot copy", &e.path()))?;
        }
    }
    Ok(())
}
