//! Step 5: the escrow deposit for the job, confirmed on chain.

use super::*;

impl Node {
    pub(super) fn step_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Step> {
        let from = JobState::AwaitingDeposit;
        match self.p.payments.check_deposit(req) {
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
}
