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

    /// The job's approval and what the gates know of it: the DPO's key-file approval of its
    /// digest (unless `[approval] require_passkey`), else a passkey approval recorded for it.
    pub(super) fn approval_facts(&self, job: JobId) -> Result<Option<(ApprovalFacts, Approver)>> {
        let Some(digest) = self.review_digest(job)? else {
            return Ok(None);
        };
        if !self.passkey_required {
            if let Some(rec) = self.p.approvals.get(&digest)? {
                return Ok(Some((
                    ApprovalFacts::of(&rec, &self.p.dpo_keys),
                    Approver::Key(rec),
                )));
            }
        }
        let Some(passkeys) = &self.passkeys else {
            return Ok(None);
        };
        let recorded: Option<rapha_receipt::body::PasskeyApproval> =
            self.opt(job, artifact::PASSKEY_APPROVAL)?;
        Ok(recorded.map(|p| {
            let valid = passkeys.still_valid(&p);
            let facts = ApprovalFacts {
                job_digest: p.job_digest,
                signature_valid: valid,
                signer_trusted: passkeys
                    .credentials()
                    .get(&p.assertion.credential_id)
                    .is_some(),
                expires_at: p
                    .assertion
                    .issued_at
                    .saturating_add(PASSKEY_APPROVAL_VALIDITY),
                revoked: false,
            };
            (facts, Approver::Passkey(p))
        }))
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
        let actor = match &rec {
            Approver::Key(r) => format!("dpo:{}", r.approval.dpo_key.to_hex()),
            Approver::Passkey(p) => format!("dpo-passkey:{}", p.assertion.credential_id),
        };
        self.p.audit.record(AuditEvent::new(
            AuditKind::DpoAction,
            AuditOutcome::Success,
            "DPO approval accepted",
            (&actor, "dpo"),
            vec![job_object(job, None)],
        ))?;
        // The approval used is copied to the job's approval artifact (the receipt reads it).
        let (kind, a) = match &rec {
            Approver::Key(r) => (
                artifact::APPROVAL,
                serde_json::to_vec(r).unwrap_or_default(),
            ),
            Approver::Passkey(p) => (
                artifact::APPROVAL_PASSKEY,
                serde_json::to_vec(p).unwrap_or_default(),
            ),
        };
        self.advance_to(
            job,
            JobState::AwaitingApproval,
            JobState::Approved,
            &[(kind, &a)],
            None,
        )
    }
}

/// How long a passkey approval may wait for its job to start (as the key-file approval's
/// default `--expires 7d`).
pub const PASSKEY_APPROVAL_VALIDITY: u64 = 7 * 86_400;

/// Who approved a job.
#[derive(Clone, Debug)]
pub(super) enum Approver {
    /// The DPO's Ed25519 key file.
    Key(rapha_policy::ApprovalRecord),
    /// A DPO passkey.
    Passkey(rapha_receipt::body::PasskeyApproval),
}
