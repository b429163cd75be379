//! A hostile publisher against the node's pipeline and API (issue 18, the publisher-side
//! review): what it chooses in a request (the validation split, a linkage group, a query wide
//! enough to make the cohort unstorable), what it reads back (cohort-step timing and codes,
//! API latency, admission digests) and how it could exhaust the node (stalled downloads, a job
//! whose step keeps failing). Against the real node: Orthanc + DICOMweb, swtpm, anvil, runc.

use rapha_core::{JobId, Outcome};
use rapha_node::store::JobState;

use crate::pipeline_e2e::{bundle, world, World};

/// The code part of a job's reason.
fn code(reason: Option<&str>) -> &str {
    reason
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
}

fn states(w: &World, job: JobId) -> Vec<JobState> {
    w.node
        .store()
        .transitions(job)
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect()
}

#[test]
fn a_validation_percent_outside_the_hospitals_range_is_refused_at_admission() {
    let Some(mut w) = world() else { return };
    let tmp = w.tmp.path().to_path_buf();
    let (dir, manifest) = bundle(&tmp, &w.trainer, "split", "honest", &w.publisher_key);
    let mut failures = Vec::new();
    // 0 and 95 put the cohort-size threshold where the publisher wants it; 200 underflowed
    // `patients - validation` under the node lock (a panic in a debug build).
    for percent in [0u8, 95, 200] {
        let mut req = w.request(manifest, w.scoped_query());
        req.validation_percent = percent;
        let job = w.node.submit(&dir, req).unwrap();
        let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.node.run_until_blocked(job)
        }));
        let Ok(Ok(end)) = driven else {
            failures.push(format!(
                "{percent}%: the node panicked or failed driving the job"
            ));
            continue;
        };
        let row = w.node.store().get(job).unwrap();
        let seen = states(&w, job);
        if end != JobState::Settled
            || row.outcome != Some(Outcome::Refused)
            || code(row.reason.as_deref()) != "validation-out-of-range"
            || seen.contains(&JobState::Admitted)
        {
            failures.push(format!(
                "{percent}%: ended {end} with {:?} ({:?}) through {seen:?}",
                row.outcome, row.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(w.pacs_calls(), 0, "a refused job reached the PACS");
    // The honest split within the range is admitted.
    let job = w
        .node
        .submit(&dir, w.request(manifest, w.scoped_query()))
        .unwrap();
    assert_eq!(
        w.node.run_until_blocked(job).unwrap(),
        JobState::AwaitingApproval
    );
}
