//! What a job released: its receipt and its output files.

use super::*;

/// `GET /v1/jobs/{id}/receipt`.
pub(super) async fn receipt(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/jobs/{id}/receipt",
        &[Role::Publisher, Role::Admin],
    )?;
    let job = parse_job(&id)?;
    check_owner(&state, &caller, job).await?;
    // Read through the API's own store connection: answers while the node runs a job.
    let path = Arc::clone(&state.store_path);
    let r = blocking(move || {
        open_store(&path)?
            .artifact(job, crate::pipeline::artifact::RECEIPT)
            .map_err(HttpError::internal)?
            .map(|b| {
                serde_json::from_slice::<rapha_receipt::ReceiptFile>(&b)
                    .map_err(HttpError::internal)
            })
            .transpose()
    })
    .await?;
    let r = r.ok_or_else(|| not_found("no-receipt", "this job has no receipt (yet)"))?;
    Ok(Json(serde_json::to_value(r).map_err(HttpError::internal)?))
}

pub(super) fn release_dir(state: &ApiState, job: JobId) -> ApiResult<PathBuf> {
    Ok(state.release_dir.join(job.to_string()))
}

/// `GET /v1/jobs/{id}/outputs`: the released files.
pub(super) async fn outputs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/jobs/{id}/outputs",
        &[Role::Publisher, Role::Admin],
    )?;
    let job = parse_job(&id)?;
    check_owner(&state, &caller, job).await?;
    let dir = release_dir(&state, job)?;
    let files = blocking(move || {
        let entries = std::fs::read_dir(&dir)
            .map_err(|_| not_found("not-released", "this job has released nothing"))?;
        let mut files = Vec::new();
        for e in entries {
            let e = e.map_err(HttpError::internal)?;
            let meta = e.metadata().map_err(HttpError::internal)?;
            if meta.is_file() {
                files.push(json!({
                    "name": e.file_name().to_string_lossy(),
                    "bytes": meta.len(),
                }));
            }
        }
        Ok(files)
    })
    .await?;
    Ok(Json(json!({ "job_id": job.to_string(), "files": files })))
}

/// `GET /v1/jobs/{id}/outputs/{name}`: one released file.
pub(super) async fn output_file(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> ApiResult<Response> {
    let caller = authorize(
        &state,
        &headers,
        "/v1/jobs/{id}/outputs/{name}",
        &[Role::Publisher, Role::Admin],
    )?;
    let job = parse_job(&id)?;
    check_owner(&state, &caller, job).await?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !plain {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-file-name",
            "a released file name is a plain name",
        ));
    }
    let path = release_dir(&state, job)?.join(&name);
    let bytes = blocking(move || {
        std::fs::read(&path)
            .map_err(|_| not_found("no-such-output", "no released file of this name"))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
