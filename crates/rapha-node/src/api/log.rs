//! The transparency log: signed head, inclusion and consistency proofs.

use super::*;

/// `GET /v1/log/head`: the receipt log's latest signed tree head.
pub(super) async fn log_head(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/log/head",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    let head = with_log(&state, |log| log.latest_head().map_err(HttpError::internal)).await?;
    let size = head.as_ref().map_or(0, |h| h.tree_size);
    Ok(Json(json!({ "tree_size": size, "head": head })))
}

/// Runs `f` on a read-only handle to the receipt log as it stands now, on the blocking pool:
/// no node lock, so an auditor's proof is answered while a job's trainer runs.
pub(crate) async fn with_log<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&rapha_receipt::ReceiptLog) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let path = Arc::clone(&state.receipt_log);
    blocking(move || {
        let log = rapha_receipt::ReceiptLog::open_read_only(&path).map_err(HttpError::internal)?;
        f(&log)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct InclusionQuery {
    index: u64,
    size: u64,
}

#[derive(Deserialize)]
pub(super) struct ConsistencyQuery {
    old: u64,
    new: u64,
}

pub(super) fn bad_proof(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "bad-proof-request", e.to_string())
}

/// `GET /v1/log/inclusion?index=&size=`.
pub(super) async fn log_inclusion(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/log/inclusion",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    let q = query.map_err(|e| bad_proof(e.body_text()))?.0;
    let proof = with_log(&state, move |log| {
        log.inclusion_proof(q.index, q.size).map_err(bad_proof)
    })
    .await?;
    Ok(Json(
        json!({ "index": q.index, "tree_size": q.size, "proof": proof }),
    ))
}

/// `GET /v1/log/consistency?old=&new=`.
pub(super) async fn log_consistency(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/log/consistency",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    let q = query.map_err(|e| bad_proof(e.body_text()))?.0;
    let proof = with_log(&state, move |log| {
        log.consistency_proof(q.old, q.new).map_err(bad_proof)
    })
    .await?;
    Ok(Json(json!({ "old": q.old, "new": q.new, "proof": proof })))
}
