//! Suspended publishers: the DPO's list, and the DPO's reinstatement after reviewing the
//! violation that suspended a publisher.

use super::*;

/// `GET /v1/publishers/suspended`: every suspended publisher, with the job that suspended it.
pub(super) async fn suspended(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/publishers/suspended",
        &[Role::Dpo, Role::Admin],
    )?;
    let path = Arc::clone(&state.store_path);
    let list = blocking(move || {
        open_store(&path)?
            .suspensions()
            .map_err(HttpError::internal)
    })
    .await?;
    Ok(Json(json!({ "suspended": list })))
}

/// `POST /v1/publishers/{name}/reinstate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReinstateBody {
    /// What the DPO's review found (goes to the audit trail).
    reason: String,
}

/// `POST /v1/publishers/{name}/reinstate`: a DPO lifts a publisher's suspension, with a reason.
pub(super) async fn reinstate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/publishers/{name}/reinstate",
        &[Role::Dpo],
    )?;
    let body: ReinstateBody = parse_json(&headers, body)?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() || reason.len() > MAX_REASON {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-reason",
            format!("a reinstatement needs a reason of 1 to {MAX_REASON} bytes"),
        ));
    }
    let lifted = with_node(&state, move |n| {
        n.reinstate(&name, "api-dpo", &reason)
            .map_err(HttpError::internal)
    })
    .await?;
    let lifted = lifted.ok_or_else(|| {
        HttpError::new(
            StatusCode::CONFLICT,
            "not-suspended",
            "this publisher is not suspended",
        )
    })?;
    Ok(Json(json!({ "reinstated": lifted })))
}
