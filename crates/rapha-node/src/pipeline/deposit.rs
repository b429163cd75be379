//! Step 5: the escrow deposit for the job, confirmed on chain.

use super::*;

impl Node {
    /// The deposit check talks to the chain without the node lock ([`Work`]).
    pub(super) fn step_deposit(&mut self, job: JobId, req: &JobRequest) -> Result<Next> {
        let from = JobState::AwaitingDeposit;
        let payments = self.p.payments.clone();
        let req = req.clone();
        Ok(self.work(Work::new(job, from, move || {
            let checked = payments.with(|p| p.check_deposit(&req));
            Box::new(move |n: &mut Node| n.commit_deposit(job, checked))
        })))
    }

    fn commit_deposit(
        &mut self,
        job: JobId,
        checked: std::result::Result<DepositStatus, String>,
    ) -> Result<Step> {
        let from = JobState::AwaitingDeposit;
        match checked {
            Err(e) => Ok(Step::Blocked(Blocked::Deposit(e))),
            Ok(DepositStatus::Waiting(w)) => Ok(Step::Blocked(Blocked::Deposit(w))),
            Ok(DepositStatus::Refused(reason)) => self.end(
                job,
                from,
                ReasonCode::DepositRefused,
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
