//! A job received (its bundle staged into the job's working directory), then steps 1–2: verify
//! the bundle against the trust store, then the admission policy.

use rapha_core::release::BoundInput;
use rapha_core::{ReasonCode, ResourceLimits};
use rapha_policy::{Declared, ImageReview, LinkedJob, PastJob, PublisherBits, ResourceReview};

use crate::store::OverCap;

use super::*;

/// What the bundle step records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleFacts {
    pub publisher: String,
    pub keyid: String,
    pub trainer: String,
    pub trainer_version: String,
    pub manifest: Digest,
}

/// What a step does with the job's bundle once it verified (under the node lock).
pub(super) type WithBundle = fn(&mut Node, JobId, &JobRequest, Verified) -> Result<Step>;

/// A job's bundle as verified off the node lock, with what the admission step records of its
/// image for the DPO's review (counted off the lock too: it reads every layer again).
pub(super) struct Verified {
    pub bundle: VerifiedBundle,
    /// [`ImageReview`] bytes; only for the admission step, `None` for the others.
    pub image: Option<Vec<u8>>,
}

impl Node {
    /// Receives a job: links the bundle into the job's working directory (the submitter's
    /// copy may go away) and records the request in `received`. [`Node::stage_bundle`] then
    /// [`Node::submit_staged`] do the same with the linking outside the node lock.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for a job id already known; I/O errors linking the bundle.
    pub fn submit(&mut self, bundle_dir: &Path, request: JobRequest) -> Result<JobId> {
        let staged = Self::stage_bundle(&self.p.work_dir, bundle_dir)?;
        self.submit_staged(staged, request)
    }

    /// Links (hard links; a copy across file systems) the bundle at `bundle_dir` into a fresh
    /// staging directory under the node's working directory `work_dir`. Needs no node lock: the
    /// staging directory is this call's own, and the pipeline verifies the bundle again.
    ///
    /// # Errors
    /// I/O errors.
    pub fn stage_bundle(work_dir: &Path, bundle_dir: &Path) -> Result<StagedBundle> {
        let jobs = work_dir.join("jobs");
        std::fs::create_dir_all(&jobs).map_err(io("cannot create", &jobs))?;
        let dir = jobs.join(format!(".incoming-{}", JobId::random()));
        link_dir(bundle_dir, &dir)?;
        Ok(StagedBundle { dir: Some(dir) })
    }

    /// Receives a job whose bundle [`Node::stage_bundle`] staged: moves it into the job's
    /// working directory and records the request in `received`.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for a job id already known; I/O errors.
    pub fn submit_staged(
        &mut self,
        mut staged: StagedBundle,
        request: JobRequest,
    ) -> Result<JobId> {
        let job = request.job_id;
        if self.p.store.get(job).is_ok() {
            return Err(StoreError::Duplicate(job).into());
        }
        let dir = self.job_dir(job);
        let dest = dir.join("bundle");
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io("cannot clear", &dest))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
        if let Some(from) = staged.dir.take() {
            std::fs::rename(&from, &dest).map_err(io("cannot move the staged bundle", &from))?;
        }
        self.p.store.insert(&request)?;
        tracing::info!(%job, "job received");
        self.committed(job, JobState::Received);
        Ok(job)
    }

    /// The step from `from` that needs the job's bundle: verified without the node lock (a
    /// [`Work`]: hashing up to the upload limit of blobs takes seconds, and the node answers
    /// other jobs and the API meanwhile), once, then handed to `then` under the lock. A bundle
    /// that no longer verifies ends the job `bundle-refused`.
    pub(super) fn with_verified_bundle(
        &mut self,
        job: JobId,
        from: JobState,
        req: &JobRequest,
        then: WithBundle,
    ) -> Next {
        let trust = self.p.trust.clone();
        let dir = self.job_dir(job).join("bundle");
        let req = req.clone();
        self.work(Work::new(job, from, move || {
            let verified = job_bundle(&dir, &trust, &req).map(|bundle| {
                let image = if from == JobState::BundleVerified {
                    image_review(job, &bundle)
                } else {
                    None
                };
                Verified { bundle, image }
            });
            Box::new(move |n: &mut Node| match verified {
                Ok(vb) => then(n, job, &req, vb),
                Err(reason) => n.end(job, from, ReasonCode::BundleRefused, &reason),
            })
        }))
    }

    pub(super) fn step_verify(
        &mut self,
        job: JobId,
        _req: &JobRequest,
        v: Verified,
    ) -> Result<Step> {
        let vb = v.bundle;
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

    /// The resources the trainer runs with: what admission checked and the DPO reviewed,
    /// provided the bundle still requests exactly that. A job admitted before resources were
    /// recorded is checked against the bounds now. `Err` holds why the job must not run.
    pub(super) fn admitted_resources(
        &self,
        job: JobId,
        vb: &VerifiedBundle,
    ) -> Result<std::result::Result<ResourceLimits, String>> {
        let now = vb.resources();
        Ok(
            match self.opt::<ResourceReview>(job, artifact::RESOURCES)? {
                Some(r) if &r.requested == now => Ok(r.requested),
                Some(_) => Err("the bundle's resource requests differ from those admitted".into()),
                None => {
                    let out = self.p.hospital.resources.check(now);
                    if out.is_empty() {
                        Ok(now.clone())
                    } else {
                        let detail: Vec<String> = out.iter().map(ToString::to_string).collect();
                        Err(detail.join("; "))
                    }
                }
            },
        )
    }

    /// This publisher's jobs admitted within the budget window, as the admission gate sees
    /// them.
    fn publisher_history(&self, publisher: &str, now: u64) -> Result<Vec<PastJob>> {
        let window = self.p.hospital.budget.window_hours.saturating_mul(3600);
        let mut out = Vec::new();
        for (row, admitted_at) in self
            .p
            .store
            .admitted_since(publisher, now.saturating_sub(window))?
        {
            // A cohort's size only once its trainer has started (the publisher sees the run's
            // records from then on): the decision digest in this job's receipt commits to this
            // input, and a size the publisher was never shown would be recovered from it by
            // enumeration (docs/receipts.md).
            let started = self
                .p
                .store
                .transitions(row.id)?
                .iter()
                .any(|t| t.to == JobState::Running);
            let patients = if started {
                self.opt::<CohortSummary>(row.id, artifact::COHORT_SUMMARY)?
                    .map(|c| c.patients)
            } else {
                None
            };
            out.push(PastJob {
                admitted_at,
                outcome: row.outcome,
                patients,
                query_digest: row.request.query.digest(),
            });
        }
        Ok(out)
    }

    pub(super) fn step_admit(&mut self, job: JobId, req: &JobRequest, v: Verified) -> Result<Step> {
        let Verified { bundle: vb, image } = v;
        let from = JobState::BundleVerified;
        // Checked again: the publisher may have been suspended while the bundle was verified.
        if let Some(step) = self.suspended(job, from, req)? {
            return Ok(step);
        }
        // The trainer's resource requests first: nothing else of a job runs, not even the
        // policy, on requests outside the node's bounds.
        let requested = vb.resources().clone();
        let bounds = self.p.hospital.resources.clone();
        let out = bounds.check(&requested);
        if !out.is_empty() {
            let detail: Vec<String> = out.iter().map(ToString::to_string).collect();
            return self.end(
                job,
                from,
                ReasonCode::ResourcesOutOfRange,
                &detail.join("; "),
            );
        }
        // Only what the node re-serialises leaves (I4): an output of a kind it does not re-write
        // (pickles, ONNX), or a model that declares no tensors, is refused before anything of
        // the job runs, and so is a declaration over the hospital's cap on released bits.
        if let Some(why) = rapha_core::release::release_refusal(vb.outputs()) {
            return self.end(
                job,
                from,
                ReasonCode::AdmissionRefused,
                &format!("not-releasable: {why}"),
            );
        }
        // The cap applies to what leaves: the bits at the precision and noise the node applies.
        let transform = self.p.hospital.outputs.release_transform();
        if let Some(cap) = self.p.hospital.outputs.max_release_bits {
            let over = match rapha_core::release::effective_release_bits(vb.outputs(), transform) {
                Ok(size) if size.bits <= cap => None,
                Ok(size) if transform.is_identity() => Some(format!(
                    "the outputs declare {} parameters, {} bits; this hospital releases at most \
                     {cap} bits per job ([policy.outputs] max_release_bits)",
                    size.parameters, size.bits
                )),
                Ok(size) => Some(format!(
                    "the outputs declare {} parameters, {} bits once released at precision {} \
                     with noise k = {}; this hospital releases at most {cap} bits per job \
                     ([policy.outputs] max_release_bits)",
                    size.parameters,
                    size.bits,
                    transform.precision.as_str(),
                    transform.noise_k.get()
                )),
                Err(e) => Some(e),
            };
            if let Some(detail) = over {
                return self.end(
                    job,
                    from,
                    ReasonCode::AdmissionRefused,
                    &format!("release-bits-over-cap: {detail}"),
                );
            }
        }
        // The job's leakage bound against what its publisher may still take from this node
        // (issue 19): a publisher cannot add many small jobs up past the cap. Checked here,
        // before the query reaches the PACS, and charged once the policy admits the job.
        let bound = match rapha_core::release::release_bound(&BoundInput {
            outputs: vb.outputs(),
            wall_seconds: requested.wall_seconds,
            run_quantum_secs: self.run_quantum.as_secs(),
            transform,
        }) {
            Ok(b) => b,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::AdmissionRefused,
                    &format!("release-bound: {e}"),
                )
            }
        };
        let cap = self.p.hospital.outputs.publisher_cap();
        let spent = self.p.store.publisher_bits(&req.publisher)?;
        if spent.checked_add(bound.total).is_none_or(|t| t > cap) {
            let detail = over_publisher_cap(&req.publisher, bound.total, OverCap { spent, cap });
            return self.end(job, from, ReasonCode::AdmissionRefused, &detail);
        }
        // The validation split the publisher chose sets the cohort-size threshold
        // (`min_validation_patients * 100 / percent`): only the hospital's range is admitted.
        let split = &self.rules.validation_percent;
        if !split.contains(&req.validation_percent) {
            return self.end(
                job,
                from,
                ReasonCode::ValidationOutOfRange,
                &format!(
                    "validation_percent {} is outside this hospital's range {} to {} \
                     ([policy] min_validation_percent, max_validation_percent)",
                    req.validation_percent,
                    split.start(),
                    split.end()
                ),
            );
        }
        // A job of a linkage group asks the group's query: two jobs whose joined records differ
        // by one accession would attribute that accession's records.
        if self.rules.linkage_same_query {
            if let Some(differs) = linkage_differs(&self.p.store, job, req)? {
                return self.end(job, from, ReasonCode::AdmissionRefused, &differs);
            }
        }
        // The scope guard next: a query it refuses never reaches the PACS.
        if let Err(e) = ScopedQuery::from_cohort_query(&req.query, &self.p.dicom.scope) {
            return self.end(job, from, ReasonCode::QueryRefused, &e.to_string());
        }
        if let Err(e) = req.pseudonym_scope() {
            return self.end(job, from, ReasonCode::AdmissionRefused, &e.to_string());
        }
        let now = now_s();
        let history = self.publisher_history(&req.publisher, now)?;
        let declared = Declared {
            outputs: vb.outputs(),
            resources: &requested,
        };
        let input = match AdmissionInput::new(req, declared, now, history) {
            Ok(i) => i,
            Err(e) => return self.end(job, from, ReasonCode::QueryRefused, &e.to_string()),
        };
        let decision = match self.p.policy.admission(&input, &self.p.hospital) {
            Ok(d) => d,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::PolicyError,
                    &format!("admission policy error: {e}"),
                )
            }
        };
        let b = serde_json::to_vec(&decision).unwrap_or_default();
        if !decision.allow {
            let reason = format!("admission policy: {}", decision.reasons.join("; "));
            self.p.store.put_artifact(job, artifact::ADMISSION, &b)?;
            return self.end(job, from, ReasonCode::AdmissionRefused, &reason);
        }
        let r = serde_json::to_vec(&ResourceReview { requested, bounds }).unwrap_or_default();
        let charge = match self
            .p
            .store
            .charge_release(job, &req.publisher, bound.total, cap)?
        {
            Ok(c) => c,
            Err(over) => {
                self.p.store.put_artifact(job, artifact::ADMISSION, &b)?;
                let detail = over_publisher_cap(&req.publisher, bound.total, over);
                return self.end(job, from, ReasonCode::AdmissionRefused, &detail);
            }
        };
        // Checked when the bundle was verified (every declaration within its output's cap).
        let size = rapha_core::release::declared_bits(vb.outputs()).unwrap_or_default();
        let released = rapha_core::release::effective_release_bits(vb.outputs(), transform)
            .unwrap_or_default();
        let release = serde_json::to_vec(&rapha_policy::ReleaseReview {
            parameters: size.parameters,
            bits: size.bits,
            max_bits: self.p.hospital.outputs.max_release_bits,
            bound: Some(bound),
            publisher: Some(PublisherBits {
                bits: charge.publisher_bits,
                cap: charge.cap,
            }),
            precision: transform.precision,
            noise_k: transform.noise_k,
            released_bits: (!transform.is_identity()).then_some(released.bits),
        })
        .unwrap_or_default();
        let mut stored: Vec<(&str, &[u8])> = vec![
            (artifact::ADMISSION, &b),
            (artifact::RESOURCES, &r),
            (artifact::RELEASE_SIZE, &release),
        ];
        if let Some(i) = &image {
            stored.push((artifact::IMAGE, i));
        }
        self.advance_to(job, from, JobState::Admitted, &stored, None)
    }
}

/// Why a job's bound does not fit its publisher's cap: what is spent, the cap, and how a DPO
/// raises it (the hospital's words; the publisher sees `admission-refused`).
fn over_publisher_cap(publisher: &str, bound: u64, over: OverCap) -> String {
    format!(
        "publisher-bits-over-cap: publisher {publisher:?} has taken {} bits from this node and \
         this job's leakage bound is {bound} bits, past its cap of {} bits. A DPO who approves \
         more raises [policy.outputs] max_publisher_bits in the node's configuration and \
         restarts the node",
        over.spent, over.cap
    )
}

/// What the trainer image's layers hold, counted once for the admission step from the
/// verified bundle (off the node lock) for the DPO's review. `None` (the review shows no image section) if the layers cannot be
/// read, which the unpack step would then refuse anyway.
fn image_review(job: JobId, vb: &VerifiedBundle) -> Option<Vec<u8>> {
    let c = match vb.contents() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%job, error = %e, "the trainer image's contents could not be counted for the DPO's review");
            return None;
        }
    };
    let review = ImageReview {
        layers: u64::try_from(c.layers).unwrap_or(u64::MAX),
        entries: c.entries,
        bytes: c.bytes,
        files: c.files,
        directories: c.directories,
        symlinks: c.symlinks,
        absolute_symlinks: c.absolute_symlinks,
        hard_links: c.hard_links,
        whiteouts: c.whiteouts,
        setuid_setgid_cleared: c.setuid_setgid,
    };
    serde_json::to_vec(&review).ok()
}

/// What the DPO reviews for `job`: its request, its cohort summary, the resources its bundle
/// requests with the bounds they were checked against, and (once reviewed) the job digest
/// version it was reviewed under. `None` before the cohort is built.
///
/// # Errors
/// Store errors, or a stored artifact that does not parse.
pub fn review_request(
    store: &JobStore,
    job: JobId,
    request: JobRequest,
) -> Result<Option<ReviewRequest>> {
    fn parse<T: for<'de> Deserialize<'de>>(job: JobId, kind: &'static str, b: &[u8]) -> Result<T> {
        serde_json::from_slice(b).map_err(|e| PipelineError::Artifact {
            job,
            kind,
            detail: e.to_string(),
        })
    }
    let Some(cohort) = store.artifact(job, artifact::COHORT_SUMMARY)? else {
        return Ok(None);
    };
    let cohort = parse(job, artifact::COHORT_SUMMARY, &cohort)?;
    let resources = store
        .artifact(job, artifact::RESOURCES)?
        .map(|b| parse(job, artifact::RESOURCES, &b))
        .transpose()?;
    let linkage_jobs = linkage_group(store, job, &request)?
        .into_iter()
        .map(|row| LinkedJob {
            job_id: row.id,
            state: row.state.as_str().to_owned(),
            query_digest: row.request.query.digest(),
            same_query: row.request.query.digest() == request.query.digest(),
        })
        .collect();
    let image = store
        .artifact(job, artifact::IMAGE)?
        .map(|b| parse(job, artifact::IMAGE, &b))
        .transpose()?;
    let release = store
        .artifact(job, artifact::RELEASE_SIZE)?
        .map(|b| parse(job, artifact::RELEASE_SIZE, &b))
        .transpose()?;
    let mut review = ReviewRequest::new(request, cohort);
    review.resources = resources;
    review.release = release;
    review.image = image;
    review.linkage_jobs = linkage_jobs;
    // The version the job was reviewed under (v1 for a job in flight across the upgrade).
    if let Some(r) = store.artifact(job, artifact::REVIEW)? {
        let r: rapha_policy::JobDigestRef = parse(job, artifact::REVIEW, &r)?;
        review.digest_version = r.digest_version;
    }
    Ok(Some(review))
}

/// The other admitted jobs of `request`'s publisher in its linkage group, oldest first (none
/// for a job of its own).
fn linkage_group(
    store: &JobStore,
    job: JobId,
    request: &JobRequest,
) -> Result<Vec<crate::store::JobRow>> {
    let Some(group) = &request.linkage else {
        return Ok(Vec::new());
    };
    Ok(store
        .admitted_since(&request.publisher, 0)?
        .into_iter()
        .map(|(row, _)| row)
        .filter(|row| row.id != job && row.request.linkage.as_ref() == Some(group))
        .collect())
}

/// Why a job of a linkage group is refused: the group's earlier jobs asked another query.
fn linkage_differs(store: &JobStore, job: JobId, request: &JobRequest) -> Result<Option<String>> {
    let digest = request.query.digest();
    let differ: Vec<String> = linkage_group(store, job, request)?
        .iter()
        .filter(|row| row.request.query.digest() != digest)
        .map(|row| row.id.to_string())
        .collect();
    Ok((!differ.is_empty()).then(|| {
        format!(
            "the job's query differs from that of the earlier job(s) {} of linkage group '{}': \
             the jobs of one group ask one query ([policy] linkage_same_query)",
            differ.join(", "),
            request.linkage.as_ref().map_or("", |g| g.as_str()),
        )
    }))
}

/// Verifies the job's bundle at `dir` against the trust store in `trust`'s directory as it is
/// now (signature, trust decision, every blob hashed) and checks it is the one the request names, signed as its publisher and trainer.
pub(super) fn job_bundle(
    dir: &Path,
    trust: &TrustStore,
    req: &JobRequest,
) -> std::result::Result<VerifiedBundle, String> {
    // The trust store as it is now, not as the node loaded it: a publisher the hospital
    // revoked (or whose key expired) since the node started must not run (`rapha-node trust
    // remove --revoke` works on a running node).
    let current = TrustStore::open(trust.dir()).map_err(|e| {
        format!(
            "bundle refused: the trust store {} could not be read: {e}",
            trust.dir().display()
        )
    })?;
    let vb = verify_bundle(dir, &current).map_err(|e| format!("bundle refused: {e}"))?;
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
}

/// A bundle linked into the node's working directory by [`Node::stage_bundle`], not yet
/// taken by a job: removed if it is dropped untaken.
#[derive(Debug)]
pub struct StagedBundle {
    dir: Option<PathBuf>,
}

impl Drop for StagedBundle {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(path = %d.display(), error = %e, "cannot remove a staged bundle");
            }
        }
    }
}

/// Mirrors the directory tree `from` at `to` with hard links to its files (no bytes copied;
/// a copy where `to` is on another file system). Links share the stored files, which are
/// never written in place (the bundle store replaces a bundle by renaming directories).
fn link_dir(from: &Path, to: &Path) -> Result<()> {
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
            link_dir(&e.path(), &dest)?;
        } else if ty.is_file() && std::fs::hard_link(e.path(), &dest).is_err() {
            std::fs::copy(e.path(), &dest).map_err(io("cannot copy", &e.path()))?;
        }
    }
    Ok(())
}
