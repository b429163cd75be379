//! Step 5: the escrow deposit for the job, confirmed on chain: exactly the fee, and refundable
//! no earlier than the job could run and settle. Checked again right before the trainer starts.

use super::*;

impl Node {
    /// The trainer's wall time for `job` in seconds, as the run will enforce it. Verified from
    /// the bundle once and kept as an artifact (the deposit check runs on every poll while the
    /// job awaits its deposit).
    ///
    /// The inner error is the bundle's refusal (the job ends refused with it).
    fn run_wall_secs(
        &mut self,
        job: JobId,
        req: &JobRequest,
    ) -> Result<std::result::Result<u64, String>> {
        if let Some(wall) = self.opt::<u64>(job, artifact::RUN_WALL)? {
            return Ok(Ok(wall));
        }
        let vb = match self.bundle(job, req) {
            Ok(vb) => vb,
            Err(reason) => return Ok(Err(reason)),
        };
        let wall = self.job_spec(req, &vb).limits.wall_seconds;
        self.p
            .store
            .put_artifact(job, artifact::RUN_WALL, wall.to_string().as_bytes())?;
        Ok(Ok(wall))
    }

    pub(super) fn step_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::AwaitingDeposit;
        let wall = match self.run_wall_secs(job, req)? {
            Ok(wall) => wall,
            Err(reason) => return self.end(job, from, Outcome::Refused, &reason),
        };
        match self.p.payments.check_deposit(req, wall) {
            Err(e) => Ok(Step::Blocked(Blocked::Deposit(e))),
            Ok(DepositStatus::Waiting(w)) => Ok(Step::Blocked(Blocked::Deposit(w))),
            Ok(DepositStatus::Refused(reason)) => self.end(
                job,
                from,
                Outcome::Refused,
                &format!("deposit refused: {reason}"),
            ),
            Ok(DepositStatus::Confirmed(rec)) => {
                let b = serde_json::to_vec(&rec).unwrap_or_default();
                self.advance_to(
                    job,
                    from,
                    JobState::DepositConfirmed,
                    &[(artifact::DEPOSIT, &b)],
                    None,
                )
            }
        }
    }

    /// Right before the trainer starts (`final-gate-passed -> running`): the deposit must
    /// still satisfy the deadline rule at the chain's time now. `None` lets the run start.
    pub(super) fn recheck_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Option<Step>> {
        let from = JobState::FinalGatePassed;
        let wall = match self.run_wall_secs(job, req)? {
            Ok(wall) => wall,
            Err(reason) => {
                self.sessions.remove(&job);
                return self.end(job, from, Outcome::Refused, &reason).map(Some);
            }
        };
        match self.p.payments.recheck_deposit(req, wall) {
            Ok(DepositStatus::Confirmed(_)) => Ok(None),
            Err(e) | Ok(DepositStatus::Waiting(e)) => Ok(Some(Step::Blocked(Blocked::Deposit(e)))),
            Ok(DepositStatus::Refused(reason)) => {
                self.sessions.remove(&job);
                self.end(
                    job,
                    from,
                    Outcome::Refused,
                    &format!("deposit refused at start: {reason}"),
                )
                .map(Some)
            }
        }
    }
}
