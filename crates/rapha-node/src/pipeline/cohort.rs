//! Step 3: the cohort, from scoped QIDO-RS metadata only (pseudonymized, exclusions applied),
//! and its commitment.

use super::ports::connect_pacs;
use super::*;

/// The stored cohort: entries (with the raw identifiers the guard needs: this artifact never
/// leaves the node) and exclusion counts.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredCohort {
    pub(super) entries: Vec<CohortEntry>,
    pub(super) exclusions: rapha_core::ExclusionCounts,
}

/// Most bytes of a stored cohort artifact: far below the 1,000,000,000 bytes SQLite stores in
/// one value, so a cohort within [`JobRules::max_cohort_instances`] always fits, and a larger
/// one is refused instead of failing its commit for ever.
pub const MAX_COHORT_ARTIFACT_BYTES: usize = 512 << 20;

/// A built cohort as the commit stores it: serialised (and its size checked) in the step's
/// work, without the node lock.
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
        cohort: rapha_dicom::cohort::Cohort,
        validation_percent: u8,
    ) -> std::result::Result<Self, String> {
        let stored = StoredCohort {
            exclusions: cohort.exclusions.counts().clone(),
            entries: cohort.entries,
        };
        let summary = summary_of(&stored.entries, &stored.exclusions, validation_percent);
        let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        if bytes.len() > MAX_COHORT_ARTIFACT_BYTES {
            return Err(format!(
                "the cohort of {} instances takes {} bytes stored, more than the {} bytes the \
                 node stores for one cohort; lower [cohort] max_instances",
                summary.instances,
                bytes.len(),
                MAX_COHORT_ARTIFACT_BYTES
            ));
        }
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
    let ids: BTreeSet<[u8; 32]> = entries
        .iter()
        .map(|e| *e.record.instance.as_bytes())
        .collect();
    let v: Vec<[u8; 32]> = ids.into_iter().collect();
    merkle::root(&v)
}

pub(super) fn summary_of(
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
    // Admission bounds the percent; a job admitted before it did may still hold any u8, and
    // no split takes more patients than the cohort has.
    let validation = n
        .checked_mul(u64::from(validation_percent))
        .map_or(n, |v| v / 100)
        .min(n);
    CohortSummary {
        commitment: cohort_commitment(entries),
        patients: n,
        train_patients: n.saturating_sub(validation),
        validation_patients: validation,
        studies: studies.len() as u64,
        instances: entries.len() as u64,
        modalities,
        exclusions: exclusions.clone(),
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
        Ok(self.work(Work::new(job, from, move || {
            let built = connect_pacs(&pacs)
                .and_then(|client| {
                    let mut b = CohortBuilder::new(&pseudonymizer, &dicom, &optouts)
                        .with_max_instances(max_instances);
                    if let Some(l) = &labels {
                        b = b.with_labels(l);
                    }
                    b.from_dicomweb(&client, &scoped)
                })
                .map_err(|e| format!("cohort query failed: {e}"))
                .and_then(|c| Built::of(c, req.validation_percent));
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
