//! How a job ends before its outputs are guarded, or when the guard refuses them: the reason
//! code the publisher sees, the hospital's words for the DPO and the admin (the `ending`
//! artifact), and the suspension of a publisher whose job the output guard refused (checked at
//! admission and at the final gate, lifted only by a DPO).

use super::*;

/// The hospital-side record of how a job ended (artifact [`artifact::ENDING`]): the code the
/// publisher sees, and what happened in words for the DPO and the admin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ending {
    pub code: ReasonCode,
    /// The state the job ended in.
    pub from: JobState,
    /// What happened: may hold trainer-chosen text (file and entry names, exit status).
    /// Never shown to the publisher.
    pub detail: String,
}

impl Node {
    /// How the job ended, hospital-side (code and detail), once it ended before completing.
    ///
    /// # Errors
    /// Store errors or an unreadable stored ending.
    pub fn ending(&self, job: JobId) -> Result<Option<Ending>> {
        self.opt(job, artifact::ENDING)
    }

    /// Ends the job before its outputs are guarded: with `code` (all the publisher sees) and
    /// `detail` (what happened, for the audit trail and the DPO and admin views only). It still
    /// gets a receipt and a settlement: refunded for `refused` and `failed` codes, charged for
    /// `violated` and `trainer-failed`. A violation suspends the publisher first (a crash
    /// between the two leaves it suspended: fail closed).
    pub(super) fn end(
        &mut self,
        job: JobId,
        from: JobState,
        code: ReasonCode,
        detail: &str,
    ) -> Result<Step> {
        let outcome = code.outcome();
        // `refused` before the trainer ran; every ending after it (or of the node) is `failed`
        // as a state, the outcome telling which.
        let to = if outcome == Outcome::Refused {
            JobState::Refused
        } else {
            JobState::Failed
        };
        let ind = match outcome {
            Outcome::Refused => AuditOutcome::MinorFailure,
            _ => AuditOutcome::SeriousFailure,
        };
        if outcome == Outcome::Violated {
            let publisher = self.p.store.get(job)?.request.publisher;
            self.p.store.suspend(&publisher, job)?;
            self.p.audit.record(AuditEvent::new(
                AuditKind::AdminAction,
                AuditOutcome::SeriousFailure,
                format!(
                    "publisher {publisher:?} suspended (all its keys) until a DPO reviews the \
                     violation of job {job}"
                ),
                ACTOR,
                vec![job_object(job, None)],
            ))?;
        }
        self.p.audit.record(AuditEvent::new(
            AuditKind::Refusal,
            ind,
            format!("job {outcome} ({code}) in {from}: {detail}"),
            ACTOR,
            vec![job_object(job, None)],
        ))?;
        let ending = Ending {
            code,
            from,
            detail: detail.to_owned(),
        };
        let e = serde_json::to_vec(&ending).unwrap_or_default();
        self.advance_to(
            job,
            from,
            to,
            &[(artifact::ENDING, &e)],
            Some((outcome, code.as_str())),
        )
    }

    /// Refuses the job if its publisher is suspended (admission and the final gate).
    pub(super) fn suspended(
        &mut self,
        job: JobId,
        from: JobState,
        req: &JobRequest,
    ) -> Result<Option<Step>> {
        let Some(s) = self.p.store.suspension(&req.publisher)? else {
            return Ok(None);
        };
        if from == JobState::Attested {
            self.sessions.remove(&job);
        }
        let detail = format!(
            "publisher {:?} is suspended since the output guard refused job {} ({})",
            s.publisher, s.job_id, s.since
        );
        self.end(job, from, ReasonCode::PublisherSuspended, &detail)
            .map(Some)
    }

    /// A publisher's suspension, if it is suspended.
    ///
    /// # Errors
    /// Store errors.
    pub fn suspension(&self, publisher: &str) -> Result<Option<crate::store::Suspension>> {
        Ok(self.p.store.suspension(publisher)?)
    }

    /// Lifts `publisher`'s suspension after a DPO's review, with the DPO's `reason`, audited.
    /// Returns the suspension lifted, `None` if the publisher was not suspended.
    ///
    /// # Errors
    /// Store or audit errors.
    pub fn reinstate(
        &mut self,
        publisher: &str,
        dpo: &str,
        reason: &str,
    ) -> Result<Option<crate::store::Suspension>> {
        let Some(s) = self.p.store.suspension(publisher)? else {
            return Ok(None);
        };
        // Audited before it takes effect: a reinstatement the trail does not show never happens.
        self.p.audit.record(AuditEvent::new(
            AuditKind::DpoAction,
            AuditOutcome::Success,
            format!(
                "publisher {publisher:?} reinstated after review of job {}: {reason}",
                s.job_id
            ),
            (dpo, "dpo"),
            vec![job_object(s.job_id, None)],
        ))?;
        Ok(self.p.store.reinstate(publisher)?)
    }
}
