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
    let job = parse_job(&id)?;
    // One kept read-only connection: no node lock, no database open per poll. Read in place,
    // not on the blocking pool: a point read of a WAL store never waits for the pipeline's
    // writes and costs less than the hand-off (bench/node.sh: about twice the polls per
    // second, a third of the p99).
    let (row, records, finished) = state.readers.with(|r| {
        let row = match r.get(job) {
            Ok(row) => row,
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(not_found("unknown-job", "no job with this id"))
            }
            Err(e) => return Err(HttpError::internal(e)),
        };
        let records = records_progress(r, job)?;
        let finished = r.finished(job).map_err(HttpError::internal)?;
        Ok((row, records, finished))
    })?;
    // A publisher sees only its own jobs (the check of check_owner, on the row just read,
    // before anything of it is returned).
    if caller
        .publisher
        .as_ref()
        .is_some_and(|p| *p != row.request.publisher)
    {
        return Err(not_found("unknown-job", "no job with this id"));
    }
    let progress = JobState::ALL
        .iter()
        .position(|s| *s == row.state)
        .unwrap_or(0);
    let mut records = records;
    let run = (row.state == JobState::Running)
        .then(|| state.live.get(job))
        .flatten();
    if let Some(r) = &run {
        // While the trainer runs, the distinct records fed so far (the final figure is the
        // signed manifest's, read above once the run has ended).
        records["fed"] = json!(r.progress.distinct_fed);
    }
    let run = run.map(|r| run_json(&r, caller.role));
    Ok(Json(json!({
        "job_id": row.id.to_string(),
        "state": row.state,
        // Released (completed and paid) or settled (everything else): nothing more will happen.
        "finished": finished,
        "progress": { "step": progress, "of": JobState::ALL.len() },
        "records": records,
        "run": run,
        "outcome": row.outcome,
        "reason": row.reason,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })))
}

/// A running trainer's progress as `GET /v1/jobs/{id}` shows it: numbers only.
///
/// The publisher sees what the node measured and bounds (distinct records fed, elapsed time,
/// the wall-time limit). The fetch count and the trainer's self-reported figures are numbers a
/// trainer chooses while it runs: shown to the publisher they would be a channel out of the
/// hospital that bypasses the output guard (I4), so only the hospital's roles see them.
pub(super) fn run_json(run: &LiveRun, role: Role) -> serde_json::Value {
    let p = &run.progress;
    let mut v = json!({
        "distinct_records_fed": p.distinct_fed,
        "elapsed_secs": run.elapsed_secs(),
        "wall_limit_secs": p.wall_limit.as_secs(),
    });
    if role != Role::Publisher {
        v["records_fetched"] = json!(p.fetches);
        v["self_reported"] = p
            .self_reported
            .as_ref()
            .map_or(serde_json::Value::Null, |s| {
                // Numbers only: never a string the trainer wrote (metric names included).
                json!({
                    "epoch": s.epoch,
                    "step": s.step,
                    "loss": s.loss.filter(|l| l.is_finite()),
                })
            });
    }
    v
}

/// Instances in the built cohort and instances fed to the trainer (null until known), from the
/// pipeline's stored artifacts: counts only.
pub(super) fn records_progress(store: &JobReader, job: JobId) -> ApiResult<serde_json::Value> {
    #[derive(Deserialize)]
    struct Cohort {
        instances: u64,
    }
    #[derive(Deserialize)]
    struct Run {
        records_fed: u64,
    }
    let read = |kind: &str| store.artifact(job, kind).map_err(HttpError::internal);
    let cohort = read(crate::pipeline::artifact::COHORT_SUMMARY)?
        .and_then(|b| serde_json::from_slice::<Cohort>(&b).ok())
        .map(|c| c.instances);
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
    let body: SubmitBody = parse_json(body)?;
    if caller
        .publisher
        .as_ref()
        .is_some_and(|p| *p != body.request.publisher)
    {
        audit_denial(
            &state,
            "/v1/jobs",
            "publisher",
            "job request names another publisher",
        );
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a publisher token submits only its own publisher's jobs",
        ));
    }
    let role = caller.role;
    let node = Arc::clone(&state.node);
    let store = Arc::clone(&state.bundles);
    let job = blocking(move || {
        let request = &body.request;
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
        let mut n = lock_node(&node)?;
        n.audit(AuditEvent::new(
            AuditKind::AdminAction,
            AuditOutcome::Success,
            "job submitted through the API",
            ("api-client", role.as_str()),
            vec![crate::audit::job_object(body.request.job_id, None)],
        ))
        .map_err(HttpError::internal)?;
        n.submit(&bundle_dir, body.request).map_err(|e| {
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
