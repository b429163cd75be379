//! Job routes: `POST /v1/jobs` and `GET /v1/jobs/{id}`.

use super::*;

pub(super) async fn job_status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/jobs/{id}",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    // Not `authorize_job`: the owner check is made on the row read below, one read per poll.
    let job = parse_job(&id)?;
    if caller.role != Role::Publisher {
        return hospital_view(&state, job).map(Json);
    }
    // One kept read-only connection: no node lock, no database open per poll. Read in place,
    // not on the blocking pool: a point read of a WAL store never waits for the pipeline's
    // writes and costs less than the hand-off (bench/node.sh: about twice the polls per
    // second, a third of the p99).
    // `finished`: released (completed and paid) or settled (everything else), nothing more
    // will happen to the job.
    let (row, records, finished, run_since) = state.readers.with(|r| {
        let row = read_row(r, job)?;
        let records = records_progress(r, job, false)?;
        let finished = r.finished(job).map_err(HttpError::internal)?;
        let run_since = if row.state == JobState::Running {
            run_since(r, job)?
        } else {
            None
        };
        Ok((row, records, finished, run_since))
    })?;
    // A publisher sees only its own jobs (`authorize_job`'s check, on the row just read,
    // before anything of it is returned).
    if !caller.speaks_for(&row.request.publisher) {
        return Err(not_found("unknown-job", "no job with this id"));
    }
    // The cohort step's own states are the hospital's: from admission until the DPO decides,
    // the publisher sees `admitted` (the step's result lands on a quantum after admission).
    let shown = match row.state {
        JobState::CohortBuilt | JobState::AwaitingApproval => JobState::Admitted,
        s => s,
    };
    let progress = JobState::ALL.iter().position(|s| *s == shown).unwrap_or(0);
    // The publisher's view: state, the reason code and whole minutes. No live counter
    // (what the trainer fetches is its choice) and no time finer than a minute; and
    // nothing of the run from the live map, whose entry follows the trainer: while the
    // state is `running`, the minutes since the run step started and the wall time, both
    // the node's.
    let run = match (row.state, run_since) {
        (JobState::Running, Some((started_ms, wall))) => json!({
            "elapsed_minutes": crate::pipeline::now_ms().saturating_sub(started_ms) / 60_000,
            "wall_limit_secs": wall,
        }),
        _ => serde_json::Value::Null,
    };
    Ok(Json(json!({
        "job_id": row.id.to_string(),
        "state": shown,
        "finished": finished,
        "progress": { "step": progress, "of": JobState::ALL.len() },
        "records": records,
        "run": run,
        "outcome": row.outcome,
        "reason": row.reason,
        "created_at": minute(row.created_at),
        "updated_at": minute(row.updated_at),
    })))
}

fn read_row(r: &JobReader, job: JobId) -> ApiResult<crate::store::JobRow> {
    match r.get(job) {
        Ok(row) => Ok(row),
        Err(crate::store::StoreError::NotFound(_)) => {
            Err(not_found("unknown-job", "no job with this id"))
        }
        Err(e) => Err(HttpError::internal(e)),
    }
}

/// A job as the hospital's roles see it (`GET /v1/jobs/{id}` for the DPO and the admin, and
/// the console's job pages): the state, the records fed, the live run while the trainer runs,
/// the outcome and the hospital's detail of how it ended.
pub(crate) fn hospital_view(state: &ApiState, job: JobId) -> ApiResult<serde_json::Value> {
    let (row, mut records, ending, finished) = state.readers.with(|r| {
        let row = read_row(r, job)?;
        let records = records_progress(r, job, true)?;
        let ending = ending_detail(r, job)?;
        let finished = r.finished(job).map_err(HttpError::internal)?;
        Ok((row, records, ending, finished))
    })?;
    let progress = JobState::ALL
        .iter()
        .position(|s| *s == row.state)
        .unwrap_or(0);
    let run = (row.state == JobState::Running)
        .then(|| state.live.get(job))
        .flatten();
    if let Some(r) = &run {
        // While the trainer runs, the distinct records fed so far (the final figure is the
        // signed manifest's, read above once the run has ended).
        records["fed"] = json!(r.progress.distinct_fed);
    }
    let run = run.map(|r| run_json(&r));
    Ok(json!({
        "job_id": row.id.to_string(),
        "state": row.state,
        "finished": finished,
        "progress": { "step": progress, "of": JobState::ALL.len() },
        "records": records,
        "run": run,
        "outcome": row.outcome,
        "reason": row.reason,
        "detail": ending,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }))
}

/// Unix seconds truncated to the minute.
fn minute(secs: u64) -> u64 {
    secs - secs % 60
}

/// When the job's run step started (unix ms, the `started` artifact) and its wall time in
/// seconds (the `run-wall` artifact): what the publisher is shown of a running job.
fn run_since(r: &JobReader, job: JobId) -> ApiResult<Option<(u64, u64)>> {
    let number = |kind: &str| -> ApiResult<Option<u64>> {
        Ok(r.artifact(job, kind)
            .map_err(HttpError::internal)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok()))
    };
    let started = number(crate::pipeline::artifact::STARTED)?;
    let wall = number(crate::pipeline::artifact::RUN_WALL)?;
    Ok(started.zip(wall))
}

/// What happened, in words, when the job ended (hospital roles only): may hold trainer-chosen
/// text.
fn ending_detail(r: &JobReader, job: JobId) -> ApiResult<Option<String>> {
    Ok(r.artifact(job, crate::pipeline::artifact::ENDING)
        .map_err(HttpError::internal)?
        .and_then(|b| serde_json::from_slice::<crate::pipeline::Ending>(&b).ok())
        .map(|e| e.detail))
}

/// A running trainer's progress as `GET /v1/jobs/{id}` shows it to the hospital's roles:
/// numbers only.
///
/// Every count of the feed (distinct records fed, fetches) and the trainer's self-reported
/// figures are numbers the trainer chooses while it runs, and the live entry itself follows the
/// trainer: shown to the publisher they would be a channel out of the hospital that bypasses
/// the output guard (I4). The publisher's view is built from the job's artifacts instead.
pub(super) fn run_json(run: &LiveRun) -> serde_json::Value {
    let p = &run.progress;
    json!({
        "distinct_records_fed": p.distinct_fed,
        "elapsed_secs": run.elapsed_secs(),
        "wall_limit_secs": p.wall_limit.as_secs(),
        "records_fetched": p.fetches,
        "self_reported": p.self_reported.as_ref().map_or(serde_json::Value::Null, |s| {
            // Numbers only: never a string the trainer wrote (metric names included).
            json!({
                "epoch": s.epoch,
                "step": s.step,
                "loss": s.loss.filter(|l| l.is_finite()),
            })
        }),
    })
}

/// Instances in the built cohort and (hospital roles only) instances fed to the trainer (null
/// until known), from the pipeline's stored artifacts: counts only. The publisher sees the
/// cohort's count only once its trainer has started: before, it would tell what the
/// publisher's query matched (does an accession exist, did its patient opt out) before any DPO
/// decision.
pub(super) fn records_progress(
    store: &JobReader,
    job: JobId,
    hospital: bool,
) -> ApiResult<serde_json::Value> {
    #[derive(Deserialize)]
    struct Cohort {
        instances: u64,
    }
    #[derive(Deserialize)]
    struct Run {
        records_fed: u64,
    }
    let read = |kind: &str| store.artifact(job, kind).map_err(HttpError::internal);
    let shown = hospital || read(crate::pipeline::artifact::STARTED)?.is_some();
    let cohort = if shown {
        read(crate::pipeline::artifact::COHORT_SUMMARY)?
            .and_then(|b| serde_json::from_slice::<Cohort>(&b).ok())
            .map(|c| c.instances)
    } else {
        None
    };
    if !hospital {
        return Ok(json!({ "cohort": cohort }));
    }
    let fed = read(crate::pipeline::artifact::MANIFEST)?
        .and_then(|b| serde_json::from_slice::<Run>(&b).ok())
        .map(|r| r.records_fed);
    Ok(json!({ "cohort": cohort, "fed": fed }))
}

/// `POST /v1/jobs`: the job request; its bundle was uploaded with `POST /v1/bundles`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    request: JobRequest,
}

pub(super) async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/jobs",
        &[Role::Publisher, Role::Admin],
    )?;
    let body: SubmitBody = parse_json(&headers, body)?;
    if !caller.speaks_for(&body.request.publisher) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a publisher token submits only its own publisher's jobs",
        )
        .audited(denials::Denial {
            route: "/v1/jobs",
            who: "publisher",
            why: "job request names another publisher",
        }));
    }
    let role = caller.role;
    let node = Arc::clone(&state.node);
    let store = Arc::clone(&state.bundles);
    let readers = Arc::clone(&state.readers);
    let quotas = state.quotas;
    let work_dir = Arc::clone(&state.work_dir);
    let st = state.clone();
    let job = blocking(move || {
        let request = &body.request;
        // A suspended publisher, or one at its quota, is refused before anything is stored.
        let suspended = readers.with(|r| {
            r.suspension(&request.publisher)
                .map_err(HttpError::internal)
        })?;
        if suspended.is_some() {
            audit_later(
                &st,
                AuditEvent::new(
                    AuditKind::Refusal,
                    AuditOutcome::MinorFailure,
                    format!(
                        "job submission refused: publisher {:?} is suspended",
                        request.publisher
                    ),
                    ("api-client", role.as_str()),
                    vec![crate::audit::job_object(request.job_id, None)],
                ),
            );
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                ReasonCode::PublisherSuspended.as_str(),
                "this publisher is suspended until the hospital's DPO reviews an earlier job; \
                 nothing was submitted",
            ));
        }

        let bundle_dir = store
            .find(&request.publisher, &request.bundle_manifest)
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-bundle",
                    format!(
                        "no bundle with manifest {} from publisher {:?} is stored on this node; \
                         upload it first with POST /v1/bundles",
                        request.bundle_manifest.to_oci(),
                        request.publisher
                    ),
                )
            })?;
        // Linked (not copied) into the node's working directory without the node lock.
        let staged = Node::stage_bundle(&work_dir, &bundle_dir).map_err(HttpError::internal)?;
        let mut n = lock_node(&node)?;
        // Counted under the node lock, so concurrent submissions cannot pass it together.
        let in_flight = n
            .store()
            .in_flight(&request.publisher)
            .map_err(HttpError::internal)?;
        if in_flight >= quotas.max_jobs_in_flight {
            return Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ReasonCode::QuotaExceeded.as_str(),
                format!(
                    "this publisher has {in_flight} jobs in flight, the node's quota is {}; \
                     submit again when one has settled",
                    quotas.max_jobs_in_flight
                ),
            ));
        }
        n.audit(AuditEvent::new(
            AuditKind::AdminAction,
            AuditOutcome::Success,
            "job submitted through the API",
            ("api-client", role.as_str()),
            vec![crate::audit::job_object(body.request.job_id, None)],
        ))
        .map_err(HttpError::internal)?;
        n.submit_staged(staged, body.request).map_err(|e| {
            HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "submit-refused",
                e.to_string(),
            )
        })
    })
    .await?;
    drive(&state, job);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job.to_string() })),
    )
        .into_response())
}
