//! The node's HTTP API (`rapha-node serve`): a thin axum layer over [`crate::pipeline::Node`].
//!
//! The AI company uploads its signed bundle (`POST /v1/bundles`, a bundle archive, see
//! [`bundles`]) and then submits job requests that name it by manifest digest: it never names
//! a path on the node.
//!
//! Every route but `/healthz` checks a bearer token that names a role (publisher, DPO,
//! admin). A missing or unknown token is 401, a known token of the wrong role is 403; both are
//! logged and written to the audit trail, coalesced per route, role, reason and address
//! ([`denials`]). Errors are JSON `{"error": code, "message": ...}`.
//! Pipeline work is blocking and runs on tokio's blocking pool, so the API stays responsive
//! while a job runs: status and metrics read their own connection to the job store.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rapha_core::{JobId, JobRequest, ReasonCode};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt as _;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditKind, AuditOutcome};
use crate::pipeline::{Next as PipelineNext, Node, Step};
use crate::progress::{LiveRun, LiveRuns};
use crate::store::{JobReader, JobState, JobStore};

pub mod bundles;
pub mod serve;

mod approvals;
mod auth;
pub mod denials;
mod drive;
mod jobs;
mod log;
mod ops;
mod outputs;
mod passkeys;
mod publishers;
mod rate;
mod stall;
mod upload;

pub use approvals::MAX_REASON;
use approvals::{approve, pending_approvals, reject};
pub(crate) use approvals::{job_review, pending_reviews, reject_job};
pub(crate) use auth::roles;
use auth::{audit_later, authorize, authorize_job, parse_job};
pub use auth::{ApiError, Caller, Role, Tokens, MIN_TOKEN_LEN};
pub(crate) use drive::with_node;
use drive::{drive, lock_node, redrive_unfinished};
pub use drive::{lock_within, NODE_WAIT, REDRIVE_INTERVAL};
pub(crate) use jobs::hospital_view;
use jobs::{job_status, submit};
pub(crate) use log::with_log;
use log::{log_consistency, log_head, log_inclusion};
use ops::{healthz, metrics, openapi};
use outputs::{output_file, outputs, receipt};
pub use rate::{RateLimit, DEFAULT_PUBLISHER_BURST, DEFAULT_PUBLISHER_CALLS_PER_SEC};
pub(crate) use stall::Peer;
use upload::upload_bundle;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Default request body limit (a job request is a few KiB).
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest bundle upload (`POST /v1/bundles`): also the largest file and the largest sum of
/// files in the archive. Separate from (and far above) the JSON limit.
pub const BUNDLE_BODY_LIMIT: u64 = 2 << 30;

/// Time allowed for one bundle upload: receiving, unpacking, verifying and storing it.
pub const BUNDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Most entries in an uploaded bundle archive.
pub const BUNDLE_MAX_ENTRIES: u64 = 1024;

/// Bundle uploads processed at once; more are refused with 429 (each may write up to
/// [`BUNDLE_BODY_LIMIT`] to the state directory before it is verified).
pub const MAX_CONCURRENT_UPLOADS: usize = 2;

/// Per-publisher quotas: what one authenticated publisher may hold of the node at once.
/// Submissions and uploads past them are refused with `quota-exceeded` before anything is
/// stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Jobs not yet settled.
    pub max_jobs_in_flight: u64,
    /// Bytes of the publisher's bundles in the bundle store.
    pub max_bundle_bytes: u64,
}

/// Default jobs in flight per publisher.
pub const DEFAULT_MAX_JOBS_IN_FLIGHT: u64 = 4;

/// Default bytes of stored bundles per publisher (four of the largest uploads).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 4 * BUNDLE_BODY_LIMIT;

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_jobs_in_flight: DEFAULT_MAX_JOBS_IN_FLIGHT,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    node: Arc<Mutex<Node>>,
    pub(crate) store_path: Arc<PathBuf>,
    release_dir: Arc<PathBuf>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) readers: Arc<Readers>,
    pub(crate) bundles: Arc<bundles::BundleStore>,
    bundle_limit: u64,
    /// Progress of running trainers (the node writes it; read without the node lock).
    pub(crate) live: Arc<LiveRuns>,
    /// The receipt log, opened read-only per request (answers while a job holds the node).
    pub(crate) receipt_log: Arc<PathBuf>,
    uploads: Arc<tokio::sync::Semaphore>,
    /// Time allowed for one bundle upload ([`BUNDLE_TIMEOUT`] by default).
    bundle_timeout: Duration,
    /// Jobs a background task is driving, with "run one more round" flags.
    driving: Arc<Mutex<std::collections::HashMap<JobId, bool>>>,
    /// Events on their way to the audit trail (one writer thread, bounded queue, so a flood
    /// of bad tokens cannot pile up blocking tasks).
    denials: std::sync::mpsc::SyncSender<AuditEvent>,
    /// Refused calls, counted per route, role, reason and address ([`denials`]): a flood
    /// writes a bounded number of lines.
    refusals: Arc<Mutex<denials::Coalescer>>,
    quotas: Quotas,
    /// The node's working directory (submissions link their bundle under it before they take
    /// the node lock).
    pub(crate) work_dir: Arc<PathBuf>,
    /// Limits on downloads of released outputs.
    downloads: DownloadLimits,
    /// Downloads under way per caller ([`outputs::caller_key`]).
    download_slots: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    /// The rate of a publisher's calls, if limited ([`rate`]).
    publisher_rate: Option<rate::RateLimit>,
    /// Each publisher's bucket of calls.
    buckets: Arc<rate::Buckets>,
    /// The node's audit trail (read by the console's audit page; written through the node).
    pub(crate) audit_path: Arc<PathBuf>,
    /// The address of the node's signing key (the console verifies receipts against it).
    pub(crate) node_address: alloy::primitives::Address,
}

/// Limits on downloads of released outputs (`GET /v1/jobs/{id}/outputs/{name}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Downloads one caller (one publisher, or one hospital role) may have under way at once;
    /// more are refused with 429 `too-many-downloads`.
    pub per_caller: usize,
    /// Longest one download may take; its connection is closed after it.
    pub send_timeout: Duration,
    /// Longest any response (a download or not) may wait on a client that reads nothing;
    /// its connection is closed after it.
    pub stall_timeout: Duration,
}

/// Default concurrent downloads per caller.
pub const DEFAULT_DOWNLOADS_PER_CALLER: usize = 2;
/// Default send time of one download.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time a response may wait on a client that reads nothing.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            per_caller: DEFAULT_DOWNLOADS_PER_CALLER,
            send_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Refusals queued for the audit writer at most.
const DENIAL_QUEUE: usize = 1024;

impl ApiState {
    /// `store_path` is the job store the node uses (read by status and metrics through their
    /// own connection so they answer while a job runs). Uploaded bundles are stored in
    /// `bundles/` beside it (the node's state directory).
    pub fn new(node: Node, store_path: PathBuf, tokens: Tokens) -> Self {
        let release_dir = Arc::new(node.release_dir().to_owned());
        let store_path_for_readers = store_path.clone();
        let state_dir = store_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let bundles = Arc::new(bundles::BundleStore::new(
            state_dir.join("bundles"),
            node.trust().dir().to_owned(),
        ));
        let live = node.live();
        let work_dir = Arc::new(node.work_dir().to_owned());
        let receipt_log = Arc::new(node.receipt_log().path().to_owned());
        let audit_path = Arc::new(node.audit_path().to_owned());
        let node_address = node.node_address();
        let node = Arc::new(Mutex::new(node));
        let (denials, queue) = std::sync::mpsc::sync_channel::<AuditEvent>(DENIAL_QUEUE);
        let refusals = Arc::new(Mutex::new(denials::Coalescer::default()));
        let writer = Arc::clone(&node);
        let counted = Arc::clone(&refusals);
        // Ends when the last ApiState (and so the last sender) is gone, after writing the
        // counts of the windows still open.
        std::thread::spawn(move || {
            let write = |event: AuditEvent| {
                let written = writer.lock().map(|n| n.audit(event));
                if !matches!(written, Ok(Ok(()))) {
                    tracing::error!("could not write an API event to the audit trail");
                }
            };
            let closed = |drain: bool| {
                let mut c = counted.lock().unwrap_or_else(|p| p.into_inner());
                if drain {
                    c.drain()
                } else {
                    c.due(std::time::SystemTime::now())
                }
            };
            loop {
                match queue.recv_timeout(Duration::from_secs(1)) {
                    Ok(event) => write(event),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                closed(false).into_iter().for_each(write);
            }
            closed(true).into_iter().for_each(write);
        });
        Self {
            node,
            store_path: Arc::new(store_path),
            release_dir,
            tokens: Arc::new(tokens),
            readers: Arc::new(Readers {
                path: store_path_for_readers,
                idle: Mutex::new(Vec::new()),
            }),
            bundles,
            bundle_limit: BUNDLE_BODY_LIMIT,
            live,
            receipt_log,
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS)),
            bundle_timeout: BUNDLE_TIMEOUT,
            driving: Arc::default(),
            denials,
            refusals,
            quotas: Quotas::default(),
            work_dir,
            downloads: DownloadLimits::default(),
            download_slots: Arc::default(),
            publisher_rate: None,
            buckets: Arc::default(),
            audit_path,
            node_address,
        }
    }

    /// Sets the limits on downloads of released outputs (default [`DownloadLimits::default`]).
    #[must_use]
    pub fn with_download_limits(mut self, limits: DownloadLimits) -> Self {
        self.downloads = limits;
        self
    }

    /// Limits the rate of each publisher's calls (a publisher's reads are how it samples the
    /// node's latency). `ApiState::new` leaves it unlimited; `rapha-node serve` always sets
    /// `[api] publisher_calls_per_sec` and `publisher_call_burst`.
    #[must_use]
    pub fn with_publisher_rate(mut self, limit: RateLimit) -> Self {
        self.publisher_rate = Some(limit);
        self
    }

    /// Sets the per-publisher quotas (default [`Quotas::default`]).
    #[must_use]
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Sets the largest bundle upload accepted (default [`BUNDLE_BODY_LIMIT`]).
    #[must_use]
    pub fn with_bundle_limit(mut self, bytes: u64) -> Self {
        self.bundle_limit = bytes;
        self
    }

    /// Sets how many bundle uploads are processed at once (default
    /// [`MAX_CONCURRENT_UPLOADS`]).
    #[must_use]
    pub fn with_max_uploads(mut self, n: usize) -> Self {
        self.uploads = Arc::new(tokio::sync::Semaphore::new(n));
        self
    }

    /// Sets the time allowed for one bundle upload: receiving, unpacking, verifying and
    /// storing it (default [`BUNDLE_TIMEOUT`]).
    #[must_use]
    pub fn with_bundle_timeout(mut self, limit: Duration) -> Self {
        self.bundle_timeout = limit;
        self
    }

    /// Runs `f` on the node with its lock held, as a pipeline step does (blocking: call it
    /// from a thread, not an async task). `None` if the lock is poisoned.
    pub fn with_node_locked<T>(&self, f: impl FnOnce(&mut Node) -> T) -> Option<T> {
        self.node.lock().ok().map(|mut n| f(&mut n))
    }

    /// Stores uploaded bundles under `root` instead of `bundles/` beside the job store (e.g. on
    /// the bulk data disk; uploads are staged in the same directory so they move in by rename).
    #[must_use]
    pub fn with_bundle_dir(mut self, root: PathBuf) -> Self {
        let trust = self.bundles.trust_dir().to_owned();
        self.bundles = Arc::new(bundles::BundleStore::new(root, trust));
        self
    }

    /// Where uploaded bundles are stored.
    pub fn bundle_dir(&self) -> &Path {
        self.bundles.root()
    }
}

/// Read-only connections to the job store kept between requests: a status poll borrows one
/// instead of opening the database (opening costs far more than the read), and never waits
/// for the node lock or the pipeline's write transactions.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<JobReader>>,
}

/// Read-only connections kept idle at most (more are opened while more polls run at once).
const IDLE_READERS: usize = 8;

impl Readers {
    /// Runs `f` with a kept reader, or a new one when every kept reader is in use.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&JobReader) -> ApiResult<T>) -> ApiResult<T> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let reader = match kept {
            Some(r) => r,
            None => JobReader::open(&self.path).map_err(HttpError::internal)?,
        };
        let out = f(&reader);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < IDLE_READERS {
                idle.push(reader);
            }
        }
        out
    }
}

/// A typed JSON error response.
#[derive(Debug)]
pub struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds to wait before retrying (`Retry-After`), for a refusal of the caller's rate.
    retry_after: Option<u64>,
    /// A refusal for the audit trail (401/403), recorded with the caller's address by
    /// [`audit_refusals`].
    denial: Option<denials::Denial>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            denial: None,
        }
    }

    /// Marks the error as a refusal the audit trail records.
    pub(crate) fn audited(mut self, denial: denials::Denial) -> Self {
        self.denial = Some(denial);
        self
    }

    /// Tells the caller to retry after `secs` seconds.
    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            what.to_string(),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if let Some(denial) = self.denial {
            r.extensions_mut().insert(denial);
        }
        r
    }
}

pub(crate) type ApiResult<T> = Result<T, HttpError>;

/// Whether the request's Content-Type is `media` (type and subtype, case-insensitive; any
/// parameters after `;` are not looked at).
fn media_type_is(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// Parses a JSON body, mapping every failure to a typed error. The body must be declared
/// `Content-Type: application/json` (415 `unsupported-media-type` otherwise, before a byte of
/// it is parsed): a form or a plain-text body is never taken for JSON.
fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    if !media_type_is(headers, "application/json") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "this route takes a JSON body with Content-Type: application/json",
        ));
    }
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body exceeds the node's limit",
            )
        } else {
            HttpError::new(StatusCode::BAD_REQUEST, "bad-body", e.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("invalid JSON at {}: {}", e.path(), e.inner()),
        )
    })
}

/// Runs blocking work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(HttpError::internal)?
}

fn open_store(path: &Path) -> ApiResult<JobStore> {
    JobStore::open(path).map_err(HttpError::internal)
}

fn not_found(code: &'static str, message: &str) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, code, message)
}

/// Every route the router serves, as (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/bundles"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/approvals/pending"),
    ("post", "/v1/jobs/{id}/approve"),
    ("post", "/v1/jobs/{id}/reject"),
    ("post", "/v1/jobs/{id}/approval-challenge"),
    ("get", "/v1/dpo/credentials"),
    ("post", "/v1/dpo/credentials"),
    ("post", "/v1/dpo/credentials/options"),
    ("post", "/v1/dpo/credentials/enrol-challenge"),
    ("post", "/v1/dpo/credentials/{id}/revoke-challenge"),
    ("post", "/v1/dpo/credentials/{id}/revoke"),
    ("get", "/v1/jobs/{id}/receipt"),
    ("get", "/v1/jobs/{id}/outputs"),
    ("get", "/v1/jobs/{id}/outputs/{name}"),
    ("get", "/v1/log/head"),
    ("get", "/v1/log/inclusion"),
    ("get", "/v1/log/consistency"),
    ("get", "/v1/publishers/suspended"),
    ("post", "/v1/publishers/{name}/reinstate"),
];

/// Times a request out with a typed error.
async fn timeout(req: Request, next: Next) -> Response {
    time_limit(DEFAULT_TIMEOUT, req, next).await
}

/// Times a bundle upload out (a longer limit: the body is large).
async fn bundle_timeout(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    time_limit(state.bundle_timeout, req, next).await
}

async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the node did not answer in time; retry later",
        )
        .into_response(),
    }
}

/// The API's router: JSON routes with the JSON body limit and the default timeout, the bundle
/// upload with its own (its body is streamed and counted by the handler).
pub fn router(state: ApiState) -> Router {
    let uploads = Router::new()
        .route("/v1/bundles", post(upload_bundle))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bundle_timeout,
        ))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/approvals/pending", get(pending_approvals))
        .route("/v1/jobs/{id}/approve", post(approve))
        .route(
            "/v1/jobs/{id}/approval-challenge",
            post(passkeys::approval_challenge),
        )
        .route(
            "/v1/dpo/credentials",
            get(passkeys::list).post(passkeys::enrol),
        )
        .route(
            "/v1/dpo/credentials/options",
            post(passkeys::registration_options),
        )
        .route(
            "/v1/dpo/credentials/enrol-challenge",
            post(passkeys::enrol_challenge),
        )
        .route(
            "/v1/dpo/credentials/{id}/revoke-challenge",
            post(passkeys::revoke_challenge),
        )
        .route("/v1/dpo/credentials/{id}/revoke", post(passkeys::revoke))
        .route("/v1/jobs/{id}/reject", post(reject))
        .route("/v1/jobs/{id}/receipt", get(receipt))
        .route("/v1/jobs/{id}/outputs", get(outputs))
        .route("/v1/jobs/{id}/outputs/{name}", get(output_file))
        .route("/v1/log/head", get(log_head))
        .route("/v1/log/inclusion", get(log_inclusion))
        .route("/v1/log/consistency", get(log_consistency))
        .route("/v1/publishers/suspended", get(publishers::suspended))
        .route(
            "/v1/publishers/{name}/reinstate",
            post(publishers::reinstate),
        )
        .layer(axum::middleware::from_fn(timeout))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .merge(uploads)
        .method_not_allowed_fallback(|| async {
            HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take this method",
            )
        })
        .fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_refusals,
        ))
        .with_state(state)
}

/// Records a refused call (a response marked by [`HttpError::audited`]) with the caller's
/// address: the first of its kind goes to the audit trail at once, the rest are counted
/// ([`denials`]).
pub(crate) async fn audit_refusals(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<stall::Peer>>()
        .map_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |c| {
            c.0 .0.ip()
        });
    let response = next.run(req).await;
    if let Some(denial) = response.extensions().get::<denials::Denial>().copied() {
        let first = state
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(denial, source, std::time::SystemTime::now());
        if let Some(event) = first {
            tracing::warn!(
                route = denial.route,
                who = denial.who,
                %source,
                "API call refused ({}): {}; more from this address in the next minute are counted, not logged",
                response.status().as_u16(),
                denial.why
            );
            if state.denials.try_send(event).is_err() {
                tracing::error!(
                    route = denial.route,
                    "audit queue full or closed: an API refusal was not audited"
                );
            }
        }
    }
    response
}

/// Serves the API on `listener` until the process is stopped, re-driving unfinished jobs
/// every [`REDRIVE_INTERVAL`] in the background. A connection whose client leaves a response
/// unread for [`DownloadLimits::stall_timeout`] is closed.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    let watcher = tokio::spawn(redrive_unfinished(state.clone()));
    let listener = stall::StallListener::new(listener, state.downloads.stall_timeout);
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<stall::Peer>(),
    )
    .await;
    watcher.abort();
    served
}
