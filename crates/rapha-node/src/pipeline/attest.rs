//! Steps 6–7: attestation bound to the job, then the final policy gate.

use super::admission::Verified;
use super::*;

/// What the attestation step records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationRecord {
    pub level: String,
    pub binding: Digest,
    pub evidence: Digest,
    pub tpm_quote: Option<Digest>,
    pub tpm_verified: bool,
    pub runtime_public_key: String,
}

impl Node {
    pub(super) fn job_spec(
        &self,
        req: &JobRequest,
        vb: &VerifiedBundle,
        limits: rapha_core::ResourceLimits,
        release: rapha_core::release::ReleaseTransform,
    ) -> JobSpec {
        let outputs = vb.outputs().to_vec();
        let total_output_cap = outputs.iter().map(|o| o.max_bytes).sum();
        // The audit split, from the committed cohort's patients: none unless the node has a
        // runner and the bundle pins a graph (issue 19).
        let patients = self
            .opt::<CohortSummary>(req.job_id, artifact::COHORT_SUMMARY)
            .ok()
            .flatten()
            .map_or(0, |s| s.patients);
        let audit_patients = self
            .privacy
            .audit_patients(vb.predicate().audit.is_some(), patients);
        JobSpec {
            job_id: req.job_id,
            validation_percent: req.validation_percent,
            min_validation_patients: self.p.min_validation_patients,
            audit_patients,
            outputs,
            total_output_cap,
            limits,
            wall_override: None,
            release,
        }
    }

    pub(super) fn step_attest(
        &mut self,
        job: JobId,
        req: &JobRequest,
        v: Verified,
    ) -> Result<Step> {
        let vb = v.bundle;
        let from = JobState::DepositConfirmed;
        let limits = match self.admitted_resources(job, &vb)? {
            Ok(l) => l,
            Err(detail) => return self.end(job, from, ReasonCode::ResourcesOutOfRange, &detail),
        };
        // The precision and noise the DPO reviewed at admission; the hospital's current
        // setting only for a job with no recorded review of its release.
        let release = self
            .opt::<rapha_policy::ReleaseReview>(job, artifact::RELEASE_SIZE)?
            .map_or_else(
                || self.p.hospital.outputs.release_transform(),
                |r| r.transform(),
            );
        let session = match EnclaveSession::new(self.job_spec(req, &vb, limits, release)) {
            Ok(s) => s,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::EnclaveError,
                    &format!("enclave runtime: {e}"),
                )
            }
        };
        let summary: CohortSummary = self.need(job, artifact::COHORT_SUMMARY)?;
        let pk = session.public_key();
        let binding = rapha_attest::binding(&job, &req.bundle_manifest, &summary.commitment, &pk);
        let ev = match self.p.evidence.evidence(&binding) {
            Ok(ev) => ev,
            Err(reason) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::AttestationError,
                    &format!("attestation: {reason}"),
                )
            }
        };
        let verified = match self.p.verifier.verify_bound(&ev, &binding) {
            Ok(v) => v,
            Err(e) => {
                return self.end(
                    job,
                    from,
                    ReasonCode::AttestationRefused,
                    &format!("attestation refused: {e}"),
                )
            }
        };
        let mut tpm_verified = verified.tpm.is_some();
        if let (Some(tpm), Some(v)) = (&ev.tpm, &self.p.tpm_verifier) {
            if let Err(e) = v.verify(tpm, &binding) {
                return self.end(
                    job,
                    from,
                    ReasonCode::AttestationRefused,
                    &format!("TPM evidence refused: {e}"),
                );
            }
            tpm_verified = true;
        }
        let level = if tpm_verified && verified.level != AttestationLevel::Hardware {
            "tpm-verified".to_owned()
        } else {
            verified.level.as_str().to_owned()
        };
        let rec = AttestationRecord {
            level,
            binding,
            evidence: verified.digests.evidence,
            tpm_quote: verified.digests.tpm_quote,
            tpm_verified,
            runtime_public_key: hex::encode(pk),
        };
        let r = serde_json::to_vec(&rec).unwrap_or_default();
        let e = ev.to_json();
        self.sessions.insert(job, session);
        self.advance_to(
            job,
            from,
            JobState::Attested,
            &[(artifact::EVIDENCE, &e), (artifact::ATTESTATION, &r)],
            None,
        )
    }

    pub(super) fn step_final(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::Attested;
        let summary: CohortSummary = self.need(job, artifact::COHORT_SUMMARY)?;
        let approval = self.approval_facts(job)?.map(|(f, _)| f);
        let att: Option<AttestationRecord> = self.opt(job, artifact::ATTESTATION)?;
        // The digest in the version the job was reviewed under (v1 for a job in flight across
        // the upgrade that introduced v2).
        let version = self
            .review_ref(job)?
            .map_or(rapha_policy::JobDigestVersion::CURRENT, |r| {
                r.digest_version
            });
        let job_digest = match version.digest(req, &summary.commitment) {
            Ok(d) => d,
            Err(e) => {
                self.sessions.remove(&job);
                return self.end(
                    job,
                    from,
                    ReasonCode::FinalGateRefused,
                    &format!("final gate: {e}"),
                );
            }
        };
        let input = FinalInput {
            job_digest,
            now: now_s(),
            approval,
            attestation: AttestationFacts {
                present: att.is_some(),
                verified: att
                    .as_ref()
                    .is_some_and(|a| a.level == "hardware" || a.tpm_verified),
            },
            cohort: CohortFacts {
                patients: summary.patients,
                validation_patients: summary.validation_patients,
            },
        };
        let decision = match self.p.policy.final_gate(&input, &self.p.hospital) {
            Ok(d) => d,
            Err(e) => {
                self.sessions.remove(&job);
                return self.end(
                    job,
                    from,
                    ReasonCode::PolicyError,
                    &format!("final gate error: {e}"),
                );
            }
        };
        let b = serde_json::to_vec(&decision).unwrap_or_default();
        if !decision.allow {
            self.sessions.remove(&job);
            self.p.store.put_artifact(job, artifact::FINAL, &b)?;
            let reason = format!("final gate: {}", decision.reasons.join("; "));
            return self.end(job, from, ReasonCode::FinalGateRefused, &reason);
        }
        self.advance_to(
            job,
            from,
            JobState::FinalGatePassed,
            &[(artifact::FINAL, &b)],
            None,
        )
    }
}
