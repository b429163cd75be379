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

mod admission;
mod attest;
pub mod chain;
mod cohort;
mod deposit;
mod ports;
mod receipt;
mod release;
mod review;
mod run;

pub use admission::BundleFacts;
pub use attest::AttestationRecord;
pub use cohort::cohort_commitment;
use cohort::StoredCohort;
pub use ports::*;
pub use run::RunRecord;

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

    /// The job digest a DPO approves (once the review was submitted).
    ///
    /// # Errors
    /// Store errors.
    pub fn review_digest(&self, job: JobId) -> Result<Option<Digest>> {
        Ok(self.review_ref(job)?.map(|r| r.job_digest))
    }

    /// The job digest a DPO approves and its version, as recorded when the review was
    /// submitted (a job reviewed before versions existed uses v1).
    ///
    /// # Errors
    /// Store errors, or an unreadable `review` artifact.
    pub fn review_ref(&self, job: JobId) -> Result<Option<rapha_policy::JobDigestRef>> {
        self.opt(job, artifact::REVIEW)
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
        let mut review = ReviewRequest::new(row.request, cohort);
        if let Some(r) = self.review_ref(job)? {
            review.digest_version = r.digest_version;
        }
        Ok(Some(review))
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
