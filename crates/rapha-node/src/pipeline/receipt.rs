//! Step 10: the receipt, signed and appended to the transparency log.

use super::*;
use rapha_core::ReasonCode;
use rapha_receipt::body::Leakage;

/// The v2 receipt's reason code for an ending: the code itself when the job store holds one,
/// else the code of the words the node recorded before codes existed (a job in flight across
/// the upgrade), else the outcome's most general code. Only codes of `outcome` are chosen: the
/// verifier refuses any other.
fn reason_code(outcome: Outcome, recorded: Option<&str>) -> ReasonCode {
    use ReasonCode as C;
    let text = recorded.unwrap_or_default();
    if let Some(c) = ReasonCode::parse(text).filter(|c| c.outcome() == outcome) {
        return c;
    }
    const BY_WORDS: &[(&str, ReasonCode)] = &[
        ("bundle refused", C::BundleRefused),
        ("the request names", C::BundleRefused),
        ("query refused", C::QueryRefused),
        ("admission policy error", C::PolicyError),
        ("admission policy", C::AdmissionRefused),
        ("the query matched no usable instance", C::CohortEmpty),
        ("rejected by the DPO", C::DpoRejected),
        ("deposit refused", C::DepositRefused),
        ("attestation refused", C::AttestationRefused),
        ("TPM evidence refused", C::AttestationRefused),
        ("final gate error", C::PolicyError),
        ("final gate", C::FinalGateRefused),
        ("the node stopped while", C::NodeRestarted),
        ("cohort query failed", C::PacsUnavailable),
        ("PACS", C::PacsUnavailable),
        ("attestation", C::AttestationError),
        ("cannot unpack", C::UnpackFailed),
        ("enclave", C::EnclaveError),
        ("output guard refused", C::OutputGuard),
        ("trainer failed", C::TrainerFailed),
    ];
    if let Some((_, c)) = BY_WORDS
        .iter()
        .find(|(w, c)| text.starts_with(w) && c.outcome() == outcome)
    {
        return *c;
    }
    match outcome {
        Outcome::Completed => C::Completed,
        Outcome::Refused => C::AdmissionRefused,
        Outcome::Violated => C::OutputGuard,
        Outcome::TrainerFailed => C::TrainerFailed,
        _ => C::EnclaveError,
    }
}

impl Node {
    /// The job's receipt, once issued.
    ///
    /// # Errors
    /// Store errors or an unreadable stored receipt.
    pub fn receipt(&self, job: JobId) -> Result<Option<ReceiptFile>> {
        self.p
            .store
            .artifact(job, artifact::RECEIPT)?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| PipelineError::Artifact {
                    job,
                    kind: artifact::RECEIPT,
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    pub(super) fn receipt_body(&self, job: JobId, req: &JobRequest) -> Result<ReceiptBody> {
        let row = self.p.store.get(job)?;
        let outcome = row.outcome.unwrap_or(Outcome::Failed);
        let admission: Option<Decision> = self.opt(job, artifact::ADMISSION)?;
        let final_gate: Option<Decision> = self.opt(job, artifact::FINAL)?;
        let conv = |d: Decision| PolicyDecision {
            allow: d.allow,
            reasons: d.reasons,
            digest: d.digest,
        };
        let admission = admission.map(conv).unwrap_or_else(|| PolicyDecision {
            allow: false,
            reasons: vec![format!(
                "not evaluated: {}",
                row.reason.clone().unwrap_or_default()
            )],
            digest: Digest::of(b"rapha-node: admission not evaluated"),
        });
        let approval: Option<rapha_policy::ApprovalRecord> = self.opt(job, artifact::APPROVAL)?;
        let passkey_approval: Option<rapha_receipt::body::PasskeyApproval> =
            self.opt(job, artifact::APPROVAL_PASSKEY)?;
        let att: Option<AttestationRecord> = self.opt(job, artifact::ATTESTATION)?;
        let attestation = match att {
            None => ReceiptAttestation::NotReached,
            Some(a) if a.tpm_verified || a.level == "hardware" => ReceiptAttestation::Verified {
                evidence: {
                    let mut v = vec![AttestationEvidence {
                        kind: "evidence".into(),
                        digest: a.evidence,
                        result: a.level.clone(),
                    }];
                    if let Some(q) = a.tpm_quote {
                        v.push(AttestationEvidence {
                            kind: "tpm-quote".into(),
                            digest: q,
                            result: "verified".into(),
                        });
                    }
                    v
                },
            },
            Some(_) => ReceiptAttestation::NoneDevelopment,
        };
        let summary: Option<CohortSummary> = self.opt(job, artifact::COHORT_SUMMARY)?;
        let run: Option<RunRecord> = self.opt(job, artifact::MANIFEST)?;
        let started: Option<u64> = self
            .p
            .store
            .artifact(job, artifact::STARTED)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok());
        let terms = self.p.payments.terms();
        // The bound charged at admission (issue 19); none for a job refused before it, or
        // admitted by a node without it. Patients only where the cohort itself is shown.
        let release: Option<rapha_policy::ReleaseReview> = self.opt(job, artifact::RELEASE_SIZE)?;
        let patients = summary
            .as_ref()
            .filter(|_| started.is_some())
            .map(|s| s.patients);
        let leakage = release
            .and_then(|r| Some((r.bound?, r.publisher?)))
            .map(|(bound, p)| Leakage {
                bound,
                patients,
                per_patient: patients.and_then(|n| bound.per_patient(n)),
                publisher_bits: p.bits,
                publisher_cap: p.cap,
            });
        // The privacy audit of what a completed job releases, committed with its run (absent
        // for a job run before the audit existed).
        let audit: Option<rapha_receipt::body::Audit> =
            if outcome == Outcome::Completed && run.is_some() {
                self.opt(job, artifact::PRIVACY_AUDIT)?
            } else {
                None
            };
        Ok(ReceiptBody {
            schema: rapha_receipt::body::SCHEMA.to_owned(),
            job_id: job,
            outcome,
            // The code only: what happened in words is the hospital's (`ending` artifact). A job
            // that ended before codes existed (in flight across the upgrade) has words here:
            // `reason_code` maps them to their code.
            reason: reason_code(outcome, row.reason.as_deref())
                .as_str()
                .to_owned(),
            node: NodeIdentity {
                address: self.p.node_key.address(),
                name: self.p.node_name.clone(),
            },
            publisher: req.publisher.clone(),
            trainer: req.trainer.clone(),
            bundle_manifest: req.bundle_manifest,
            job_request: req.digest(),
            policy: PolicyDecisions {
                admission,
                final_gate: final_gate.map(conv),
            },
            dpo_approval: match approval {
                Some(r) => Some(DpoApproval {
                    passkey: None,
                    signer: r.approval.dpo_key.to_hex(),
                    signature: r.approval.signature,
                }),
                // A job approved by passkey has no key-file approval artifact; one that never
                // reached approval has neither.
                None => passkey_approval.map(|p| DpoApproval {
                    signer: DpoApproval::passkey_signer(&p.assertion.credential_id),
                    signature: p.assertion.signature.encode(),
                    passkey: Some(p),
                }),
            },
            attestation,
            // Cohort figures only for a job whose trainer started (the DPO approved, the
            // publisher paid): before that they are an oracle on what its query listed (does
            // an accession exist, did its patient opt out). Exclusion counts by reason never
            // leave: they stay in the DPO's review and the audit trail.
            cohort: summary
                .filter(|_| started.is_some())
                .map(|s| CohortCommitment {
                    merkle_root: s.commitment,
                    instances: s.instances,
                    by_modality: s.modalities,
                    exclusions: rapha_core::ExclusionCounts::new(),
                }),
            confinement: run
                .as_ref()
                .map_or_else(|| "not-run".to_owned(), |r| r.confinement.clone()),
            outputs: run
                .filter(|_| outcome == Outcome::Completed)
                .map(|r| ReceiptOutputs {
                    guard_verdict: if r.guard_accepted {
                        "accepted"
                    } else {
                        "rejected"
                    }
                    .into(),
                    files: r.files,
                    metrics: r.metrics,
                    runtime_public_key: r.public_key,
                    signature: r.signature,
                }),
            payment: Payment::new(
                terms.chain_id,
                terms.escrow,
                terms.token,
                terms.payout,
                req.fee,
            ),
            // Whole minutes: no finer timing of the run reaches the publisher.
            timestamps: Timestamps {
                submitted_ms: to_minute_ms(row.created_at.saturating_mul(1000)),
                started_ms: started.map(to_minute_ms),
                finished_ms: to_minute_ms(now_ms()),
            },
            leakage,
            audit,
        })
    }

    pub(super) fn step_receipt(
        &mut self,
        job: JobId,
        from: JobState,
        req: &JobRequest,
    ) -> Result<Step> {
        // The body is stored before it is appended, so a crash between the append and the
        // transition issues the identical body again (the log de-duplicates it).
        let body: ReceiptBody = match self.opt(job, artifact::RECEIPT_BODY)? {
            Some(b) => b,
            None => {
                let b = self.receipt_body(job, req)?;
                self.p.store.put_artifact(
                    job,
                    artifact::RECEIPT_BODY,
                    &serde_json::to_vec(&b).unwrap_or_default(),
                )?;
                b
            }
        };
        // The log head's timestamp in whole minutes too.
        let mut file = rapha_receipt::issue(
            &body,
            &self.p.node_key,
            &mut self.p.receipts,
            to_minute_ms(now_ms()),
        )?;
        // The decoded copy as the typed body serialises it: a whole-number metric (an AUC of
        // 1.0) stays a float in the copy, as the verifier rebuilds it from the typed body.
        if let Ok(v) = serde_json::to_value(&body) {
            file.body = v;
        }
        let json = file.to_json()?;
        self.advance_to(
            job,
            from,
            JobState::Receipted,
            &[(artifact::RECEIPT, &json)],
            None,
        )
    }
}
