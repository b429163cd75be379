//! Steps 11–12: release of a completed job's outputs, and settlement on chain.

use super::*;

impl Node {
    pub(super) fn step_release(&mut self, job: JobId) -> Result<Step> {
        let from = JobState::Receipted;
        let run: RunRecord = self.need(job, artifact::MANIFEST)?;
        let staged = self.job_dir(job).join("staged");
        let dest = self.release_path(job);
        // Exactly once: the copy is built beside the destination and renamed into place; a
        // destination that exists is a release a crash interrupted before its commit.
        if !dest.exists() {
            let tmp = self.p.release_dir.join(format!(".{job}.partial"));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io("cannot clear", &tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(io("cannot create", &tmp))?;
            for f in &run.files {
                let src = staged.join(&f.name);
                let bytes = std::fs::read(&src).map_err(io("cannot read staged output", &src))?;
                if Digest::of(&bytes) != f.sha256 {
                    return Err(PipelineError::Artifact {
                        job,
                        kind: artifact::MANIFEST,
                        detail: format!(
                            "staged output {} does not match its signed digest",
                            f.name
                        ),
                    });
                }
                let to = tmp.join(&f.name);
                std::fs::write(&to, &bytes).map_err(io("cannot write released output", &to))?;
            }
            if let Some(r) = self.receipt(job)? {
                let to = tmp.join("receipt.json");
                std::fs::write(&to, r.to_json()?).map_err(io("cannot write", &to))?;
            }
            std::fs::rename(&tmp, &dest).map_err(io("cannot move release into place", &dest))?;
        }
        self.p.audit.record(AuditEvent::new(
            AuditKind::Release,
            AuditOutcome::Success,
            format!("{} guarded output files released", run.files.len()),
            ACTOR,
            vec![
                job_object(job, None),
                ParticipantObject {
                    id_type_code: "output-manifest-signature".into(),
                    id: run.signature.chars().take(64).collect(),
                    detail: Some(
                        run.files
                            .iter()
                            .map(|f| format!("{}:{}", f.name, f.sha256.to_hex()))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                },
            ],
        ))?;
        let names: Vec<&str> = run.files.iter().map(|f| f.name.as_str()).collect();
        let b = serde_json::to_vec(&names).unwrap_or_default();
        self.advance_to(
            job,
            from,
            JobState::Released,
            &[(artifact::RELEASE, &b)],
            None,
        )
    }

    pub(super) fn step_settle(&mut self, job: JobId, from: JobState) -> Result<Step> {
        let receipt = self.receipt(job)?.ok_or_else(|| PipelineError::Artifact {
            job,
            kind: artifact::RECEIPT,
            detail: "receipted job without a receipt".into(),
        })?;
        let deposited = self.p.store.artifact(job, artifact::DEPOSIT)?.is_some();
        let status = if deposited {
            match self.p.payments.settle(job, &receipt) {
                Ok(s) => s,
                Err(e) => return Ok(Step::Blocked(Blocked::Settlement(e))),
            }
        } else {
            SettleStatus::Done {
                record: serde_json::json!({"settled": false, "paid": false, "why": "no deposit was confirmed for this job"}),
                paid: false,
            }
        };
        match status {
            SettleStatus::Pending(w) => Ok(Step::Blocked(Blocked::Settlement(w))),
            SettleStatus::Done { record, .. } => {
                let b = serde_json::to_vec(&record).unwrap_or_default();
                self.advance_to(
                    job,
                    from,
                    JobState::Settled,
                    &[(artifact::SETTLEMENT, &b)],
                    None,
                )
            }
        }
    }
}
