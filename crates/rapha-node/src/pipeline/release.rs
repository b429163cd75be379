//! Steps 11–12 (in the order money first): settlement on chain, then the release of a
//! completed job's outputs, only once the settlement is confirmed and the escrow shows the job
//! paid.
//!
//! ```text
//!  receipted --settle (confirmed)--> settled --paid, completed--> released
//!                                      |
//!                                      +-- every other outcome, or a completed job whose
//!                                          deposit was refunded by expiry: ends here
//! ```
//!
//! Stores written before this order (v1) may hold a completed job in `released` without a
//! settlement: it continues to `settled` as it always did.

use super::*;

/// The settlement artifact's view the release step needs.
#[derive(Deserialize)]
struct SettlementRecord {
    #[serde(default)]
    paid: bool,
}

impl Node {
    /// A settled job: releases a completed, paid job's outputs; every other job is done.
    pub(super) fn step_after_settlement(
        &mut self,
        job: JobId,
        outcome: Option<Outcome>,
    ) -> Result<Step> {
        let decided = self.p.store.artifact(job, artifact::RELEASE)?.is_some()
            || self.p.store.artifact(job, artifact::WITHHELD)?.is_some();
        if outcome != Some(Outcome::Completed) || decided {
            return Ok(Step::Done);
        }
        self.step_release(job)
    }

    /// A job in `released`: done, unless a v1 store released it before settling.
    pub(super) fn step_after_release(&mut self, job: JobId) -> Result<Next> {
        if self.p.store.artifact(job, artifact::SETTLEMENT)?.is_some() {
            return Ok(Next::Step(Step::Done));
        }
        self.step_settle(job, JobState::Released)
    }

    fn step_release(&mut self, job: JobId) -> Result<Step> {
        let from = JobState::Settled;
        let settlement: SettlementRecord = self.need(job, artifact::SETTLEMENT)?;
        if !settlement.paid {
            // step_settle withholds an unpaid completed job's outputs in the same transaction
            // that settles it; reaching here unpaid means the store was edited.
            return Err(PipelineError::Artifact {
                job,
                kind: artifact::SETTLEMENT,
                detail: "a completed job settled unpaid has no withheld record".into(),
            });
        }
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

    /// The settlement talks to the chain without the node lock ([`Work`]), and is signed there,
    /// when it is sent, over the receipt log's head then.
    pub(super) fn step_settle(&mut self, job: JobId, from: JobState) -> Result<Next> {
        let receipt = self.receipt(job)?.ok_or_else(|| PipelineError::Artifact {
            job,
            kind: artifact::RECEIPT,
            detail: "receipted job without a receipt".into(),
        })?;
        let deposited = self.p.store.artifact(job, artifact::DEPOSIT)?.is_some();
        if !deposited {
            let status = SettleStatus::Done {
                record: serde_json::json!({"settled": false, "paid": false, "why": "no deposit was confirmed for this job"}),
                paid: false,
            };
            return self.commit_settle(job, from, Ok(status)).map(Next::Step);
        }
        let request = self.p.store.get(job)?.request;
        let signer = SettlementSigner::new(
            Arc::clone(&self.p.node_key),
            self.p.receipts.path().to_owned(),
        );
        let payments = self.p.payments.clone();
        Ok(self.work(Work::new(job, from, move || {
            let settled = payments.with(|p| p.settle(&request, &receipt, &signer));
            Box::new(move |n: &mut Node| n.commit_settle(job, from, settled))
        })))
    }

    fn commit_settle(
        &mut self,
        job: JobId,
        from: JobState,
        settled: std::result::Result<SettleStatus, String>,
    ) -> Result<Step> {
        let status = match settled {
            Ok(s) => s,
            Err(e) => return Ok(Step::Blocked(Blocked::Settlement(e))),
        };
        let (record, paid) = match status {
            SettleStatus::Pending(w) => return Ok(Step::Blocked(Blocked::Settlement(w))),
            SettleStatus::Done { record, paid } => (record, paid),
        };
        let deposited = self.p.store.artifact(job, artifact::DEPOSIT)?.is_some();
        let outcome = self.p.store.get(job)?.outcome;
        let b = serde_json::to_vec(&record).unwrap_or_default();
        let mut artifacts: Vec<(&str, &[u8])> = vec![(artifact::SETTLEMENT, &b)];
        let unpaid = deposited && !paid && outcome.is_some_and(Outcome::charged);
        let withheld = serde_json::to_vec(&serde_json::json!({
            "released": false,
            "why": "the deposit was refunded to the depositor before the settlement landed",
        }))
        .unwrap_or_default();
        if unpaid {
            let what = if from == JobState::Receipted && outcome == Some(Outcome::Completed) {
                artifacts.push((artifact::WITHHELD, &withheld));
                "its outputs are withheld and will never be released"
            } else {
                "the hospital was not paid"
            };
            self.p.audit.record(AuditEvent::new(
                AuditKind::Refusal,
                AuditOutcome::SeriousFailure,
                format!(
                    "the escrow shows the deposit of this {} job refunded to the depositor, not paid: {what}",
                    outcome.map_or("unknown", Outcome::as_str)
                ),
                ACTOR,
                vec![job_object(job, None)],
            ))?;
        }
        self.advance_to(job, from, JobState::Settled, &artifacts, None)
    }
}

/// A finished job's working data.
impl Node {
    /// Removes a finished job's working data: the trainer's rootfs, the job's link to its
    /// bundle, its staged outputs and its run directory. Kept: the job store (its artifacts,
    /// the receipt among them), the receipt log, the audit trail and the released outputs.
    fn collect(&self, job: JobId) -> Result<()> {
        let dir = self.job_dir(job);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("cannot remove finished job data", &dir))?;
            tracing::info!(%job, "finished job's working data removed");
        }
        Ok(())
    }

    pub(super) fn collect_if_finished(&self, job: JobId) -> Result<()> {
        if self.finished(job)? {
            self.collect(job)?;
        }
        Ok(())
    }

    /// Whether the job needs its working data no more: the node has no more work for it
    /// ([`JobStore::finished`]: a completed job only once released, or withheld for good, its
    /// staged copy being what the release copies from).
    fn finished(&self, job: JobId) -> Result<bool> {
        Ok(self.p.store.finished(job)?)
    }

    /// Start-up clean-up: removes the working data of every finished job, of jobs the store
    /// does not know (a submission a crash interrupted), staged bundles and the per-run
    /// directories of runs that died with an earlier process.
    ///
    /// # Errors
    /// Store or I/O errors.
    pub fn collect_finished(&mut self) -> Result<()> {
        let mut live = HashSet::new();
        for (job, _) in self.p.store.states()? {
            if !self.finished(job)? {
                live.insert(job);
            }
        }
        let jobs = self.p.work_dir.join("jobs");
        if let Ok(rd) = std::fs::read_dir(&jobs) {
            for e in rd.flatten() {
                let name = e.file_name();
                let keep = name
                    .to_str()
                    .and_then(|n| n.parse::<JobId>().ok())
                    .is_some_and(|j| live.contains(&j));
                if !keep {
                    let path = e.path();
                    std::fs::remove_dir_all(&path)
                        .map_err(io("cannot remove finished job data", &path))?;
                }
            }
        }
        // No run outlives its process: every per-run directory here is a dead run's (its
        // trainer's `/out` tmpfs may still be mounted: it is detached first).
        if self.sessions.is_empty() && self.in_flight.is_empty() {
            let runs = self.p.work_dir.join("run");
            rapha_enclave::session::clear_work_root(&runs)
                .map_err(io("cannot remove a dead run's working data", &runs))?;
        }
        Ok(())
    }
}
