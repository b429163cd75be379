//! DPO routes: pending reviews, approve, reject.

use super::*;

/// `GET /v1/approvals/pending`: jobs waiting for a DPO, with their cohort summaries (counts
/// only: the summary type holds no identifier).
pub(super) async fn pending_approvals(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/approvals/pending",
        auth::roles::REVIEWERS,
    )?;
    let reviews = pending_reviews(&state).await?;
    let reviews = reviews
        .into_iter()
        .map(|(id, review)| {
            Ok(json!({
                "job_id": id.to_string(),
                "job_digest": review.job_digest().map_err(HttpError::internal)?,
                "publisher": review.job.publisher,
                "trainer": review.job.trainer,
                "linkage": review.job.linkage,
                "linkage_jobs": review.linkage_jobs,
                "cohort": review.cohort,
                "resources": review.resources,
                "image": review.image,
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "pending": reviews })))
}

/// Every job waiting for a DPO's decision with its review, oldest first (the API's pending
/// list and the console's queue).
pub(crate) async fn pending_reviews(
    state: &ApiState,
) -> ApiResult<Vec<(JobId, rapha_policy::ReviewRequest)>> {
    // Read through the API's own store connection: answers while the node runs a job.
    let path = Arc::clone(&state.store_path);
    blocking(move || {
        let store = open_store(&path)?;
        let mut out = Vec::new();
        for row in store.unfinished().map_err(HttpError::internal)? {
            if row.state != JobState::AwaitingApproval {
                continue;
            }
            let id = row.id;
            if let Some(review) = crate::pipeline::review_request(&store, id, row.request)
                .map_err(HttpError::internal)?
            {
                out.push((id, review));
            }
        }
        Ok(out)
    })
    .await
}

/// One job's review, if it has one (the console's job page).
pub(crate) async fn job_review(
    state: &ApiState,
    job: JobId,
) -> ApiResult<Option<rapha_policy::ReviewRequest>> {
    let path = Arc::clone(&state.store_path);
    blocking(move || {
        let store = open_store(&path)?;
        let row = match store.get(job) {
            Ok(row) => row,
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(not_found("unknown-job", "no job with this id"))
            }
            Err(e) => return Err(HttpError::internal(e)),
        };
        crate::pipeline::review_request(&store, job, row.request).map_err(HttpError::internal)
    })
    .await
}

/// `POST /v1/jobs/{id}/approve`: a DPO approval of the job's digest, in one of two shapes
/// told apart by their members: an Ed25519 approval signed offline with the DPO key file
/// (`rapha_policy::Approval`; whether the key is one of the hospital's DPO keys is the
/// pipeline's check), or `{"passkey": assertion}`, a DPO passkey's WebAuthn assertion over the
/// challenge of `POST /v1/jobs/{id}/approval-challenge` (verified here, its nonce consumed).
pub(super) async fn approve(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (_, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/approve",
        auth::roles::DPO,
        &id,
    )
    .await?;
    let value: serde_json::Value = parse_json(&headers, body)?;
    if value.get("passkey").is_some() {
        let body: super::passkeys::PasskeyApprove = from_value(value)?;
        super::passkeys::approve_passkey(&state, job, body).await?;
        drive(&state, job);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": job.to_string() })),
        )
            .into_response());
    }
    let approval: rapha_policy::Approval = from_value(value)?;
    let required = with_node(&state, |n| Ok(n.passkey_required())).await?;
    if required {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "passkey-required",
            "this node accepts DPO approvals by passkey only ([approval] require_passkey); \
             approve with `{\"passkey\": …}`",
        ));
    }
    approval.verify().map_err(|e| {
        HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-signature",
            e.to_string(),
        )
    })?;
    with_node(&state, move |n| {
        let digest = n
            .review_digest(job)
            .map_err(HttpError::internal)?
            .ok_or_else(|| not_found("no-review", "this job has no cohort under review"))?;
        if digest != approval.job_digest {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                "digest-mismatch",
                "the approval is for another job digest; review the job again",
            ));
        }
        n.approvals().record(&approval).map_err(HttpError::internal)
    })
    .await?;
    drive(&state, job);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job.to_string() })),
    )
        .into_response())
}

/// `POST /v1/jobs/{id}/reject` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectBody {
    /// Why, in words for the AI company (no patient data).
    reason: String,
}

/// Longest rejection reason accepted.
pub const MAX_REASON: usize = 500;

/// `POST /v1/jobs/{id}/reject`: the DPO refuses a job waiting for approval.
pub(super) async fn reject(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (_, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/reject",
        auth::roles::DPO,
        &id,
    )
    .await?;
    let body: RejectBody = parse_json(&headers, body)?;
    reject_job(&state, job, body.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job.to_string() })),
    )
        .into_response())
}

/// A DPO's rejection of `job` with `reason` (the API's reject route and the console's form):
/// the reason checked, the job ended as refused, and the background driver told.
pub(crate) async fn reject_job(state: &ApiState, job: JobId, reason: String) -> ApiResult<()> {
    if reason.trim().is_empty() || reason.len() > MAX_REASON {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-reason",
            format!("a rejection needs a reason of 1 to {MAX_REASON} bytes"),
        ));
    }
    let rejected = with_node(state, move |n| match n.reject(job, reason.trim()) {
        Ok(done) => Ok(done),
        Err(crate::pipeline::PipelineError::Store(crate::store::StoreError::NotFound(_))) => {
            Err(not_found("unknown-job", "no job with this id"))
        }
        Err(e) => Err(HttpError::internal(e)),
    })
    .await?;
    if !rejected {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "not-awaiting-approval",
            "the job is not waiting for a DPO decision",
        ));
    }
    drive(state, job);
    Ok(())
}

/// A JSON value as the body type, with [`parse_json`]'s error (the path of what is wrong).
fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("invalid JSON at {}: {}", e.path(), e.inner()),
        )
    })
}
