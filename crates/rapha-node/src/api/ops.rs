//! Operations routes: `/healthz`, `/openapi.json`, `/metrics`.

use super::*;

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn openapi(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(
        &state,
        &headers,
        "/openapi.json",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

pub(super) async fn metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers, "/metrics", &[Role::Admin])?;
    let path = Arc::clone(&state.store_path);
    let counts = blocking(move || {
        open_store(&path)?
            .counts_by_state()
            .map_err(HttpError::internal)
    })
    .await?;
    let mut text = String::from(
        "# HELP rapha_jobs Jobs in the node's store, by state.\n# TYPE rapha_jobs gauge\n",
    );
    for s in &JobState::ALL {
        let n = counts.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
        text.push_str(&format!("rapha_jobs{{state=\"{}\"}} {n}\n", s.as_str()));
    }
    // Live: moved by the runtime's reports while trainers run, not only when they exit.
    let live = &state.live;
    text.push_str(&format!(
        "# HELP rapha_trainers_running Trainers running now.\n\
         # TYPE rapha_trainers_running gauge\n\
         rapha_trainers_running {}\n\
         # HELP rapha_records_fed_total Records fed to trainers (repeats included) since the node started.\n\
         # TYPE rapha_records_fed_total counter\n\
         rapha_records_fed_total {}\n\
         # HELP rapha_record_bytes_fed_total Decoded pixel bytes fed to trainers since the node started.\n\
         # TYPE rapha_record_bytes_fed_total counter\n\
         rapha_record_bytes_fed_total {}\n",
        live.running(),
        live.records_fed_total(),
        live.bytes_fed_total(),
    ));
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
