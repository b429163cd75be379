//! The node's own bounds on what a publisher chooses and the admission policy does not weigh,
//! and how the node copes with a step that keeps failing on its side.

use std::ops::RangeInclusive;
use std::time::Duration;

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
