//! The node's own bounds on what a publisher chooses and the admission policy does not weigh,
//! and how the node copes with a step that keeps failing on its side.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::*;

/// What the node bounds of every job besides the admission policy (issue 18's hostile
/// publisher), set with [`super::Node::set_rules`]; the binary fills it from the
/// configuration, [`JobRules::default`] holds the defaults documented there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRules {
    /// The `validation_percent` a request may ask for (`[policy] min_validation_percent`,
    /// `max_validation_percent`). Outside it the job is refused at admission
    /// (`validation-out-of-range`): the publisher would otherwise choose where the cohort-size
    /// threshold lies (`min_validation_patients * 100 / percent`).
    pub validation_percent: RangeInclusive<u8>,
    /// Most instances a cohort may keep (`[cohort] max_instances`); a larger one is refused
    /// with the code of an empty cohort.
    pub max_cohort_instances: u64,
    /// The cohort step's result (a built cohort or a refusal) is committed on a whole number
    /// of these after the job's admission (`[cohort] commit_quantum_secs`), so how long the
    /// PACS took to answer never reaches the publisher.
    pub cohort_quantum: Duration,
    /// Whether a job of a linkage group must ask the same query as the group's earlier jobs
    /// (`[policy] linkage_same_query`): two jobs of one group that differ by one accession
    /// would attribute that accession's records.
    pub linkage_same_query: bool,
    /// Attempts of a step that fails on the node's side (a store, audit or artifact error)
    /// before a job that has not run its trainer ends `failed` (`node-error`, refunded).
    pub max_step_attempts: u32,
}

/// Default `[policy] min_validation_percent`.
pub const DEFAULT_MIN_VALIDATION_PERCENT: u8 = 10;
/// Default `[policy] max_validation_percent`.
pub const DEFAULT_MAX_VALIDATION_PERCENT: u8 = 50;
/// Default `[cohort] max_instances`: a stored cohort entry takes about 2 KB, so the cohort
/// artifact stays near 200 MB, well below what SQLite stores in one value.
pub const DEFAULT_MAX_COHORT_INSTANCES: u64 = 100_000;
/// Default `[cohort] commit_quantum_secs`.
pub const COHORT_QUANTUM: Duration = Duration::from_secs(300);
/// Default attempts of a failing step ([`JobRules::max_step_attempts`]).
pub const DEFAULT_MAX_STEP_ATTEMPTS: u32 = 5;

impl Default for JobRules {
    fn default() -> Self {
        Self {
            validation_percent: DEFAULT_MIN_VALIDATION_PERCENT..=DEFAULT_MAX_VALIDATION_PERCENT,
            max_cohort_instances: DEFAULT_MAX_COHORT_INSTANCES,
            cohort_quantum: COHORT_QUANTUM,
            linkage_same_query: true,
            max_step_attempts: DEFAULT_MAX_STEP_ATTEMPTS,
        }
    }
}

/// The first wait before a failed step is tried again; each further failure doubles it.
pub const STEP_RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest wait between two tries of a failing step.
pub const STEP_RETRY_MAX: Duration = Duration::from_secs(300);

/// The artifact counting a job's step failures in its current state.
const ATTEMPTS: &str = "step-attempts";

/// A job's failures in one state ([`ATTEMPTS`]).
#[derive(Serialize, Deserialize)]
struct Attempts {
    state: JobState,
    count: u32,
    last_error: String,
}

impl Node {
    /// Records that `job`'s step failed on the node's side with `error` (a store, audit or
    /// artifact error: the job itself is not at fault). The job is tried again after a
    /// back-off that doubles with each failure ([`Node::backing_off`]); once it has failed
    /// [`JobRules::max_step_attempts`] times in one state before its trainer ran, it ends
    /// `failed` with `node-error` (refunded), the error in its hospital-side record. A job past
    /// that point (its outcome decided, its money moving) is only backed off, never ended.
    ///
    /// Never fails itself: what it cannot record is logged, so one job's error cannot stop
    /// the node.
    pub fn step_failed(&mut self, job: JobId, error: &PipelineError) {
        if matches!(
            error,
            PipelineError::InFlight(_) | PipelineError::Store(StoreError::Conflict { .. })
        ) {
            return;
        }
        tracing::error!(%job, %error, "job step failed");
        let state = match self.p.store.get(job) {
            Ok(row) => row.state,
            Err(e) => {
                tracing::error!(%job, error = %e, "cannot read the failed job");
                return;
            }
        };
        let earlier: Option<Attempts> = self.opt(job, ATTEMPTS).ok().flatten();
        let count = match earlier {
            Some(a) if a.state == state => a.count.saturating_add(1),
            _ => 1,
        };
        let record = Attempts {
            state,
            count,
            last_error: error.to_string(),
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        if let Err(e) = self.p.store.put_artifact(job, ATTEMPTS, &bytes) {
            tracing::error!(%job, error = %e, "cannot record the step failure");
        }
        let doublings = count.saturating_sub(1).min(16);
        let wait = STEP_RETRY_BASE
            .saturating_mul(1 << doublings)
            .min(STEP_RETRY_MAX);
        self.backoff.insert(job, Instant::now() + wait);
        if count < self.rules.max_step_attempts || !before_trainer(state) {
            return;
        }
        self.sessions.remove(&job);
        let detail = format!(
            "the node's step from {state} failed {count} times, the job was stopped \
             (deposit refunded); last error: {error}"
        );
        match self.end(job, state, ReasonCode::NodeError, &detail) {
            Ok(_) => {
                self.backoff.remove(&job);
            }
            Err(e) => tracing::error!(%job, error = %e, "cannot end the failing job"),
        }
    }

    /// Whether `job` waits out the back-off of a failed step (see [`Node::step_failed`]).
    pub fn backing_off(&self, job: JobId) -> bool {
        self.backoff.get(&job).is_some_and(|t| Instant::now() < *t)
    }
}

/// Whether a job in `state` has not started its trainer: ending it `failed` refunds its
/// deposit and takes nothing from anyone.
fn before_trainer(state: JobState) -> bool {
    use JobState as S;
    matches!(
        state,
        S::Received
            | S::BundleVerified
            | S::Admitted
            | S::CohortBuilt
            | S::AwaitingApproval
            | S::Approved
            | S::AwaitingDeposit
            | S::DepositConfirmed
            | S::Attested
            | S::FinalGatePassed
    )
}
