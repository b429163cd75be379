//! Driving jobs through the pipeline in the background, and the node lock every write takes.

use super::*;

/// Drives `job` until it blocks, in the background. At most one task drives a job: a call
/// while one is under way asks it for one more round instead (so an approval that lands just
/// as a round ends is not missed, and a flood of calls cannot pile up blocked tasks).
pub(crate) fn drive(state: &ApiState, job: JobId) {
    {
        let Ok(mut driving) = state.driving.lock() else {
            tracing::error!(%job, "drive set poisoned; job not driven");
            return;
        };
        if let Some(again) = driving.get_mut(&job) {
            *again = true;
            return;
        }
        driving.insert(job, false);
    }
    let node = Arc::clone(&state.node);
    let driving = Arc::clone(&state.driving);
    tokio::task::spawn_blocking(move || loop {
        match run_until_blocked(&node, job) {
            Ok(()) => tracing::debug!(%job, "job waits"),
            Err(e) => tracing::error!(%job, error = %e, "job step failed"),
        }
        let Ok(mut d) = driving.lock() else { return };
        match d.get_mut(&job) {
            Some(again) if *again => *again = false,
            _ => {
                d.remove(&job);
                return;
            }
        }
    });
}

/// Advances `job` until it waits for something outside the node. Each step is prepared under
/// the node lock; a step's slow part ([`crate::pipeline::Work`]: the PACS, the trainer, the chain) runs with the
/// lock released, and its result is committed under the lock again. Between steps the lock is
/// released too, so approvals, rejections and other jobs' steps get the node in between.
///
/// A step that fails on the node's side is counted and backed off ([`Node::step_failed`]):
/// the job is left alone until its back-off has passed.
fn run_until_blocked(node: &Mutex<Node>, job: JobId) -> Result<(), String> {
    let lock = || node.lock().map_err(|_| "node lock poisoned".to_owned());
    let failed = |n: &mut Node, e: crate::pipeline::PipelineError| {
        n.step_failed(job, &e);
        e.to_string()
    };
    loop {
        let next = {
            let mut n = lock()?;
            if n.backing_off(job) {
                return Ok(());
            }
            n.prepare(job).map_err(|e| failed(&mut n, e))?
        };
        let step = match next {
            PipelineNext::Step(step) => step,
            PipelineNext::InFlight => return Ok(()),
            PipelineNext::Work(work) => {
                let done = work.run();
                let mut n = lock()?;
                n.commit(done).map_err(|e| failed(&mut n, e))?
            }
        };
        if !matches!(step, Step::Moved(_)) {
            return Ok(());
        }
    }
}

/// How often `serve` re-drives unfinished jobs: a deposit or a settlement confirms on the
/// chain, and a DPO may approve with `rapha-node approvals` instead of the API, without a
/// request reaching the API.
pub const REDRIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Re-drives every unfinished job each [`REDRIVE_INTERVAL`] (one task per job at most).
pub(super) async fn redrive_unfinished(state: ApiState) {
    let mut tick = tokio::time::interval(REDRIVE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let path = Arc::clone(&state.store_path);
        let jobs = blocking(move || {
            Ok(open_store(&path)?
                .unfinished()
                .map_err(HttpError::internal)?
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>())
        })
        .await;
        match jobs {
            Ok(jobs) => {
                for job in jobs {
                    drive(&state, job);
                }
            }
            Err(e) => tracing::warn!(error = e.message, "cannot list unfinished jobs"),
        }
    }
}

/// Longest a request waits for the node (busy while it drives a job through a step such as
/// the trainer run). Below [`DEFAULT_TIMEOUT`], so a request that cannot get the node is
/// answered 503 `node-busy` having done nothing, instead of timing out and taking effect
/// later.
pub const NODE_WAIT: Duration = Duration::from_secs(20);

/// Takes the node lock, waiting at most [`NODE_WAIT`].
pub(super) fn lock_node(node: &Mutex<Node>) -> ApiResult<std::sync::MutexGuard<'_, Node>> {
    lock_within(node, NODE_WAIT)
}

/// Takes `lock`, waiting at most `wait`; a typed 503 `node-busy` after that.
///
/// # Errors
/// 503 `node-busy`, or 500 for a poisoned lock.
pub fn lock_within<T>(lock: &Mutex<T>, wait: Duration) -> ApiResult<std::sync::MutexGuard<'_, T>> {
    let start = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err(HttpError::internal("node lock poisoned"))
            }
            Err(std::sync::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "node-busy",
                    "the node is busy with a job step (such as a trainer run); nothing was \
                     done, retry later",
                ))
            }
        }
    }
}

/// Runs `f` on the node, on the blocking pool.
pub(crate) async fn with_node<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&mut Node) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let node = Arc::clone(&state.node);
    blocking(move || {
        let mut n = lock_node(&node)?;
        f(&mut n)
    })
    .await
}
