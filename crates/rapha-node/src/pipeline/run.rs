//! Steps 8–9: the trainer runs in the enclave runtime on the approved cohort; the output
//! guard checks everything it wrote.

use super::admission::job_bundle;
use super::ports::connect_pacs;
use super::*;
use rapha_dicom::cohort_file::Entries;

/// How long after its start a run's end is committed at the earliest: the run's end (and
/// everything that follows it and the publisher can observe, its state, receipt, log and
/// settlement) happens on a whole multiple of this after the start, whenever the trainer
/// exited within it.
pub const RUN_QUANTUM: Duration = Duration::from_secs(60);

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
    /// Cohort entries dropped when the run started: their patients opted out after approval.
    #[serde(default)]
    pub opted_out_since_approval: u64,
    /// Records refused at fetch time by reason: the PACS served another object than the
    /// approved one, or one its own header excludes, or pixels that cannot be decoded
    /// (`malformed-pixel-data`, `pixels-too-large`, `transfer-syntax-not-served`,
    /// `undecodable-transfer-syntax`; docs/deidentification.md lists them all).
    #[serde(default)]
    pub fetch_refusals: rapha_core::ExclusionCounts,
}

impl Node {
    /// Under the node lock: the enclave session and the cohort. The bundle's verification
    /// (every blob hashed again), the rootfs unpacking, the trainer run and the guard run
    /// without it ([`Work`]).
    pub(super) fn step_run(&mut self, job: JobId, req: &JobRequest) -> Result<Next> {
        let from = JobState::Running;
        let Some(session) = self.sessions.remove(&job) else {
            return self
                .end(
                    job,
                    from,
                    ReasonCode::NodeRestarted,
                    "enclave session missing",
                )
                .map(Next::Step);
        };
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
        let stored: StoredCohort = self.need(job, artifact::COHORT)?;
        // The cohort file is checked whole against its committed digest here; its entries
        // are then read one at a time (the run holds none of them).
        let cohort = match self.cohort_of(job, stored) {
            Ok(c) => c,
            // A missing or changed cohort file: nothing is fed from a cohort that is not the
            // approved one (the node's own failure, refunded).
            Err(e) => {
                return self
                    .end(
                        job,
                        from,
                        ReasonCode::EnclaveError,
                        &format!("the approved cohort cannot be read: {e}"),
                    )
                    .map(Next::Step)
            }
        };
        let optouts = Arc::clone(&self.p.optouts);
        let dicom = Arc::clone(&self.p.dicom);
        let pacs = Arc::clone(&self.p.pacs);
        let sandbox = Arc::clone(&self.p.sandbox);
        let live = Arc::clone(&self.live);
        let quantum = self.run_quantum;
        let trust = self.p.trust.clone();
        let privacy = Arc::clone(&self.privacy);
        let bundle_dir = dir.join("bundle");
        let req = req.clone();
        Ok(self.work(Work::new(job, from, move || {
            let started = std::time::Instant::now();
            let vb = match job_bundle(&bundle_dir, &trust, &req) {
                Ok(vb) => vb,
                Err(reason) => {
                    let ran = RunEnd::Failed(ReasonCode::BundleRefused, reason);
                    return Box::new(move |n: &mut Node| n.commit_run(job, ran));
                }
            };
            // Live from here until the run's end is committed (however it ends): kept through
            // the quantum's wait, so nothing the hospital's views show of the run changes when
            // the trainer exits.
            let tracked = live.track(job, Duration::from_secs(vb.resources().wall_seconds));
            let ran = run_trainer(RunInput {
                job,
                session: &session,
                vb: &vb,
                entries: cohort,
                optouts: &optouts,
                dicom: &dicom,
                pacs: &pacs,
                sandbox: &sandbox,
                live: &live,
                privacy: &privacy,
                paths: RunPaths {
                    work_root: &work,
                    rootfs: &rootfs,
                    release_dir: &staged,
                },
            });
            // The trainer's rootfs is not needed after the run (a crash before this line
            // leaves it to the start-up clean-up).
            if let Err(e) = std::fs::remove_dir_all(&rootfs) {
                tracing::warn!(%job, error = %e, "cannot remove the trainer's rootfs");
            }
            wait_for_quantum(started, quantum);
            Box::new(move |n: &mut Node| {
                let step = n.commit_run(job, ran);
                drop(tracked);
                step
            })
        })))
    }

    fn commit_run(&mut self, job: JobId, ran: RunEnd) -> Result<Step> {
        let from = JobState::Running;
        let Ran {
            result,
            opted_out,
            fetch_refusals,
            audit,
        } = match ran {
            RunEnd::Ran(r) => *r,
            RunEnd::Failed(code, detail) => return self.end(job, from, code, &detail),
        };
        let m = &result.signed.manifest;
        self.p.audit.record(AuditEvent::new(
            AuditKind::PacsRetrieve,
            AuditOutcome::Success,
            format!(
                "WADO-RS pixels fed to the trainer: {} records, {} bytes; {} cohort entries \
                 dropped (opted out since approval), records refused at fetch time: {:?}",
                result.details.records_fed, result.stats.bytes_fed, opted_out, fetch_refusals
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
        // The hospital-side details (the manifest has only codes): the exit and the guard's
        // audit lines, in the node's words (never a name the trainer chose).
        let reasons = result.details.reasons.clone();
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
            records_fed: result.details.records_fed,
            opted_out_since_approval: opted_out,
            fetch_refusals,
        };
        let b = serde_json::to_vec(&rec).unwrap_or_default();
        self.p.store.put_artifact(job, artifact::MANIFEST, &b)?;
        let mut withheld = None;
        if let Some((audit, detail)) = audit {
            if self.privacy.withholds(&audit) {
                withheld = Some(detail.clone());
            }
            self.p.audit.record(AuditEvent::new(
                AuditKind::PacsRetrieve,
                AuditOutcome::Success,
                format!("privacy audit of the release: {detail}"),
                ACTOR,
                vec![job_object(job, None)],
            ))?;
            let b = serde_json::to_vec(&audit).unwrap_or_default();
            self.p
                .store
                .put_artifact(job, artifact::PRIVACY_AUDIT, &b)?;
        }
        if let (ManifestOutcome::Completed, Some(detail)) = (&m.outcome, withheld) {
            // Nothing of the release leaves: the node's staged files are removed now.
            let staged = self.job_dir(job).join("staged");
            if let Err(e) = std::fs::remove_dir_all(&staged) {
                tracing::warn!(%job, error = %e, "cannot remove a withheld release");
            }
            let detail = format!(
                "the privacy audit withholds the release (over [policy.audit] max_attack_auc): \
                 {detail}"
            );
            return self.end(job, from, ReasonCode::PrivacyAudit, &detail);
        }
        match m.outcome {
            ManifestOutcome::Completed => self.advance_to(
                job,
                from,
                JobState::OutputsGuarded,
                &[],
                Some((Outcome::Completed, ReasonCode::Completed.as_str())),
            ),
            // Whatever rule fired, the publisher sees one code; the rules and the names they
            // fired on (trainer-chosen) are the hospital's detail.
            ManifestOutcome::Rejected => {
                let detail = format!("output guard refused the outputs: {}", reasons.join("; "));
                self.end(job, from, ReasonCode::OutputGuard, &detail)
            }
            ManifestOutcome::TrainerFailed => {
                let detail = format!("trainer failed: {}", reasons.join("; "));
                self.end(job, from, ReasonCode::TrainerFailed, &detail)
            }
            // The node's own failure after launch (the feed, the OCI runtime, I/O): refunded.
            _ => {
                let code = if m.reasons.contains(&ReasonCode::FeedFailed.as_str()) {
                    ReasonCode::FeedFailed
                } else {
                    ReasonCode::EnclaveError
                };
                let detail = format!("enclave run: {}", reasons.join("; "));
                self.end(job, from, code, &detail)
            }
        }
    }
}

/// A run that happened: the enclave's result and what was kept from the trainer.
struct Ran {
    result: rapha_enclave::session::JobResult,
    /// Cohort entries dropped at the start: opted out since approval.
    opted_out: u64,
    /// Records refused at fetch time, by reason.
    fetch_refusals: rapha_core::ExclusionCounts,
    /// A completed run's privacy audit (the receipt's member) and the hospital's words on it.
    audit: Option<(rapha_receipt::body::Audit, String)>,
}

/// How a run's slow part ended.
enum RunEnd {
    /// The trainer ran and the guard checked its outputs.
    Ran(Box<Ran>),
    /// The node could not run it (code and hospital-side detail).
    Failed(ReasonCode, String),
}

/// What the run's slow part works with.
struct RunInput<'a> {
    job: JobId,
    session: &'a EnclaveSession,
    vb: &'a VerifiedBundle,
    entries: Entries,
    optouts: &'a OptOuts,
    dicom: &'a DicomConfig,
    pacs: &'a Mutex<PacsConnect>,
    sandbox: &'a SandboxConfig,
    live: &'a Arc<LiveRuns>,
    privacy: &'a super::PrivacyAudit,
    paths: RunPaths<'a>,
}

/// Unpacks the trainer and runs it under the enclave runtime (without the node lock).
fn run_trainer(i: RunInput<'_>) -> RunEnd {
    let job = i.job;
    if let Err(e) = i.vb.unpack_rootfs(i.paths.rootfs) {
        return RunEnd::Failed(
            ReasonCode::UnpackFailed,
            format!("cannot unpack the trainer: {e}"),
        );
    }
    // Patients who opted out since the DPO approved the cohort are dropped before any record
    // is listed or fed (item 11); an unreadable list stops the run.
    let mut entries = i.entries;
    let opted_out = match entries.drop_opted_out_now(i.optouts) {
        Ok(n) => n,
        Err(e) => {
            return RunEnd::Failed(
                ReasonCode::EnclaveError,
                format!("the opt-out list could not be re-read when the run started: {e}"),
            )
        }
    };
    let client = match connect_pacs(i.pacs) {
        Ok(c) => c,
        Err(e) => return RunEnd::Failed(ReasonCode::PacsUnavailable, format!("PACS: {e}")),
    };
    let (source, ids) = match DicomSource::from_entries(entries, Some(client)) {
        Ok(built) => built,
        Err(e) => return RunEnd::Failed(ReasonCode::EnclaveError, format!("enclave run: {e}")),
    };
    let source = source.with_exclusions(i.dicom.exclusions.clone());
    let live = Arc::clone(i.live);
    match i.session.run_observed(
        i.sandbox,
        &i.paths,
        i.vb.entrypoint(),
        &source,
        &ids,
        &|p| live.update(job, p),
    ) {
        Ok(result) => {
            // Between the guard and the receipt: the privacy audit of what a completed job
            // releases (its records are fetched again, after the trainer's).
            let audit = (result.signed.manifest.outcome == ManifestOutcome::Completed).then(|| {
                super::privacy::audit_release(&super::privacy::AuditInput {
                    job,
                    settings: i.privacy,
                    decl: i.vb.predicate().audit.as_ref(),
                    session: i.session,
                    sandbox: i.sandbox,
                    work_root: i.paths.work_root,
                    rootfs: i.paths.rootfs,
                    released: &result.released,
                    source: &source,
                })
            });
            RunEnd::Ran(Box::new(Ran {
                result,
                opted_out,
                fetch_refusals: source.fetch_refusals(),
                audit,
            }))
        }
        Err(e) => RunEnd::Failed(ReasonCode::EnclaveError, format!("enclave run: {e}")),
    }
}

/// Sleeps until a whole number of `quantum`s has passed since `started` (at least one): the
/// moment a run's end becomes visible then tells no more than its length in quanta.
fn wait_for_quantum(started: std::time::Instant, quantum: Duration) {
    if quantum.is_zero() {
        return;
    }
    let q = quantum.as_millis().max(1);
    let elapsed = started.elapsed().as_millis();
    let quanta = elapsed.div_ceil(q).max(1);
    let target = Duration::from_millis(u64::try_from(quanta * q).unwrap_or(u64::MAX));
    if let Some(rest) = target.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_end_waits_for_the_end_of_the_quantum_it_falls_in() {
        let q = Duration::from_millis(300);
        // Exited 400 ms after the start: waits until 600 ms (the second quantum's end).
        let started = std::time::Instant::now()
            .checked_sub(Duration::from_millis(400))
            .unwrap();
        wait_for_quantum(started, q);
        let e = started.elapsed();
        assert!(
            e >= Duration::from_millis(600) && e < Duration::from_millis(750),
            "{e:?}"
        );
        // Exited at once: still waits for one whole quantum.
        let started = std::time::Instant::now();
        wait_for_quantum(started, q);
        assert!(started.elapsed() >= q);
        // No quantum: no wait.
        let started = std::time::Instant::now();
        wait_for_quantum(started, Duration::ZERO);
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn a_panicking_work_is_caught_and_keeps_its_job() {
        let job = JobId::random();
        let work = Work::new(job, JobState::Running, || {
            panic!("the trainer's work broke")
        });
        let done = work.run();
        assert_eq!((done.job, done.from), (job, JobState::Running));
    }
}
