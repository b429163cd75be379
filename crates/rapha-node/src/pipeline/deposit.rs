//! Step 5: the escrow deposit for the job, confirmed on chain: exactly the fee, and refundable
//! no earlier than the job could run and settle. Checked again right before the trainer starts
//! (`final-gate-passed -> running`).
//!
//! Both checks talk to the chain without the node lock ([`Work`]). The deadline rule needs the
//! trainer's wall time: the one admission checked against the node's bounds (the `resources`
//! artifact), or for a job admitted before that was recorded, the signed bundle's, verified off
//! the lock (every blob is hashed); it is kept as the `run-wall` artifact for every later check.

use super::admission::job_bundle;
use super::*;

/// The trainer's wall time, or the bundle's refusal.
type Wall = std::result::Result<u64, String>;

impl Node {
    /// What the deposit checks need to find the job's wall time without the node lock: the
    /// kept `run-wall` artifact, or the bundle to verify.
    fn wall_source(&self, job: JobId, req: &JobRequest) -> Result<impl FnOnce() -> Wall + Send> {
        // The wall time admission checked against [trainer.limits] (and the DPO reviewed),
        // when the job has one on record.
        let admitted = self
            .opt::<rapha_policy::ResourceReview>(job, artifact::RESOURCES)?
            .map(|r| r.requested.wall_seconds);
        let kept: Option<u64> = self.opt(job, artifact::RUN_WALL)?.or(admitted);
        let trust = self.p.trust.clone();
        let bundle_dir = self.job_dir(job).join("bundle");
        let req = req.clone();
        Ok(move || match kept {
            Some(wall) => Ok(wall),
            None => job_bundle(&bundle_dir, &trust, &req).map(|vb| vb.resources().wall_seconds),
        })
    }

    pub(super) fn step_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Next> {
        let from = JobState::AwaitingDeposit;
        let wall = self.wall_source(job, req)?;
        let payments = self.p.payments.clone();
        let req = req.clone();
        Ok(self.work(Work::new(job, from, move || {
            let checked = wall().map(|wall| (wall, payments.with(|p| p.check_deposit(&req, wall))));
            Box::new(move |n: &mut Node| n.commit_deposit(job, checked))
        })))
    }

    fn commit_deposit(
        &mut self,
        job: JobId,
        checked: std::result::Result<(u64, std::result::Result<DepositStatus, String>), String>,
    ) -> Result<Step> {
        let from = JobState::AwaitingDeposit;
        let (wall, checked) = match checked {
            Ok(c) => c,
            Err(reason) => return self.end(job, from, ReasonCode::BundleRefused, &reason),
        };
        let wall_bytes = wall.to_string();
        match checked {
            Err(e) | Ok(DepositStatus::Waiting(e)) => {
                // Kept for the next check: the bundle is verified once.
                self.p
                    .store
                    .put_artifact(job, artifact::RUN_WALL, wall_bytes.as_bytes())?;
                Ok(Step::Blocked(Blocked::Deposit(e)))
            }
            Ok(DepositStatus::Refused { code, reason }) => {
                self.end(job, from, code, &format!("deposit refused: {reason}"))
            }
            Ok(DepositStatus::Confirmed(rec)) => {
                let b = serde_json::to_vec(&rec).unwrap_or_default();
                self.advance_to(
                    job,
                    from,
                    JobState::DepositConfirmed,
                    &[
                        (artifact::DEPOSIT, &b),
                        (artifact::RUN_WALL, wall_bytes.as_bytes()),
                    ],
                    None,
                )
            }
        }
    }

    /// `final-gate-passed -> running`: the deposit must still satisfy the deadline rule at the
    /// chain's time now, or the trainer never starts (the job is refused and refunded).
    pub(super) fn step_start(&mut self, job: JobId, req: &JobRequest) -> Result<Next> {
        let from = JobState::FinalGatePassed;
        let wall = self.wall_source(job, req)?;
        let payments = self.p.payments.clone();
        let req = req.clone();
        Ok(self.work(Work::new(job, from, move || {
            let checked = wall().map(|wall| payments.with(|p| p.recheck_deposit(&req, wall)));
            Box::new(move |n: &mut Node| n.commit_start(job, checked))
        })))
    }

    fn commit_start(
        &mut self,
        job: JobId,
        checked: std::result::Result<std::result::Result<DepositStatus, String>, String>,
    ) -> Result<Step> {
        let from = JobState::FinalGatePassed;
        let checked = match checked {
            Ok(c) => c,
            Err(reason) => {
                self.sessions.remove(&job);
                return self.end(job, from, ReasonCode::BundleRefused, &reason);
            }
        };
        match checked {
            // The session stays: the trainer starts once the chain answers.
            Err(e) | Ok(DepositStatus::Waiting(e)) => Ok(Step::Blocked(Blocked::Deposit(e))),
            Ok(DepositStatus::Refused { code, reason }) => {
                self.sessions.remove(&job);
                self.end(
                    job,
                    from,
                    code,
                    &format!("deposit refused at start: {reason}"),
                )
            }
            Ok(DepositStatus::Confirmed(_)) => {
                let started = now_ms().to_string();
                // A key-file approval can no longer be revoked once the job starts (a passkey
                // approval is the job's own artifact, outside the approval store).
                let by_key_file = self.p.store.artifact(job, artifact::APPROVAL)?.is_some();
                if let Some(d) = self.review_digest(job)?.filter(|_| by_key_file) {
                    self.p.approvals.mark_started(&d, now_s())?;
                }
                self.advance_to(
                    job,
                    from,
                    JobState::Running,
                    &[(artifact::STARTED, started.as_bytes())],
                    None,
                )
            }
        }
    }
}
