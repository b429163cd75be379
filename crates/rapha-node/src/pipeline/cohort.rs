//! Step 3: the cohort, from scoped QIDO-RS metadata only (pseudonymized, exclusions applied),
//! and its commitment. The entries are written to the job's cohort file as they are kept
//! (`cohorts/JOB.jsonl` under the node's working directory, atomically); the `cohort`
//! artifact commits the file's digest with the exclusion counts, and the run reads the file
//! an entry at a time after checking it against that digest.

use super::ports::connect_pacs;
use super::*;
use rapha_core::HashedId;
use rapha_dicom::cohort::{FileCohort, Patients};
use rapha_dicom::cohort_file::{CohortFile, CohortFileRef, Entries};

/// The stored cohort: the exclusion counts and the cohort file's commitment (entries and
/// SHA-256; the file, one JSON line per entry with the raw identifiers the guard needs, is
/// under the node's `cohorts/` directory and never leaves the node). A cohort stored before
/// cohort files existed holds its entries here instead.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredCohort {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) entries: Vec<CohortEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<CohortFileRef>,
    pub(super) exclusions: rapha_core::ExclusionCounts,
}

/// Most bytes of a stored cohort (its file): a cohort within
/// [`JobRules::max_cohort_instances`] always fits, and a larger one is refused.
pub const MAX_COHORT_ARTIFACT_BYTES: usize = 512 << 20;

/// Where the node keeps `job`'s cohort file: beside the job store, not in the job's working
/// directory (which holds the trainer's rootfs and is removed when the job finishes), and kept
/// as long as the job's artifacts.
pub(super) fn cohort_path(state_dir: &Path, job: JobId) -> PathBuf {
    state_dir.join("cohorts").join(format!("{job}.jsonl"))
}

/// A built cohort as the commit stores it: its file written and summarised (and its size
/// checked) in the step's work, without the node lock.
pub(super) struct Built {
    /// The `cohort` artifact's bytes.
    cohort: Vec<u8>,
    summary: CohortSummary,
    /// Instances excluded, all reasons together (for the audit trail).
    excluded: u64,
}

impl Built {
    /// `Err` holds why the cohort cannot be kept (for the hospital's record).
    fn of(
        cohort: FileCohort,
        path: &Path,
        validation_percent: u8,
    ) -> std::result::Result<Self, String> {
        let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if size > MAX_COHORT_ARTIFACT_BYTES as u64 {
            return Err(format!(
                "the cohort of {} instances takes {size} bytes stored, more than the {} bytes \
                 the node stores for one cohort; lower [cohort] max_instances",
                cohort.file.entries, MAX_COHORT_ARTIFACT_BYTES
            ));
        }
        let file = CohortFile::open(path, &cohort.file).map_err(|e| e.to_string())?;
        let exclusions = cohort.exclusions.counts().clone();
        let mut tally = Tally::default();
        file.try_for_each(|_, e| {
            tally.add(&e);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        let summary = tally.summary(&exclusions, validation_percent);
        let stored = StoredCohort {
            entries: Vec::new(),
            file: Some(cohort.file),
            exclusions,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        Ok(Self {
            cohort: bytes,
            excluded: stored.exclusions.values().sum(),
            summary,
        })
    }
}

/// Sleeps until a whole number (at least one) of `quantum`s has passed since `from_ms` (Unix
/// milliseconds); no wait for a zero quantum.
fn wait_for_grid(from_ms: u64, quantum: std::time::Duration) {
    let q = u64::try_from(quantum.as_millis()).unwrap_or(u64::MAX);
    if q == 0 {
        return;
    }
    let elapsed = now_ms().saturating_sub(from_ms);
    let quanta = elapsed.div_ceil(q).max(1);
    let target = from_ms.saturating_add(quanta.saturating_mul(q));
    let wait = target.saturating_sub(now_ms());
    std::thread::sleep(std::time::Duration::from_millis(wait));
}

/// Cohort commitment: the Merkle root of the sorted, distinct hashed instance ids (the same
/// value the enclave runtime signs as `cohort_root`).
pub fn cohort_commitment(entries: &[CohortEntry]) -> Digest {
    let mut t = Tally::default();
    for e in entries {
        t.add(e);
    }
    t.commitment()
}

/// What a cohort's summary counts, gathered an entry at a time (32 bytes per distinct
/// instance, study and patient, and a patient's sex and age decade; never the entries
/// themselves).
#[derive(Default)]
pub(super) struct Tally {
    instances: BTreeSet<[u8; 32]>,
    patients: Patients,
    studies: BTreeSet<HashedId>,
    modalities: BTreeMap<String, u64>,
    entries: u64,
}

impl Tally {
    pub(super) fn add(&mut self, e: &CohortEntry) {
        self.instances.insert(*e.record.instance.as_bytes());
        self.patients.add(e);
        self.studies.insert(e.record.study);
        match self.modalities.get_mut(&e.record.modality) {
            Some(n) => *n += 1,
            None => {
                self.modalities.insert(e.record.modality.clone(), 1);
            }
        }
        self.entries += 1;
    }

    fn commitment(&self) -> Digest {
        let v: Vec<[u8; 32]> = self.instances.iter().copied().collect();
        merkle::root(&v)
    }

    pub(super) fn summary(
        &self,
        exclusions: &rapha_core::ExclusionCounts,
        validation_percent: u8,
    ) -> CohortSummary {
        let n = self.patients.len();
        // Admission bounds the percent; a job admitted before it did may still hold any u8,
        // and no split takes more patients than the cohort has.
        let validation = n
            .checked_mul(u64::from(validation_percent))
            .map_or(n, |v| v / 100)
            .min(n);
        CohortSummary {
            commitment: self.commitment(),
            patients: n,
            train_patients: n.saturating_sub(validation),
            validation_patients: validation,
            studies: self.studies.len() as u64,
            instances: self.entries,
            modalities: self.modalities.clone(),
            exclusions: exclusions.clone(),
            demographics: Some(self.patients.demographics()),
        }
    }
}

impl Node {
    /// Under the node lock: the scope check. The QIDO-RS queries run without it ([`Work`]).
    pub(super) fn step_cohort(&mut self, job: JobId, req: &JobRequest) -> Result<Next> {
        let from = JobState::Admitted;
        let scoped = match ScopedQuery::from_cohort_query(&req.query, &self.p.dicom.scope) {
            Ok(q) => q,
            Err(e) => {
                return self
                    .end(
                        job,
                        from,
                        ReasonCode::QueryRefused,
                        &format!("query refused: {e}"),
                    )
                    .map(Next::Step)
            }
        };
        // This job's own pseudonyms (or its approved linkage group's): no other job's records
        // join these, so repeated jobs over one list of accessions cannot link pseudonyms to it.
        let pseudonymizer = match req.pseudonym_scope() {
            Ok(scope) => self.p.pseudonymizer.scoped(scope),
            Err(e) => {
                return self
                    .end(job, from, ReasonCode::AdmissionRefused, &e.to_string())
                    .map(Next::Step)
            }
        };
        let dicom = Arc::clone(&self.p.dicom);
        let optouts = Arc::clone(&self.p.optouts);
        let labels = self.p.labels.clone();
        let pacs = Arc::clone(&self.p.pacs);
        let max_instances = self.rules.max_cohort_instances;
        let quantum = self.rules.cohort_quantum;
        // The grid the result is committed on starts at the job's admission (its transition's
        // time: a restarted build keeps the grid).
        let admitted_ms = self
            .p
            .store
            .transitions(job)?
            .iter()
            .rev()
            .find(|t| t.to == JobState::Admitted)
            .map_or_else(now_ms, |t| t.at.saturating_mul(1000));
        let req = req.clone();
        let path = cohort_path(&self.state_dir(), job);
        Ok(self.work(Work::new(job, from, move || {
            let built = path
                .parent()
                .map_or(Ok(()), |d| {
                    std::fs::create_dir_all(d)
                        .map_err(|e| format!("cannot create {}: {e}", d.display()))
                })
                .and_then(|()| {
                    connect_pacs(&pacs)
                        .and_then(|client| {
                            let mut b = CohortBuilder::new(&pseudonymizer, &dicom, &optouts)
                                .with_max_instances(max_instances);
                            if let Some(l) = &labels {
                                b = b.with_labels(l);
                            }
                            // Written to the cohort file as kept: the build holds no entry.
                            b.from_dicomweb_to_file(&client, &scoped, &path)
                        })
                        .map_err(|e| format!("cohort query failed: {e}"))
                })
                .and_then(|c| Built::of(c, &path, req.validation_percent));
            // Whatever the PACS answered and however long it took, the result is committed on
            // the quantum grid: the state change, the refusal's receipt and the log head that
            // follow it carry no timing of the build.
            wait_for_grid(admitted_ms, quantum);
            Box::new(move |n: &mut Node| n.commit_cohort(job, &req, built))
        })))
    }

    fn commit_cohort(
        &mut self,
        job: JobId,
        req: &JobRequest,
        built: std::result::Result<Built, String>,
    ) -> Result<Step> {
        let from = JobState::Admitted;
        let query_obj = ParticipantObject {
            id_type_code: "query-digest".into(),
            id: req.query.digest().to_hex(),
            detail: None,
        };
        let Built {
            cohort: c,
            summary,
            excluded,
        } = match built {
            Ok(b) => b,
            Err(detail) => {
                self.remove_cohort_file(job);
                self.p.audit.record(AuditEvent::new(
                    AuditKind::PacsQuery,
                    AuditOutcome::SeriousFailure,
                    format!("scoped QIDO-RS: no cohort kept: {detail}"),
                    ACTOR,
                    vec![job_object(job, None), query_obj],
                ))?;
                // One code for every cohort not kept: a PACS budget, a malformed answer, a
                // cohort too large and an empty one look alike to the publisher, whose query
                // (it may list accessions) would otherwise learn what exists. The hospital's
                // record and the audit trail say which.
                return self.end(job, from, ReasonCode::CohortEmpty, &detail);
            }
        };
        self.p.audit.record(AuditEvent::new(
            AuditKind::PacsQuery,
            AuditOutcome::Success,
            format!(
                "scoped QIDO-RS (metadata only): {} instances kept, {excluded} excluded",
                summary.instances,
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
        // Empty and too small end alike, with one code and no figure: the publisher chose the
        // query (it may list accessions), so why a cohort is small (an accession that does not
        // exist, a patient who opted out, an excluded instance) must not reach it. The
        // figures stay in the audit event above, for the hospital.
        if summary.instances == 0
            || summary.patients < self.p.hospital.min_patients
            || summary.validation_patients < self.p.hospital.min_validation_patients
        {
            self.remove_cohort_file(job);
            return self.end(
                job,
                from,
                ReasonCode::CohortEmpty,
                "the cohort is empty or below this hospital's minimum size",
            );
        }
        let s = serde_json::to_vec(&summary).unwrap_or_default();
        self.advance_to(
            job,
            from,
            JobState::CohortBuilt,
            &[(artifact::COHORT, &c), (artifact::COHORT_SUMMARY, &s)],
            None,
        )
    }
}

impl Node {
    /// The directory of the job store (the node's state directory), where cohort files are
    /// kept; the working directory for a store without a file.
    fn state_dir(&self) -> PathBuf {
        self.p
            .store
            .dir()
            .unwrap_or_else(|| self.p.work_dir.clone())
    }

    /// Where `job`'s cohort file is (whether or not it exists).
    pub fn cohort_file(&self, job: JobId) -> PathBuf {
        cohort_path(&self.state_dir(), job)
    }

    /// Removes `job`'s cohort file when no cohort is kept for it (a refused build's file, if
    /// it was written).
    fn remove_cohort_file(&self, job: JobId) {
        let path = cohort_path(&self.state_dir(), job);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%job, error = %e, "cannot remove a refused cohort's file");
            }
        }
    }

    /// `job`'s stored cohort entries: from its cohort file (checked against the committed
    /// digest) or, for a cohort stored before cohort files existed, from the artifact itself.
    pub(super) fn cohort_of(&self, job: JobId, stored: StoredCohort) -> Result<Entries> {
        match stored.file {
            None => Ok(Entries::Held(stored.entries)),
            Some(r) => {
                let path = cohort_path(&self.state_dir(), job);
                CohortFile::open(&path, &r).map(Entries::File).map_err(|e| {
                    PipelineError::Artifact {
                        job,
                        kind: artifact::COHORT,
                        detail: e.to_string(),
                    }
                })
            }
        }
    }

    /// The entries of `job`'s built cohort (`None` before it is built, or when none was kept),
    /// as the run reads them: the hospital's tools and tests look at what was approved.
    ///
    /// # Errors
    /// Store errors; a cohort file that is missing or not the committed one.
    pub fn cohort_entries(&self, job: JobId) -> Result<Option<Vec<CohortEntry>>> {
        if self.p.store.artifact(job, artifact::COHORT)?.is_none() {
            return Ok(None);
        }
        let stored: StoredCohort = self.need(job, artifact::COHORT)?;
        let entries = self.cohort_of(job, stored)?;
        let mut out = Vec::with_capacity(entries.len());
        for i in 0..entries.len() {
            let e = entries.get(i).map_err(|e| PipelineError::Artifact {
                job,
                kind: artifact::COHORT,
                detail: e.to_string(),
            })?;
            out.extend(e.map(std::borrow::Cow::into_owned));
        }
        Ok(Some(out))
    }
}
