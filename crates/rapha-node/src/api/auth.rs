//! Who is calling: bearer tokens, roles, and the one authorize path every route takes (401 and
//! 403 are audited): [`authorize`], and for the routes under `/v1/jobs/{id}`, [`authorize_job`]
//! (the caller, the job id parsed, and the job one the caller may see).

use super::denials::Denial;
use super::*;

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

impl Caller {
    /// Whether this caller may see and act for `publisher`'s jobs: a publisher token only its
    /// own publisher's, the hospital's roles every publisher's.
    pub fn speaks_for(&self, publisher: &str) -> bool {
        self.publisher.as_deref().is_none_or(|p| p == publisher)
    }
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

    /// Loads a token file ([`rapha_core::fs::read_secret`]: not a link, owned by the node's
    /// user, mode 0600 or stricter, at most 1 MiB).
    ///
    /// # Errors
    /// As [`Tokens::parse`], or [`ApiError::TokenFile`].
    pub fn load(path: &Path) -> Result<Self, ApiError> {
        let text =
            rapha_core::fs::read_secret_text(path, 1 << 20).map_err(|e| ApiError::TokenFile {
                path: path.to_owned(),
                source: e.into(),
            })?;
        Self::parse(&text)
    }

    /// The role of `presented`, comparing against every token in constant time (the API's
    /// bearer check and the console's login).
    pub(crate) fn caller(&self, presented: &[u8]) -> Option<Caller> {
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

/// The roles each view of the hospital's admits, shared by the API's routes and the console's
/// pages so that both doors let in the same roles.
pub(crate) mod roles {
    use super::Role;

    /// Pending reviews, suspended publishers, every job's state.
    pub(crate) const REVIEWERS: &[Role] = &[Role::Dpo, Role::Admin];
    /// The DPO's decisions: approve, reject, reinstate a publisher.
    pub(crate) const DPO: &[Role] = &[Role::Dpo];
    /// Receipts: the publisher's proof, and what the DPO who decided and the admin audit
    /// (they carry no record, pixel or pseudonym). Released outputs stay the publisher's and
    /// the admin's.
    pub(crate) const RECEIPT_READERS: &[Role] = &[Role::Publisher, Role::Dpo, Role::Admin];
    /// Released outputs (the weights and metrics that left).
    pub(crate) const OUTPUT_READERS: &[Role] = &[Role::Publisher, Role::Admin];
    /// DPO passkeys: listing them and starting a registration (which still needs the one-time
    /// code or an enrolled DPO's assertion to finish).
    pub(crate) const CREDENTIAL_VIEWERS: &[Role] = &[Role::Dpo, Role::Admin];
    /// The node's own operation: metrics, health, the trust store's changes.
    pub(crate) const ADMIN: &[Role] = &[Role::Admin];
    /// The receipt log: heads and proofs.
    pub(crate) const LOG_READERS: &[Role] = &[Role::Publisher, Role::Dpo, Role::Admin];
}

/// Checks the bearer token against the roles allowed on `route`.
pub(super) fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    route: &'static str,
    allowed: &[Role],
) -> ApiResult<Caller> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = presented.and_then(|t| state.tokens.caller(t.as_bytes()));
    match caller.map(|c| (c.role, c)) {
        None => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required",
        )
        .audited(Denial {
            route,
            who: "unauthenticated",
            why: "missing or unknown bearer token",
        })),
        Some((role, _)) if !allowed.contains(&role) => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {} role may not call {route}", role.as_str()),
        )
        .audited(Denial {
            route,
            who: role.as_str(),
            why: "role not allowed on this route",
        })),
        Some((role, caller)) => {
            // A publisher's calls are limited in rate before any other work (its reads sample
            // the node's latency); the hospital's roles are not.
            if let (Role::Publisher, Some(limit), Some(publisher)) =
                (role, state.publisher_rate, caller.publisher.as_deref())
            {
                state.buckets.take(publisher, limit).inspect_err(|_| {
                    tracing::debug!(route, publisher, "publisher call over its rate (429)");
                })?;
            }
            Ok(caller)
        }
    }
}

/// The shared path of every `/v1/jobs/{id}…` route: the caller authorized on `route`, the id
/// parsed, and the job one the caller may see. A publisher sees only its own jobs; another
/// publisher's job is "unknown" to it (its existence is not revealed). The DPO and the admin
/// see every job.
pub(super) async fn authorize_job(
    state: &ApiState,
    headers: &HeaderMap,
    route: &'static str,
    allowed: &[Role],
    id: &str,
) -> ApiResult<(Caller, JobId)> {
    let caller = authorize(state, headers, route, allowed)?;
    let job = parse_job(id)?;
    check_owner(state, &caller, job).await?;
    Ok((caller, job))
}

async fn check_owner(state: &ApiState, caller: &Caller, job: JobId) -> ApiResult<()> {
    if caller.publisher.is_none() {
        return Ok(());
    }
    let caller = caller.clone();
    let readers = Arc::clone(&state.readers);
    blocking(move || {
        readers.with(|r| match r.get(job) {
            Ok(row) if caller.speaks_for(&row.request.publisher) => Ok(()),
            Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
                Err(not_found("unknown-job", "no job with this id"))
            }
            Err(e) => Err(HttpError::internal(e)),
        })
    })
    .await
}

pub(super) fn parse_job(id: &str) -> ApiResult<JobId> {
    id.parse().map_err(|_| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "bad-job-id",
            "the job id is not a valid job id",
        )
    })
}

/// Queues a denied call for the audit trail (the node may be busy with a job).
/// Queues an event for the audit trail from a blocking task (waits if the queue is full).
pub(crate) fn audit_later(state: &ApiState, event: AuditEvent) {
    if state.denials.send(event).is_err() {
        tracing::error!("audit writer gone: an API event was not audited");
    }
}
