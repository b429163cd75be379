//! Live progress of the jobs whose trainer is running: written by the pipeline from the
//! enclave runtime's reports (about every 500 ms), read by the API's status and metrics
//! routes without the node lock. The feed counts and the trainer's self-reported figures are
//! numbers the trainer chooses: the API shows them to the hospital's roles only.
//!
//! Memory only: a run belongs to the process that started it, and a restart fails the job
//! (its enclave session is gone), so nothing here needs to survive one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rapha_core::JobId;
use rapha_enclave::session::RunProgress;

/// One running job: when the node started it and the runtime's last report.
#[derive(Clone, Debug)]
pub struct LiveRun {
    pub started: Instant,
    pub progress: RunProgress,
}

impl LiveRun {
    /// Seconds since the run step started (the node's clock, not the last report's).
    pub fn elapsed_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The running jobs and, for `/metrics`, what every run of this process fed.
#[derive(Debug, Default)]
pub struct LiveRuns {
    runs: Mutex<HashMap<JobId, LiveRun>>,
    fetches: AtomicU64,
    bytes: AtomicU64,
}

impl LiveRuns {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, LiveRun>> {
        // Each entry is replaced in one statement: a poisoned map is still consistent.
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `job` as running (nothing fed yet) until the returned guard is dropped.
    pub fn track(self: &Arc<Self>, job: JobId, wall_limit: Duration) -> Tracked {
        self.runs().insert(
            job,
            LiveRun {
                started: Instant::now(),
                progress: RunProgress {
                    wall_limit,
                    ..RunProgress::default()
                },
            },
        );
        Tracked {
            runs: Arc::clone(self),
            job,
        }
    }

    /// Records the runtime's latest report for `job` (ignored unless it is tracked).
    pub fn update(&self, job: JobId, progress: &RunProgress) {
        let mut runs = self.runs();
        let Some(run) = runs.get_mut(&job) else {
            return;
        };
        let fetched = progress.fetches.saturating_sub(run.progress.fetches);
        let sent = progress.bytes_fed.saturating_sub(run.progress.bytes_fed);
        run.progress = progress.clone();
        drop(runs);
        self.fetches.fetch_add(fetched, Ordering::Relaxed);
        self.bytes.fetch_add(sent, Ordering::Relaxed);
    }

    /// The job's live run, if its trainer is running in this process.
    pub fn get(&self, job: JobId) -> Option<LiveRun> {
        self.runs().get(&job).cloned()
    }

    /// Trainers running now.
    pub fn running(&self) -> usize {
        self.runs().len()
    }

    /// Records fetched by trainers (repeats included) since this process started.
    pub fn records_fed_total(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Decoded pixel bytes sent to trainers since this process started.
    pub fn bytes_fed_total(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A tracked run: removed from [`LiveRuns`] when dropped (however the run step ends).
#[derive(Debug)]
pub struct Tracked {
    runs: Arc<LiveRuns>,
    job: JobId,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.runs.runs().remove(&self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_move_the_run_and_the_totals_and_the_run_ends_with_its_guard() {
        let live = Arc::new(LiveRuns::default());
        let job = JobId::random();
        let report = |fetches, distinct| RunProgress {
            fetches,
            distinct_fed: distinct,
            bytes_fed: fetches * 10,
            wall_limit: Duration::from_secs(60),
            ..RunProgress::default()
        };
        // Reports for a job that is not running are not counted.
        live.update(job, &report(5, 5));
        assert!(live.get(job).is_none());
        assert_eq!(live.records_fed_total(), 0);
        {
            let _t = live.track(job, Duration::from_secs(60));
            assert_eq!(live.get(job).unwrap().progress.fetches, 0);
            live.update(job, &report(4, 4));
            live.update(job, &report(10, 6));
            let run = live.get(job).unwrap();
            assert_eq!((run.progress.fetches, run.progress.distinct_fed), (10, 6));
            assert_eq!(
                (live.records_fed_total(), live.bytes_fed_total()),
                (10, 100)
            );
            assert_eq!(live.running(), 1);
        }
        assert!(live.get(job).is_none());
        assert_eq!(live.running(), 0);
        assert_eq!(live.records_fed_total(), 10, "totals outlive the run");
    }
}
