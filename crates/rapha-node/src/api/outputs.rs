//! What a job released: its receipt and its output files.

use super::*;

/// `GET /v1/jobs/{id}/receipt`.
pub(super) async fn receipt(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (_, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/receipt",
        super::auth::roles::RECEIPT_READERS,
        &id,
    )
    .await?;
    // Read through the API's kept read-only connections: answers while the node runs a job,
    // and a receipt poll never takes the store's write lock.
    let readers = Arc::clone(&state.readers);
    let r = blocking(move || {
        readers.with(|r| {
            r.artifact(job, crate::pipeline::artifact::RECEIPT)
                .map_err(HttpError::internal)?
                .map(|b| {
                    serde_json::from_slice::<rapha_receipt::ReceiptFile>(&b)
                        .map_err(HttpError::internal)
                })
                .transpose()
        })
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
    let (_, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/outputs",
        super::auth::roles::OUTPUT_READERS,
        &id,
    )
    .await?;
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
    let (caller, job) = authorize_job(
        &state,
        &headers,
        "/v1/jobs/{id}/outputs/{name}",
        super::auth::roles::OUTPUT_READERS,
        &id,
    )
    .await?;
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
    // The slot before the file: a caller over its limit costs the node no open file.
    let slot = DownloadSlot::take(&state, &caller)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found("no-such-output", "no released file of this name"))?;
    let len = file.metadata().await.map_err(HttpError::internal)?.len();
    let body = Download {
        file,
        left: len,
        deadline: Box::pin(tokio::time::sleep(state.downloads.send_timeout)),
        buf: vec![0; DOWNLOAD_CHUNK].into_boxed_slice(),
        _slot: slot,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::new(body),
    )
        .into_response())
}

/// Bytes read from a released file per chunk sent: what one download holds in memory besides
/// the connection's own buffers.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Who a download counts against: the publisher a token speaks for, or the hospital role.
pub(super) fn caller_key(caller: &Caller) -> String {
    match &caller.publisher {
        Some(p) => format!("publisher:{p}"),
        None => caller.role.as_str().to_owned(),
    }
}

/// One of a caller's download slots, given back when the download ends (sent, cut off, or
/// its connection closed).
struct DownloadSlot {
    slots: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    key: String,
}

impl DownloadSlot {
    fn take(state: &ApiState, caller: &Caller) -> ApiResult<Self> {
        let key = caller_key(caller);
        let limit = state.downloads.per_caller;
        let mut slots = state
            .download_slots
            .lock()
            .map_err(|_| HttpError::internal("download slots lock poisoned"))?;
        let taken = slots.entry(key.clone()).or_insert(0);
        if *taken >= limit {
            return Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-downloads",
                format!("{limit} downloads of this caller are under way; retry when one ends"),
            )
            .retry_after(DOWNLOAD_RETRY_AFTER));
        }
        *taken += 1;
        Ok(Self {
            slots: Arc::clone(&state.download_slots),
            key,
        })
    }
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(n) = slots.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    slots.remove(&self.key);
                }
            }
        }
    }
}

/// Seconds a caller refused `too-many-downloads` is told to wait.
const DOWNLOAD_RETRY_AFTER: u64 = 5;

/// A released file sent in chunks read as the connection takes them, ended (and its
/// connection closed) once the send time has run out.
struct Download {
    file: tokio::fs::File,
    left: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    buf: Box<[u8]>,
    _slot: DownloadSlot,
}

impl http_body::Body for Download {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the download's send time ran out",
            ))));
        }
        let want = usize::try_from(this.left).map_or(this.buf.len(), |l| l.min(this.buf.len()));
        let mut read = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut this.file), cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the released file shrank while it was sent",
                ))))
            }
            Poll::Ready(Ok(())) => {
                let chunk = Bytes::copy_from_slice(read.filled());
                this.left -= chunk.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}
