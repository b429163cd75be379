//! Step 4: the DPO reviews the job and its cohort summary, then approves (or rejects) it.

use super::*;

impl Node {
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
        review_request(&self.p.store, job, self.p.store.get(job)?.request)
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
            ReasonCode::DpoRejected,
            &format!("rejected by the DPO: {reason}"),
        )?;
        Ok(true)
    }

    pub(super) fn step_review(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let Some(review) = review_request(&self.p.store, job, req.clone())? else {
            return Err(PipelineError::Artifact {
                job,
                kind: artifact::COHORT_SUMMARY,
                detail: "not stored".into(),
            });
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
        // The version is recorded with the digest: the job keeps it until it ends.
        let d = serde_json::to_vec(&rapha_policy::JobDigestRef {
            job_digest: digest,
            digest_version: review.digest_version,
        })
        .unwrap_or_default();
        self.advance_to(
            job,
            JobState::CohortBuilt,
            JobState::AwaitingApproval,
            &[(artifact::REVIEW, &d)],
            None,
        )
    }

    pub(super) fn approval_facts(
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

    pub(super) fn step_approval(&mut self, job: JobId) -> Result<Step> {
        let digest = self
            .need::<rapha_policy::JobDigestRef>(job, artifact::REVIEW)?
            .job_digest;
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
}
