//! The node's HTTP API (`rapha-node serve`): a thin axum layer over [`crate::pipeline::Node`].
//!
//! The AI company uploads its signed bundle (`POST /v1/bundles`, a bundle archive, see
//! [`bundles`]) and then submits job requests that name it by manifest digest: it never names
//! a path on the node.
//!
//! Every route but `/healthz` checks a bearer token that names a role (publisher, DPO,
//! admin). A missing or unknown token is 401, a known token of the wrong role is 403; both are
//! logged and written to the audit trail. Errors are JSON `{"error": code, "message": ...}`.
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
use rapha_core::{JobId, JobRequest};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt as _;
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditKind, AuditOutcome};
use crate::pipeline::Node;
use crate::progress::{LiveRun, LiveRuns};
use crate::store::{JobReader, JobState, JobStore};

pub mod bundles;
pub mod serve;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("api/openapi.json");

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

/// Who a caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The AI company: submits jobs, reads their status, receipts and released outputs.
    Publisher,
    /// The data protection officer: reviews, approves or rejects cohorts.
    Dpo,
    /// The hospital's operator: metrics, logs, every job.
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Publisher => "publisher",
            Self::Dpo => "dpo",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "publisher" => Some(Self::Publisher),
            "dpo" => Some(Self::Dpo),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Errors loading the token file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("cannot read the API token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "API token file line {line}: {what} (expected `<dpo|admin> <token>` or \
         `publisher <token> <publisher-name>`)"
    )]
    TokenLine { line: usize, what: &'static str },
    #[error("the API token file defines no token: nobody could call the API")]
    NoTokens,
}

/// Per-role bearer tokens. Never printed.
pub struct Tokens {
    /// (role, the publisher a publisher token speaks for, token).
    entries: Vec<(Role, Option<String>, Zeroizing<Vec<u8>>)>,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    /// For a publisher token: the publisher (trust-store name) it speaks for.
    pub publisher: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

/// Tokens shorter than this are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 32;

impl Tokens {
    /// Parses `<role> <token>` lines (`publisher <token> <publisher-name>` for publishers: a
    /// publisher sees only its own jobs); `#` starts a comment.
    ///
    /// # Errors
    /// [`ApiError::TokenLine`] for an unknown role, a missing or short token;
    /// [`ApiError::NoTokens`] when no line defines one.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let line_no = i + 1;
            let mut parts = line.split_whitespace();
            let role = parts
                .next()
                .and_then(Role::parse)
                .ok_or(ApiError::TokenLine {
                    line: line_no,
                    what: "unknown role",
                })?;
            let token = parts.next().ok_or(ApiError::TokenLine {
                line: line_no,
                what: "missing token",
            })?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(ApiError::TokenLine {
                    line: line_no,
                    what: "token shorter than 32 characters",
                });
            }
            let publisher = if role == Role::Publisher {
                Some(parts.next().map(str::to_owned).ok_or(ApiError::TokenLine {
                    line: line_no,
                    what: "a publisher token needs the publisher's name after it",
                })?)
            } else {
                None
            };
            if parts.next().is_some() {
                return Err(ApiError::TokenLine {
                    line: line_no,
                    what: "trailing text after the token",
                });
            }
            entries.push((role, publisher, Zeroizing::new(token.as_bytes().to_vec())));
        }
        if entries.is_empty() {
            return Err(ApiError::NoTokens);
        }
        Ok(Self { entries })
    }

    /// Loads a token file.
    ///
    /// # Errors
    /// As [`Tokens::parse`], or [`ApiError::TokenFile`].
    pub fn load(path: &Path) -> Result<Self, ApiError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ApiError::TokenFile {
                path: path.to_owned(),
                source,
            }
        })?);
        Self::parse(&text)
    }

    /// The role of `presented`, comparing against every token in constant time.
    fn caller(&self, presented: &[u8]) -> Option<Caller> {
        let mut found = None;
        for (role, publisher, token) in &self.entries {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(Caller {
                    role: *role,
                    publisher: publisher.clone(),
                });
            }
        }
        found
    }
}

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    node: Arc<Mutex<Node>>,
    store_path: Arc<PathBuf>,
    release_dir: Arc<PathBuf>,
    tokens: Arc<Tokens>,
    readers: Arc<Readers>,
    bundles: Arc<bundles::BundleStore>,
    bundle_limit: u64,
    /// Progress of running trainers (the node writes it; read without the node lock).
    live: Arc<LiveRuns>,
    /// The receipt log, opened read-only per request (answers while a job holds the node).
    receipt_log: Arc<PathBuf>,
    uploads: Arc<tokio::sync::Semaphore>,
    /// Jobs a background task is driving, with "run one more round" flags.
    driving: Arc<Mutex<std::collections::HashMap<JobId, bool>>>,
    /// Refused calls on their way to the audit trail (one writer thread, bounded queue, so
    /// a flood of bad tokens cannot pile up blocking tasks).
    denials: std::sync::mpsc::SyncSender<AuditEvent>,
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
        let receipt_log = Arc::new(node.receipt_log().path().to_owned());
        let node = Arc::new(Mutex::new(node));
        let (denials, queue) = std::sync::mpsc::sync_channel::<AuditEvent>(DENIAL_QUEUE);
        let writer = Arc::clone(&node);
        // Ends when the last ApiState (and so the last sender) is gone.
        std::thread::spawn(move || {
            for event in queue {
                let written = writer.lock().map(|n| n.audit(event));
                if !matches!(written, Ok(Ok(()))) {
                    tracing::error!("could not write an API refusal to the audit trail");
                }
            }
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
            driving: Arc::default(),
            denials,
        }
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
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<JobReader>>,
}

/// Read-only connections kept idle at most (more are opened while more polls run at once).
const IDLE_READERS: usize = 8;

impl Readers {
    /// Runs `f` with a kept reader, or a new one when every kept reader is in use.
    fn with<T>(&self, f: impl FnOnce(&JobReader) -> ApiResult<T>) -> ApiResult<T> {
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
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(what: impl std::fmt::Display) -> Self {
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
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, HttpError>;

/// Checks the bearer token against the roles allowed on `route`.
fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    route: &str,
    allowed: &[Role],
) -> ApiResult<Caller> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = presented.and_then(|t| state.tokens.caller(t.as_bytes()));
    match caller.map(|c| (c.role, c)) {
        None => {
            tracing::warn!(route, "API call without a valid token refused (401)");
            audit_denial(
                state,
                route,
                "unauthenticated",
                "missing or unknown bearer token",
            );
            Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ))
        }
        Some((role, _)) if !allowed.contains(&role) => {
            tracing::warn!(
                route,
                role = role.as_str(),
                "API call by the wrong role refused (403)"
            );
            audit_denial(
                state,
                route,
                role.as_str(),
                "role not allowed on this route",
            );
            Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {} role may not call {route}", role.as_str()),
            ))
        }
        Some((_, caller)) => Ok(caller),
    }
}

/// Queues a denied call for the audit trail (the node may be busy with a job).
fn audit_denial(state: &ApiState, route: &str, who: &str, why: &str) {
    let event = AuditEvent::new(
        AuditKind::Refusal,
        AuditOutcome::MinorFailure,
        format!("API call to {route} refused: {why}"),
        ("api-client", who),
        Vec::new(),
    );
    if state.denials.try_send(event).is_err() {
        tracing::error!(
            route,
            "audit queue full or closed: an API refusal was not audited"
        );
    }
}

/// Queues an event for the audit trail from a blocking task (waits if the queue is full).
fn audit_later(state: &ApiState, event: AuditEvent) {
    if state.denials.send(event).is_err() {
        tracing::error!("audit writer gone: an API event was not audited");
    }
}

/// Parses a JSON body, mapping every failure to a typed error.
fn parse_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
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

/// A publisher sees only its own jobs; another publisher's job is "unknown" to it (its
/// existence is not revealed). The DPO and the admin see every job.
async fn check_owner(state: &ApiState, caller: &Caller, job: JobId) -> ApiResult<()> {
    let Some(publisher) = caller.publisher.clone() else {
        return Ok(());
    };
    let readers = Arc::clone(&state.readers);
    blocking(move || {
        readers.with(|r| match r.get(job) {
            Ok(row) if row.request.publisher == publisher => Ok(()),
            Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
                Err(not_found("unknown-job", "no job with this id"))
            }
            Err(e) => Err(HttpError::internal(e)),
        })
    })
    .await
}

fn parse_job(id: &str) -> ApiResult<JobId> {
    id.parse().map_err(|_| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-job-id",
            "the job id is not a valid job id",
        )
    })
}

/// Runs blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(HttpError::internal)?
}

fn open_store(path: &Path) -> ApiResult<JobStore> {
    JobStore::open(path).map_err(HttpError::internal)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi(State(state): State<ApiState>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(
        &state,
        &headers,
        "/openapi.json",
        &[Role::Publisher, Role::Dpo, Role::Admin],
    )?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> ApiResult<Response> {
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

async fn job_status(
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
    let (row, records) = state.readers.with(|r| {
        let row = match r.get(job) {
            Ok(row) => row,
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(not_found("unknown-job", "no job with this id"))
            }
            Err(e) => return Err(HttpError::internal(e)),
        };
        let records = records_progress(r, job)?;
        Ok((row, records))
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
fn run_json(run: &LiveRun, role: Role) -> serde_json::Value {
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
fn records_progress(store: &JobReader, job: JobId) -> ApiResult<serde_json::Value> {
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
struct SubmitBody {
    request: JobRequest,
}

async fn submit(
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

/// `POST /v1/bundles`: a bundle archive (`application/x-tar`), streamed to a staging
/// directory, unpacked strictly, verified against the trust store and stored by publisher and
/// manifest digest. 201 when stored now, 200 when this exact bundle was already stored.
async fn upload_bundle(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    const ROUTE: &str = "/v1/bundles";
    let caller = authorize(&state, &headers, ROUTE, &[Role::Publisher, Role::Admin])?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/x-tar")) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "a bundle upload is a bundle archive with Content-Type: application/x-tar",
        ));
    }
    let limit = state.bundle_limit;
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a bundle upload is limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let _permit = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-uploads",
                "the node is receiving other bundles; retry in a minute",
            )
        })?;

    let store = Arc::clone(&state.bundles);
    let staging = blocking(move || store.staging().map_err(HttpError::internal)).await?;
    let path = staging.archive();
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(HttpError::internal)?;
    let mut body = body;
    let mut received: u64 = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                format!("the upload broke off: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            file.write_all(&data).await.map_err(HttpError::internal)?;
        }
    }
    file.sync_all().await.map_err(HttpError::internal)?;
    drop(file);

    let store = Arc::clone(&state.bundles);
    let token_publisher = caller.publisher.clone();
    let limits = rapha_bundle::ArchiveLimits {
        max_entries: BUNDLE_MAX_ENTRIES,
        max_file_bytes: limit,
        max_total_bytes: limit,
    };
    let outcome = blocking(move || {
        let result = store.accept(&staging, &limits, token_publisher.as_deref());
        drop(staging);
        Ok(result)
    })
    .await?;
    let role = caller.role.as_str();
    let stored = match outcome {
        Ok(stored) => stored,
        Err(e) => {
            let (status, code) = match &e {
                bundles::UploadError::Archive(_) => (StatusCode::BAD_REQUEST, "bad-archive"),
                bundles::UploadError::Refused(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused")
                }
                bundles::UploadError::OtherPublisher { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                _ => return Err(HttpError::internal(e)),
            };
            tracing::warn!(route = ROUTE, role, code, error = %e, "bundle upload refused");
            let st = state.clone();
            let event = AuditEvent::new(
                AuditKind::Refusal,
                AuditOutcome::MinorFailure,
                format!("bundle upload refused ({code})"),
                ("api-client", role),
                Vec::new(),
            );
            blocking(move || {
                audit_later(&st, event);
                Ok(())
            })
            .await?;
            return Err(HttpError::new(status, code, e.to_string()));
        }
    };
    let digest = stored.manifest.to_oci();
    tracing::info!(
        manifest = %digest,
        publisher = %stored.publisher,
        created = stored.created,
        "bundle uploaded"
    );
    let event = AuditEvent::new(
        AuditKind::AdminAction,
        AuditOutcome::Success,
        if stored.created {
            "bundle uploaded and stored through the API"
        } else {
            "bundle uploaded through the API (already stored)"
        },
        ("api-client", role),
        vec![crate::audit::ParticipantObject {
            id_type_code: "bundle-manifest".into(),
            id: digest.clone(),
            detail: Some(format!(
                "publisher {} trainer {} {}",
                stored.publisher, stored.trainer, stored.trainer_version
            )),
        }],
    );
    let st = state.clone();
    blocking(move || {
        audit_later(&st, event);
        Ok(())
    })
    .await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "bundle_manifest": digest,
            "publisher": stored.publisher,
            "trainer": stored.trainer,
            "trainer_version": stored.trainer_version,
        })),
    )
        .into_response())
}

/// Drives `job` until it blocks, in the background. At most one task drives a job: a call
/// while one is under way asks it for one more round instead (so an approval that lands just
/// as a round ends is not missed, and a flood of calls cannot pile up blocked tasks).
fn drive(state: &ApiState, job: JobId) {
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
        match node.lock() {
            Ok(mut n) => match n.run_until_blocked(job) {
                Ok(s) => tracing::debug!(%job, state = s.as_str(), "job waits"),
                Err(e) => tracing::error!(%job, error = %e, "job step failed"),
            },
            Err(_) => tracing::error!(%job, "node lock poisoned; job not driven"),
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

/// How often `serve` re-drives unfinished jobs: a deposit or a settlement confirms on the
/// chain, and a DPO may approve with `rapha-node approvals` instead of the API, without a
/// request reaching the API.
pub const REDRIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Re-drives every unfinished job each [`REDRIVE_INTERVAL`] (one task per job at most).
async fn redrive_unfinished(state: ApiState) {
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
fn lock_node(node: &Mutex<Node>) -> ApiResult<std::sync::MutexGuard<'_, Node>> {
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
async fn with_node<T: Send + 'static>(
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

fn not_found(code: &'static str, message: &str) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, code, message)
}

/// `GET /v1/approvals/pending`: jobs waiting for a DPO, with their cohort summaries (counts
/// only: the summary type holds no identifier).
async fn pending_approvals(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(
        &state,
        &headers,
        "/v1/approvals/pending",
        &[Role::Dpo, Role::Admin],
    )?;
    // Read through the API's own store connection: answers while the node runs a job.
    let path = Arc::clone(&state.store_path);
    let reviews = blocking(move || {
        let store = open_store(&path)?;
        let mut out = Vec::new();
        for row in store.unfinished().map_err(HttpError::internal)? {
            if row.state != JobState::AwaitingApproval {
                continue;
            }
            let Some(bytes) = store
                .artifact(row.id, crate::pipeline::artifact::COHORT_SUMMARY)
                .map_err(HttpError::internal)?
            else {
                continue;
            };
            let review = rapha_policy::ReviewRequest {
                cohort: serde_json::from_slice(&bytes).map_err(HttpError::internal)?,
                job: row.request,
            };
            out.push(json!({
                "job_id": row.id.to_string(),
                "job_digest": review.job_digest(),
                "publisher": review.job.publisher,
                "trainer": review.job.trainer,
                "cohort": review.cohort,
            }));
        }
        Ok(out)
    })
    .await?;
    Ok(Json(json!({ "pending": reviews })))
}

/// `POST /v1/jobs/{id}/approve`: a DPO approval (signed offline with the DPO key) of the
/// job's digest. Whether the key is one of the hospital's DPO keys is the pipeline's check.
async fn approve(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers, "/v1/jobs/{id}/approve", &[Role::Dpo])?;
    let job = parse_job(&id)?;
    let approval: rapha_policy::Approval = parse_json(body)?;
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
struct RejectBody {
    /// Why, in words for the AI company (no patient data).
    reason: String,
}

/// Longest rejection reason accepted.
pub const MAX_REASON: usize = 500;

/// `POST /v1/jobs/{id}/reject`: the DPO refuses a job waiting for approval.
async fn reject(
    State(state): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers, "/v1/jobs/{id}/reject", &[Role::Dpo])?;
    let job = parse_job(&id)?;
    let body: RejectBody = parse_json(body)?;
    if body.reason.trim().is_empty() || body.reason.len() > MAX_REASON {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-reason",
            format!("a rejection needs a reason of 1 to {MAX_REASON} bytes"),
        ));
    }
    let rejected = with_node(&state, move |n| match n.reject(job, body.reason.trim()) {
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
    drive(&state, job);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job.to_string() })),
    )
        .into_response())
}

/// `GET /v1/jobs/{id}/receipt`.
async fn receipt(
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

fn release_dir(state: &ApiState, job: JobId) -> ApiResult<PathBuf> {
    Ok(state.release_dir.join(job.to_string()))
}

/// `GET /v1/jobs/{id}/outputs`: the released files.
async fn outputs(
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
async fn output_file(
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

/// `GET /v1/log/head`: the receipt log's latest signed tree head.
async fn log_head(
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
async fn with_log<T: Send + 'static>(
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
struct InclusionQuery {
    index: u64,
    size: u64,
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    old: u64,
    new: u64,
}

fn bad_proof(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "bad-proof-request", e.to_string())
}

/// `GET /v1/log/inclusion?index=&size=`.
async fn log_inclusion(
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
async fn log_consistency(
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
    ("get", "/v1/jobs/{id}/receipt"),
    ("get", "/v1/jobs/{id}/outputs"),
    ("get", "/v1/jobs/{id}/outputs/{name}"),
    ("get", "/v1/log/head"),
    ("get", "/v1/log/inclusion"),
    ("get", "/v1/log/consistency"),
];

/// Times a request out with a typed error.
async fn timeout(req: Request, next: Next) -> Response {
    time_limit(DEFAULT_TIMEOUT, req, next).await
}

/// Times a bundle upload out (a longer limit: the body is large).
async fn bundle_timeout(req: Request, next: Next) -> Response {
    time_limit(BUNDLE_TIMEOUT, req, next).await
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
        .layer(axum::middleware::from_fn(bundle_timeout))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/approvals/pending", get(pending_approvals))
        .route("/v1/jobs/{id}/approve", post(approve))
        .route("/v1/jobs/{id}/reject", post(reject))
        .route("/v1/jobs/{id}/receipt", get(receipt))
        .route("/v1/jobs/{id}/outputs", get(outputs))
        .route("/v1/jobs/{id}/outputs/{name}", get(output_file))
        .route("/v1/log/head", get(log_head))
        .route("/v1/log/inclusion", get(log_inclusion))
        .route("/v1/log/consistency", get(log_consistency))
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
        .with_state(state)
}

/// Serves the API on `listener` until the process is stopped, re-driving unfinished jobs
/// every [`REDRIVE_INTERVAL`] in the background.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    let watcher = tokio::spawn(redrive_unfinished(state.clone()));
    let served = axum::serve(listener, router(state)).await;
    watcher.abort();
    served
}
