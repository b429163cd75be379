//! Steps 1–2: verify the bundle against the trust store, then the admission policy.

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

impl Node {
    pub(super) fn bundle(
        &self,
        job: JobId,
        req: &JobRequest,
    ) -> std::result::Result<VerifiedBundle, String> {
        job_bundle(&self.job_dir(job).join("bundle"), &self.p.trust, req)
    }

    pub(super) fn step_verify(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        match self.bundle(job, req) {
            Err(reason) => self.end(job, JobState::Received, ReasonCode::BundleRefused, &reason),
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

    pub(super) fn step_admit(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::BundleVerified;
        let vb = match self.bundle(job, req) {
            Ok(vb) => vb,
            Err(reason) => return self.end(job, from, ReasonCode::BundleRefused, &reason),
        };
        // The scope guard first: a query it refuses never reaches the PACS.
        if let Err(e) = ScopedQuery::from_cohort_query(&req.query, &self.p.dicom.scope) {
            return self.end(
                job,
                from,
                ReasonCode::QueryRefused,
                &format!("query refused: {e}"),
            );
        }
        let input = match AdmissionInput::new(req, vb.outputs(), now_s(), Vec::new()) {
            Ok(i) => i,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::QueryRefused,
                    &format!("query refused: {e}"),
                )
            }
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
        self.advance_to(
            job,
            from,
            JobState::Admitted,
            &[(artifact::ADMISSION, &b)],
            None,
        )
    }
}
