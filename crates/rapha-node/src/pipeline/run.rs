//! Steps 8–9: the trainer runs in the enclave runtime on the approved cohort; the output
//! guard checks everything it wrote.

use super::*;

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
    /// Records refused at fetch time by reason (the PACS served another object than the
    /// approved one, or one its own header excludes).
    #[serde(default)]
    pub fetch_refusals: rapha_core::ExclusionCounts,
}

impl Node {
    pub(super) fn step_run(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
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
        let mut cohort: StoredCohort = self.need(job, artifact::COHORT)?;
        // Patients who opted out since the DPO approved the cohort are dropped before any
        // record is listed or fed (item 11); an unreadable list stops the run.
        let opted_out =
            match rapha_dicom::cohort::drop_opted_out_now(&mut cohort.entries, &self.p.optouts) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(%job, error = %e, "cannot re-read the opt-out list");
                    let why = "the opt-out list could not be re-read when the run started";
                    return self.end(job, from, Outcome::Failed, why);
                }
            };
        let client = match (self.p.pacs)() {
            Ok(c) => c,
            Err(e) => return self.end(job, from, Outcome::Failed, &format!("PACS: {e}")),
        };
        let (source, ids) = DicomSource::new(&cohort.entries, Some(client));
        let source = source.with_exclusions(self.p.dicom.exclusions.clone());
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
                "WADO-RS pixels fed to the trainer: {} records, {} bytes; {} cohort entries \
                 dropped (opted out since approval), records refused at fetch time: {:?}",
                m.records_fed,
                result.stats.bytes_fed,
                opted_out,
                source.fetch_refusals()
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
            opted_out_since_approval: opted_out,
            fetch_refusals: source.fetch_refusals(),
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
}
