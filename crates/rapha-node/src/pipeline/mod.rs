//! The job pipeline: ARCHITECTURE.md's data flow, steps 1–12, driven one persisted step at a
//! time over the [`JobStore`].
//!
//! This module is the state machine and its driver; each step lives in the module named after
//! its part of the data flow:
//!
//! ```text
//! admission  received (the bundle staged in), 1 bundle verified, 2 admission policy
//! cohort     3 cohort from scoped QIDO-RS metadata, its commitment
//! review     4 the DPO's review and approval (or rejection)
//! deposit    5 escrow deposit confirmed; checked again right before 8
//! attest     6 attestation bound to the job, 7 final policy gate
//! run        8 trainer run in the enclave runtime, 9 output guard
//! receipt    10 receipt signed and appended to the log
//! release    11 settlement on chain, 12 release of outputs; finished jobs' data removed
//! ending     how a job ends early (reason code, hospital detail, publisher suspension)
//! artifact   what each step stores with its state change
//! rules      the node's own bounds on a job, retries of a failing step
//! ports      what the pipeline needs from outside: evidence, escrow, PACS
//! chain      the escrow on a chain (the production `Payments`)
//! ```
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
//!
//! # The node lock
//!
//! A step that waits on the network or runs long (the bundle's verification in the verify,
//! admit and attest steps, the cohort build, the trainer run and its guard, the deposit checks
//! and the settlement) does not hold the node while it waits. It is
//! split in three: [`Node::prepare`] reads what it needs under the node lock and hands out a
//! [`Work`]; [`Work::run`] does the slow part without the node; [`Node::commit`] applies the
//! result under the lock again, after checking that the job is still in the state the work
//! was prepared from (and the store's transition is a compare-and-swap on that state). Every
//! other step is quick and runs whole under the lock. [`Node::advance`] does all three in one
//! call, for callers that own the node alone (`run-job`, the demo, tests).
//!
//! # What the publisher sees of an ending
//!
//! A job ends with a [`ReasonCode`] from a fixed vocabulary: the job's `reason` column, the
//! receipt and the publisher's API views carry only the code. What happened in words (which
//! rule of the guard fired on which file, the trainer's exit status, a PACS error) is the
//! hospital's: it goes to the audit trail and to the `ending` artifact the DPO and admin views
//! show. A refusal by the output guard is `violated`: charged like a completed job, and the
//! publisher (all its keys) is suspended until a DPO reinstates it.

mod admission;
pub mod artifact;
mod attest;
pub mod chain;
mod cohort;
mod deposit;
mod ending;
mod ports;
mod privacy;
mod receipt;
mod release;
mod review;
mod rules;
mod run;

pub use admission::{review_request, BundleFacts, StagedBundle};
pub use attest::AttestationRecord;
use cohort::StoredCohort;
pub use cohort::{cohort_commitment, MAX_COHORT_ARTIFACT_BYTES};
pub use ending::Ending;
pub use ports::*;
pub use privacy::PrivacyAudit;
pub use rules::*;
pub use run::{RunRecord, RUN_QUANTUM};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rapha_attest::tpm::{TpmAttester, TpmVerifier};
use rapha_attest::{AttestationLevel, Evidence, EvidenceVerifier};
use rapha_bundle::{verify_bundle, TrustStore, VerifiedBundle};
use rapha_core::{merkle, Digest, JobId, JobRequest, Outcome, ReasonCode};
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
    #[error("job {0}: a step of this job is already running outside the node lock")]
    InFlight(JobId),
    #[error("job {0}: a step's work panicked; the job stays in its last committed state")]
    WorkPanicked(JobId),
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` truncated to the whole minute: every time the publisher is shown (receipt, status)
/// has minute resolution, so it carries no finer timing the trainer chose.
pub fn to_minute_ms(ms: u64) -> u64 {
    ms - ms % 60_000
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
    /// The job is finished (released, or settled): nothing more to do.
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

/// [`NodeParts`] as the node keeps them: what a step's slow part uses without the node lock
/// is shared ([`Arc`]), the rest is the node's own.
struct Parts {
    store: JobStore,
    trust: TrustStore,
    policy: Policy,
    hospital: HospitalPolicy,
    pseudonymizer: Arc<Pseudonymizer>,
    dicom: Arc<DicomConfig>,
    optouts: Arc<OptOuts>,
    labels: Option<Arc<LabelTable>>,
    pacs: Arc<Mutex<PacsConnect>>,
    approvals: ApprovalStore,
    dpo_keys: Vec<DpoPublicKey>,
    evidence: Box<dyn EvidenceProvider>,
    verifier: EvidenceVerifier,
    tpm_verifier: Option<TpmVerifier>,
    sandbox: Arc<SandboxConfig>,
    min_validation_patients: usize,
    /// Shared with the settlement step's work, which signs without the node lock.
    node_key: Arc<NodeKey>,
    node_name: String,
    receipts: ReceiptLog,
    payments: SharedPayments,
    audit: AuditLog,
    work_dir: PathBuf,
    release_dir: PathBuf,
}

/// The hospital node's job pipeline.
pub struct Node {
    p: Parts,
    /// Live enclave sessions (their private keys), by job: lost with the process.
    sessions: HashMap<JobId, EnclaveSession>,
    after_commit: Option<AfterCommit>,
    /// Progress of running trainers, shared with the API (read without the node lock).
    live: Arc<LiveRuns>,
    /// Jobs whose step runs outside the node lock now ([`Work`] handed out, not committed).
    in_flight: HashSet<JobId>,
    /// See [`RUN_QUANTUM`].
    run_quantum: Duration,
    /// DPO passkeys (`[approval]`), when configured.
    passkeys: Option<crate::passkeys::Passkeys>,
    /// `[approval] require_passkey`: Ed25519 key-file approvals are not accepted.
    passkey_required: bool,
    /// See [`JobRules`].
    rules: JobRules,
    /// Jobs whose failed step waits before it is tried again ([`Node::step_failed`]).
    backoff: HashMap<JobId, std::time::Instant>,
    /// The privacy audit's runner and split (issue 19); none by default.
    privacy: Arc<PrivacyAudit>,
}

/// A step's slow part, handed out by [`Node::prepare`] under the node lock and run by
/// [`Work::run`] without it.
pub struct Work {
    job: JobId,
    from: JobState,
    task: Box<dyn FnOnce() -> Commit + Send>,
}

/// What a step's slow part produced, applied to the node by [`Node::commit`].
pub type Commit = Box<dyn FnOnce(&mut Node) -> Result<Step> + Send>;

/// A [`Work`] that has run: commit it with [`Node::commit`].
pub struct Done {
    job: JobId,
    from: JobState,
    commit: Commit,
}

impl Work {
    fn new(job: JobId, from: JobState, task: impl FnOnce() -> Commit + Send + 'static) -> Self {
        Self {
            job,
            from,
            task: Box::new(task),
        }
    }

    /// The job this work belongs to.
    pub fn job(&self) -> JobId {
        self.job
    }

    /// Does the slow part (blocking: the network, the trainer). Call it without the node lock.
    /// A panic in it is caught: its commit then changes nothing but the job's in-flight mark
    /// (so the job is not stuck), and answers [`PipelineError::WorkPanicked`].
    pub fn run(self) -> Done {
        let (job, task) = (self.job, self.task);
        // What the task shared with the node is read-only or behind its own lock; the node
        // state it would change is changed only by the commit, which a panic never reaches.
        let commit =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).unwrap_or_else(|_| {
                tracing::error!(%job, "a step's work panicked");
                Box::new(move |_: &mut Node| Err(PipelineError::WorkPanicked(job)))
            });
        Done {
            job: self.job,
            from: self.from,
            commit,
        }
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("job", &self.job)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// What [`Node::prepare`] hands out.
#[derive(Debug)]
pub enum Next {
    /// The step ran whole under the lock.
    Step(Step),
    /// The step's slow part, to run without the node lock, then [`Node::commit`].
    Work(Work),
    /// A step of this job is running outside the lock already (another worker's).
    InFlight,
}

/// The result of a commit whose job another worker moved meanwhile: nothing applied.
fn moved_meanwhile(job: JobId, expected: JobState, actual: JobState) -> PipelineError {
    PipelineError::Store(StoreError::Conflict {
        job,
        expected,
        actual,
    })
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.p.node_name)
            .finish_non_exhaustive()
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
        let p = Parts {
            store: parts.store,
            trust: parts.trust,
            policy: parts.policy,
            hospital: parts.hospital,
            pseudonymizer: Arc::new(parts.pseudonymizer),
            dicom: Arc::new(parts.dicom),
            optouts: Arc::new(parts.optouts),
            labels: parts.labels.map(Arc::new),
            pacs: Arc::new(Mutex::new(parts.pacs)),
            approvals: parts.approvals,
            dpo_keys: parts.dpo_keys,
            evidence: parts.evidence,
            verifier: parts.verifier,
            tpm_verifier: parts.tpm_verifier,
            sandbox: Arc::new(parts.sandbox),
            min_validation_patients: parts.min_validation_patients,
            node_key: Arc::new(parts.node_key),
            node_name: parts.node_name,
            receipts: parts.receipts,
            payments: SharedPayments(Arc::new(Mutex::new(parts.payments))),
            audit: parts.audit,
            work_dir: parts.work_dir,
            release_dir: parts.release_dir,
        };
        Ok(Self {
            p,
            sessions: HashMap::new(),
            after_commit: None,
            live: Arc::default(),
            in_flight: HashSet::new(),
            run_quantum: RUN_QUANTUM,
            passkeys: None,
            passkey_required: false,
            rules: JobRules::default(),
            backoff: HashMap::new(),
            privacy: Arc::default(),
        })
    }

    /// Sets the privacy audit's runner and split (`[audit]`, `[policy.audit]`; none until
    /// then: every completed job's receipt says `no-runner` and nothing is held back).
    pub fn set_privacy_audit(&mut self, audit: PrivacyAudit) {
        self.privacy = Arc::new(audit);
    }

    /// Sets the run quantum ([`RUN_QUANTUM`] by default; `Duration::ZERO` commits a run's end
    /// as soon as the trainer exits, for tests and demonstrations that time the pipeline).
    pub fn set_run_quantum(&mut self, quantum: Duration) {
        self.run_quantum = quantum;
    }

    /// Sets the node's own bounds on a job ([`JobRules::default`] until then).
    pub fn set_rules(&mut self, rules: JobRules) {
        self.rules = rules;
    }

    /// The node's own bounds on a job.
    pub fn rules_mut(&mut self) -> &mut JobRules {
        &mut self.rules
    }

    /// Sets the cohort step's quantum ([`JobRules::cohort_quantum`]; `Duration::ZERO` commits
    /// the cohort as soon as it is built, for tests and demonstrations that time the pipeline).
    pub fn set_cohort_quantum(&mut self, quantum: Duration) {
        self.rules.cohort_quantum = quantum;
    }

    /// Replaces the `[dicom]` settings the cohort step and the run use.
    pub fn set_dicom(&mut self, dicom: DicomConfig) {
        self.p.dicom = Arc::new(dicom);
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

    /// Turns on DPO passkeys; with `required`, a key-file approval is no approval.
    pub fn set_passkeys(&mut self, passkeys: crate::passkeys::Passkeys, required: bool) {
        self.passkeys = Some(passkeys);
        self.passkey_required = required;
    }

    /// The node's passkey state, if `[approval]` configured it.
    pub fn passkeys(&self) -> Option<&crate::passkeys::Passkeys> {
        self.passkeys.as_ref()
    }

    /// Whether only passkey approvals are accepted.
    pub fn passkey_required(&self) -> bool {
        self.passkey_required
    }

    /// The passkey state and the receipt log, for an enrolment or a revocation (each appends
    /// an entry to the log).
    pub fn passkeys_and_log(
        &mut self,
    ) -> Option<(&mut crate::passkeys::Passkeys, &mut ReceiptLog)> {
        let log = &mut self.p.receipts;
        self.passkeys.as_mut().map(|p| (p, log))
    }

    /// Verifies a DPO's passkey approval of `job` (its review digest) and records it; the
    /// pipeline then uses it as the job's approval and the receipt carries it.
    ///
    /// # Errors
    /// `Ok(Err(_))` for the ceremony's refusal; store errors.
    pub fn approve_with_passkey(
        &mut self,
        job: JobId,
        assertion: rapha_receipt::webauthn::Assertion,
        now: u64,
    ) -> Result<std::result::Result<(), crate::passkeys::PasskeyError>> {
        let Some(passkeys) = self.passkeys.as_ref() else {
            return Ok(Err(crate::passkeys::PasskeyError::NotConfigured));
        };
        let Some(digest) = self.review_digest(job)? else {
            return Ok(Err(crate::passkeys::PasskeyError::UnknownNonce));
        };
        let approval = match passkeys.approve(&digest, assertion, now) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = serde_json::to_vec(&approval).unwrap_or_default();
        self.p
            .store
            .put_artifact(job, artifact::PASSKEY_APPROVAL, &bytes)?;
        Ok(Ok(()))
    }

    pub fn audit_path(&self) -> &Path {
        self.p.audit.path()
    }

    /// Reads the trust store again from its directory (after a publisher was revoked there), so
    /// the pipeline's next verification sees the change.
    ///
    /// # Errors
    /// An unreadable trust store (the one held stays in use).
    pub fn reload_trust(&mut self) -> Result<(), rapha_bundle::BundleError> {
        let dir = self.p.trust.dir().to_owned();
        self.p.trust = TrustStore::open(&dir)?;
        Ok(())
    }

    /// The address of the node's signing key (receipts and tree heads verify against it).
    pub fn node_address(&self) -> alloy::primitives::Address {
        self.p.node_key.address()
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

    /// The node's working directory (per-job data under `jobs/`, runs under `run/`).
    pub fn work_dir(&self) -> &Path {
        &self.p.work_dir
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

    /// Start-up: resumes every unfinished job as far as it can go, and fails those whose
    /// enclave session died with an earlier process. Returns each job's state afterwards.
    ///
    /// # Errors
    /// Infrastructure errors (store, audit, receipt log).
    /// A job whose step fails is left where it is ([`Node::step_failed`]): one job's error
    /// never stops the node from starting.
    ///
    /// # Errors
    /// Infrastructure errors of the start-up clean-up or of listing the jobs.
    pub fn resume_all(&mut self) -> Result<Vec<(JobId, JobState)>> {
        self.collect_finished()?;
        let mut out = Vec::new();
        for row in self.p.store.unfinished()? {
            let state = match self.run_until_blocked(row.id) {
                Ok(state) => state,
                Err(_) => self.p.store.get(row.id)?.state,
            };
            out.push((row.id, state));
        }
        Ok(out)
    }

    /// Start-up of a node whose jobs are driven in the background (`serve`): as
    /// [`Node::resume_all`], but only the quick steps run here; a step that waits on the PACS,
    /// the chain or a quantum is left to the background driver, so the node serves at once.
    ///
    /// # Errors
    /// As [`Node::resume_all`].
    pub fn start_up(&mut self) -> Result<Vec<(JobId, JobState)>> {
        self.collect_finished()?;
        let mut out = Vec::new();
        for row in self.p.store.unfinished()? {
            let job = row.id;
            loop {
                match self.prepare(job) {
                    Ok(Next::Step(Step::Moved(_))) => continue,
                    Ok(Next::Work(w)) => {
                        // Prepared only: nothing of it ran, nothing to undo but the mark.
                        self.in_flight.remove(&w.job());
                        break;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        self.step_failed(job, &e);
                        break;
                    }
                }
            }
            out.push((job, self.p.store.get(job)?.state));
        }
        Ok(out)
    }

    /// Advances `job` until it is finished or waits for something outside the node.
    ///
    /// # Errors
    /// Infrastructure errors; the job stays in its last committed state, and the failure is
    /// counted ([`Node::step_failed`]).
    pub fn run_until_blocked(&mut self, job: JobId) -> Result<JobState> {
        loop {
            match self.advance(job) {
                Ok(Step::Moved(_)) => continue,
                Ok(Step::Blocked(_) | Step::Done) => return Ok(self.p.store.get(job)?.state),
                Err(e) => {
                    self.step_failed(job, &e);
                    return Err(e);
                }
            }
        }
    }

    /// Executes the job's next step, its slow part included (holding the node throughout:
    /// for callers that own the node alone).
    ///
    /// # Errors
    /// Infrastructure errors; the job stays in its last committed state.
    pub fn advance(&mut self, job: JobId) -> Result<Step> {
        match self.prepare(job)? {
            Next::Step(s) => Ok(s),
            Next::Work(w) => {
                let done = w.run();
                self.commit(done)
            }
            Next::InFlight => Err(PipelineError::InFlight(job)),
        }
    }

    /// Applies the result of a [`Work`] (under the node lock), if its job is still where the
    /// work was prepared from.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the job moved meanwhile (nothing applied); the commit's own
    /// infrastructure errors.
    pub fn commit(&mut self, done: Done) -> Result<Step> {
        self.in_flight.remove(&done.job);
        let actual = self.p.store.get(done.job)?.state;
        if actual != done.from {
            return Err(moved_meanwhile(done.job, done.from, actual));
        }
        let step = (done.commit)(self)?;
        self.collect_if_finished(done.job)?;
        Ok(step)
    }

    /// Hands out `work` for `job` (marked in flight until its commit).
    fn work(&mut self, work: Work) -> Next {
        self.in_flight.insert(work.job);
        Next::Work(work)
    }

    /// The job's next step: done here when it is quick, handed out as [`Work`] when it waits
    /// on the network or runs long.
    ///
    /// # Errors
    /// Infrastructure errors; the job stays in its last committed state.
    pub fn prepare(&mut self, job: JobId) -> Result<Next> {
        if self.in_flight.contains(&job) {
            return Ok(Next::InFlight);
        }
        let next = self.prepare_step(job)?;
        if matches!(next, Next::Step(Step::Moved(_))) {
            self.collect_if_finished(job)?;
        }
        Ok(next)
    }

    fn prepare_step(&mut self, job: JobId) -> Result<Next> {
        let row = self.p.store.get(job)?;
        let state = row.state;
        let req = row.request;
        use JobState as S;
        let step = match state {
            S::Received => return Ok(self.with_verified_bundle(job, state, &req, Node::step_verify)),
            S::BundleVerified => match self.suspended(job, state, &req)? {
                Some(step) => Ok(step),
                None => return Ok(self.with_verified_bundle(job, state, &req, Node::step_admit)),
            },
            S::Admitted => return self.step_cohort(job, &req),
            S::CohortBuilt => self.step_review(job, &req),
            S::AwaitingApproval => self.step_approval(job),
            S::Approved => self.advance_to(job, S::Approved, S::AwaitingDeposit, &[], None),
            S::AwaitingDeposit => return self.step_deposit(job, &req),
            S::DepositConfirmed => {
                return Ok(self.with_verified_bundle(job, state, &req, Node::step_attest))
            }
            S::Attested | S::FinalGatePassed | S::Running
                if !self.sessions.contains_key(&job) =>
            {
                self.end(
                    job,
                    state,
                    ReasonCode::NodeRestarted,
                    "the node stopped while this job's enclave key was live; the job was not re-run (no outputs released, deposit refunded)",
                )
            }
            S::Attested => match self.suspended(job, state, &req)? {
                Some(step) => Ok(step),
                None => self.step_final(job, &req),
            },
            S::FinalGatePassed => return self.step_start(job, &req),
            S::Running => return self.step_run(job, &req),
            S::OutputsGuarded | S::Refused | S::Failed => self.step_receipt(job, state, &req),
            S::Receipted => return self.step_settle(job, S::Receipted),
            S::Settled => self.step_after_settlement(job, row.outcome),
            S::Released => return self.step_after_release(job),
        };
        step.map(Next::Step)
    }
}
