//! The DPO console (`[console]` of `rapha-node serve`): server-rendered pages for the people who
//! decide on jobs and run the node, on a listener of its own beside the API.
//!
//! ```text
//!  browser ──TLS (or http on loopback)──> console listener ──> ConsoleState
//!     │  cookie rapha_console (HttpOnly, Secure, SameSite=Strict)   │
//!     │  every POST: CSRF token of the session + Origin checked     ├─ sessions (server-side)
//!     │                                                              └─ ApiState (shared): roles,
//!     │                                                                 job views, reviews, reject,
//!     └── CSP default-src 'none', no inline script or style             audit writer, receipt log
//! ```
//!
//! It is a second door into the node, so it admits exactly what the API admits: a login
//! exchanges a DPO or admin token of the API's token file for a session (a publisher token is
//! refused), each page checks the same role list as the API route it mirrors
//! ([`crate::api::roles`]), and a rejection goes through the API's own path
//! ([`crate::api::reject_job`]). Refused logins and calls are audited and coalesced as the API's
//! refusals are ([`crate::api::denials`]); logins, logouts, rejections and revocations are
//! audit events with the caller's address. Every value a page shows is escaped by
//! [`html::Html`], and pages show counts, digests and the node's own words only: the same
//! planted-PHI search as the API's runs over every page in the tests.
//!
//! Approving a job is the passkey step (issue 20, item 3); until it lands the job page says
//! how to approve with `rapha-node approve` and the DPO key file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::denials::Denial;
use crate::api::{ApiState, HttpError, Peer, Role};
use crate::audit::{ActiveParticipant, AuditEvent, AuditKind, AuditOutcome, ParticipantObject};
use crate::config::ConsoleConfig;

pub mod chart;
pub mod html;
mod pages;
pub mod session;
pub mod tls;

use html::Html;
use session::{Session, Sessions};

/// The strict Content-Security-Policy of every console response: nothing but the console's
/// own stylesheet and script files, no inline script or style, no framing, forms only to
/// itself.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       script-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The console's stylesheet, served from the binary.
pub const STYLESHEET: &str = include_str!("console.css");

/// Largest form the console accepts (a rejection reason is at most 500 bytes).
pub const FORM_LIMIT: usize = 16 * 1024;

/// Time one console request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of the console: the API's state (the same node, tokens, readers and audit
/// writer) and the console's sessions.
#[derive(Clone)]
pub struct ConsoleState {
    api: ApiState,
    sessions: Arc<Sessions>,
    origins: Arc<Vec<String>>,
    rp_id: Arc<String>,
    /// The node's configuration, for the health page's local doctor checks (absent when the
    /// console is built without one, as in tests).
    config: Option<Arc<crate::config::Config>>,
}

impl ConsoleState {
    /// The console for `config` over the API's `api` state.
    pub fn new(api: ApiState, config: &ConsoleConfig) -> Self {
        Self {
            api,
            sessions: Arc::new(Sessions::new(Duration::from_secs(
                config.session_minutes.saturating_mul(60),
            ))),
            origins: Arc::new(config.allowed_origins()),
            rp_id: Arc::new(config.rp_id.clone()),
            config: None,
        }
    }

    /// Gives the health page the node's configuration to run `doctor`'s local checks on.
    #[must_use]
    pub fn with_node_config(mut self, config: crate::config::Config) -> Self {
        self.config = Some(Arc::new(config));
        self
    }

    /// The WebAuthn relying-party id passkeys will be bound to.
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }
}

/// A refused or failed console request, shown as a page.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
    denial: Option<Denial>,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            denial: None,
        }
    }

    /// A refusal the audit trail records (coalesced like the API's).
    fn denied(status: StatusCode, denial: Denial, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            denial: Some(denial),
        }
    }
}

impl From<HttpError> for PageError {
    fn from(e: HttpError) -> Self {
        Self::new(e.status, e.message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut body = Html::new();
        body.el("<h1>", self.status, "</h1>\n")
            .el("<p class=\"error\">", &self.message, "</p>\n")
            .raw("<p><a href=\"/\">Back to the console</a></p>\n");
        let mut r = (self.status, document("Refused", None, body)).into_response();
        if let Some(d) = self.denial {
            r.extensions_mut().insert(d);
        }
        r
    }
}

type PageResult<T = Response> = Result<T, PageError>;

/// A whole HTML document: the header with the navigation (and the logout form of a session),
/// then `body`.
fn document(title: &'static str, session: Option<&Session>, body: Html) -> Response {
    let mut h = Html::new();
    h.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .raw(title)
        .raw(" · Rapha console</title>")
        .raw("<link rel=\"stylesheet\" href=\"/static/console.css\"></head>\n<body>\n")
        .raw("<header><span class=\"brand\">Rapha node console</span>");
    if let Some(s) = session {
        h.raw(
            "<nav aria-label=\"main\"><a href=\"/\">Approval queue</a> <a href=\"/jobs\">Jobs</a> ",
        )
        .raw("<a href=\"/log\">Receipt log</a> <a href=\"/audit\">Audit trail</a> ")
        .raw("<a href=\"/trust\">Trust store</a> <a href=\"/health\">Node health</a></nav>")
        .raw("<form method=\"post\" action=\"/logout\" class=\"logout\">")
        .push(csrf_field(s))
        .raw("<span class=\"role\">")
        .text(s.role.as_str())
        .raw("</span> <button type=\"submit\">Log out</button></form>");
    }
    h.raw("</header>\n<main>\n")
        .push(body)
        .raw("</main>\n</body></html>\n");
    let mut r = h.into_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The hidden CSRF field of a session's forms.
fn csrf_field(s: &Session) -> Html {
    let mut h = Html::new();
    h.raw("<input type=\"hidden\" name=\"csrf\" value=\"")
        .text(s.csrf())
        .raw("\">");
    h
}

/// The session of the request's cookie, if it is live.
fn session_of(state: &ConsoleState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session::cookie_value(headers)?;
    let s = state.sessions.get(&id)?;
    Some((id, s))
}

/// The session a page needs, or a redirect to the login page.
#[allow(clippy::result_large_err)] // a Response is the early answer
fn require_session(state: &ConsoleState, headers: &HeaderMap) -> Result<Session, Response> {
    session_of(state, headers)
        .map(|(_, s)| s)
        .ok_or_else(|| redirect("/login"))
}

fn redirect(to: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(to))],
    )
        .into_response()
}

/// The role check of a page: the same role list as the API route it mirrors. A role not
/// allowed is refused 403 and audited.
fn allow(session: &Session, route: &'static str, allowed: &[Role]) -> PageResult<()> {
    if allowed.contains(&session.role) {
        return Ok(());
    }
    Err(PageError::denied(
        StatusCode::FORBIDDEN,
        Denial {
            route,
            who: session.role.as_str(),
            why: "role not allowed on this console page",
        },
        format!(
            "the {} role may not use this page of the console",
            session.role.as_str()
        ),
    ))
}

/// A parsed `application/x-www-form-urlencoded` body: each name once.
pub(crate) struct Form(BTreeMap<String, String>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> PageResult<Self> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(PageError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the console takes forms (application/x-www-form-urlencoded) only",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "the form is not UTF-8"))?;
        let mut fields = BTreeMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |_| PageError::new(StatusCode::BAD_REQUEST, "the form is not well encoded");
            let k = rapha_core::percent::decode(k).map_err(bad)?;
            let v = rapha_core::percent::decode(v).map_err(bad)?;
            if fields.insert(k, v).is_some() {
                return Err(PageError::new(
                    StatusCode::BAD_REQUEST,
                    "a form field is given twice",
                ));
            }
        }
        Ok(Self(fields))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The checks of a state-changing request before its form is read: it comes from the
/// console's own pages. An `Origin` must be one of the console's; a browser that sends
/// `Origin: null` (as Chromium does for a form posted from a page whose Referrer-Policy is
/// `no-referrer`, the console's own) or none is judged by its `Sec-Fetch-Site`, which must say
/// `same-origin`. A client that sends neither (a script, not a browser) has only the CSRF
/// token to pass.
fn same_origin(
    state: &ConsoleState,
    headers: &HeaderMap,
    route: &'static str,
    who: &'static str,
) -> PageResult<()> {
    let foreign = |why: &'static str| {
        PageError::denied(
            StatusCode::FORBIDDEN,
            Denial { route, who, why },
            "this form was not sent from the console's own pages",
        )
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""))
        .filter(|o| *o != "null");
    if let Some(origin) = origin {
        if !state.origins.iter().any(|o| o == origin) {
            return Err(foreign("foreign Origin on a console form"));
        }
        return Ok(());
    }
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""));
    if site.is_some_and(|s| s != "same-origin") {
        return Err(foreign("console form from another site (Sec-Fetch-Site)"));
    }
    Ok(())
}

/// A state-changing request of a session: from the console's own origin and carrying the
/// session's CSRF token.
fn check_form(
    state: &ConsoleState,
    headers: &HeaderMap,
    session: &Session,
    form: &Form,
    route: &'static str,
) -> PageResult<()> {
    same_origin(state, headers, route, session.role.as_str())?;
    if !form.get("csrf").is_some_and(|t| session.csrf_matches(t)) {
        return Err(PageError::denied(
            StatusCode::FORBIDDEN,
            Denial {
                route,
                who: session.role.as_str(),
                why: "missing or wrong CSRF token",
            },
            "the form's CSRF token is missing or not this session's; reload the page and try again",
        ));
    }
    Ok(())
}

/// Writes a console action to the audit trail through the node (before the answer is sent).
async fn audit(
    state: &ConsoleState,
    kind: AuditKind,
    outcome: AuditOutcome,
    description: String,
    role: Role,
    source: Option<String>,
    objects: Vec<ParticipantObject>,
) -> PageResult<()> {
    let mut event = AuditEvent::new(
        kind,
        outcome,
        description,
        (role.as_str(), role.as_str()),
        objects,
    );
    event.participants = vec![ActiveParticipant {
        user_id: role.as_str().to_owned(),
        user_is_requestor: true,
        role_id_code: role.as_str().to_owned(),
        network_access_point_id: source,
    }];
    crate::api::with_node(&state.api, move |n| {
        n.audit(event).map_err(HttpError::internal)
    })
    .await?;
    Ok(())
}

fn console_object(what: &str) -> ParticipantObject {
    ParticipantObject {
        id_type_code: "console".into(),
        id: what.to_owned(),
        detail: None,
    }
}

/// `GET /login`.
async fn login_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).is_some() {
        return redirect("/");
    }
    let mut body = Html::new();
    body.raw("<h1>Log in</h1>\n")
        .raw("<p>Log in with your DPO or admin token from the node's API token file. ")
        .raw("A publisher's token is refused.</p>\n")
        // Passkey login (issue 20, item 3) goes here once the WebAuthn core is merged.
        .raw("<form method=\"post\" action=\"/login\" class=\"login\">")
        .raw("<label for=\"token\">Token</label> ")
        .raw("<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required> ")
        .raw("<button type=\"submit\">Log in</button></form>\n");
    document("Log in", None, body)
}

/// `POST /login`: a DPO or admin token exchanged for a session.
async fn login(
    State(state): State<ConsoleState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    const ROUTE: &str = "console /login";
    same_origin(&state, &headers, ROUTE, "unauthenticated")?;
    let form = Form::parse(&headers, &body)?;
    let caller = form
        .get("token")
        .and_then(|t| state.api.tokens.caller(t.as_bytes()));
    let Some(caller) = caller else {
        return Err(PageError::denied(
            StatusCode::UNAUTHORIZED,
            Denial {
                route: ROUTE,
                who: "unauthenticated",
                why: "missing or unknown token at console login",
            },
            "that token is not one of this node's",
        ));
    };
    if !matches!(caller.role, Role::Dpo | Role::Admin) {
        return Err(PageError::denied(
            StatusCode::FORBIDDEN,
            Denial {
                route: ROUTE,
                who: caller.role.as_str(),
                why: "role may not log in to the console",
            },
            "the console is for the hospital's DPO and admin; a publisher's token is refused",
        ));
    }
    audit(
        &state,
        AuditKind::AdminAction,
        AuditOutcome::Success,
        "console login".into(),
        caller.role,
        Some(peer.0.ip().to_string()),
        vec![console_object("login")],
    )
    .await?;
    let id = state.sessions.open(caller.role);
    let mut r = redirect("/");
    let cookie = session::set_cookie(&id, state.sessions.lifetime());
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(r)
}

/// `POST /logout`.
async fn logout(
    State(state): State<ConsoleState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let Some((id, session)) = session_of(&state, &headers) else {
        return Ok(redirect("/login"));
    };
    let form = Form::parse(&headers, &body)?;
    check_form(&state, &headers, &session, &form, "console /logout")?;
    audit(
        &state,
        AuditKind::AdminAction,
        AuditOutcome::Success,
        "console logout".into(),
        session.role,
        Some(peer.0.ip().to_string()),
        vec![console_object("logout")],
    )
    .await?;
    state.sessions.close(&id);
    let mut r = redirect("/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie())
            .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(r)
}

/// `POST /jobs/{id}/reject`: the DPO's rejection with a reason, through the API's path.
async fn reject(
    State(state): State<ConsoleState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> PageResult {
    const ROUTE: &str = "console /jobs/{id}/reject";
    let session = match require_session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    allow(&session, ROUTE, crate::api::roles::DPO)?;
    let form = Form::parse(&headers, &body)?;
    check_form(&state, &headers, &session, &form, ROUTE)?;
    let job: rapha_core::JobId = id
        .parse()
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "not a job id"))?;
    let reason = form.get("reason").unwrap_or("").to_owned();
    let result = crate::api::reject_job(&state.api, job, reason).await;
    let (outcome, description) = match &result {
        Ok(()) => (
            AuditOutcome::Success,
            "job rejected in the console".to_owned(),
        ),
        Err(e) => (
            AuditOutcome::MinorFailure,
            format!("console rejection refused: {}", e.code),
        ),
    };
    audit(
        &state,
        AuditKind::DpoAction,
        outcome,
        description,
        session.role,
        Some(peer.0.ip().to_string()),
        vec![crate::audit::job_object(job, None)],
    )
    .await?;
    result?;
    let to = format!("/jobs/{job}");
    Ok((
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(&to)
                .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        )],
    )
        .into_response())
}

/// `POST /trust/{name}/revoke`: the admin marks a publisher's key revoked; the node's
/// pipeline reads the trust store again at once.
async fn revoke(
    State(state): State<ConsoleState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> PageResult {
    const ROUTE: &str = "console /trust/{name}/revoke";
    let session = match require_session(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    allow(&session, ROUTE, crate::api::roles::ADMIN)?;
    let form = Form::parse(&headers, &body)?;
    check_form(&state, &headers, &session, &form, ROUTE)?;
    rapha_bundle::trust::check_name(&name)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let dir = state.api.bundles.trust_dir().to_owned();
    let who = name.clone();
    let revoked = crate::api::with_node(&state.api, move |n| {
        rapha_bundle::TrustStore::revoke(&dir, &who, time::OffsetDateTime::now_utc()).map_err(
            |e| HttpError::new(StatusCode::NOT_FOUND, "unknown-publisher", e.to_string()),
        )?;
        n.reload_trust().map_err(HttpError::internal)
    })
    .await;
    audit(
        &state,
        AuditKind::AdminAction,
        if revoked.is_ok() {
            AuditOutcome::Success
        } else {
            AuditOutcome::MinorFailure
        },
        "trusted publisher revoked in the console".into(),
        session.role,
        Some(peer.0.ip().to_string()),
        vec![ParticipantObject {
            id_type_code: "publisher".into(),
            id: name,
            detail: None,
        }],
    )
    .await?;
    revoked?;
    Ok(redirect("/trust"))
}

/// `GET /static/console.css`.
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The headers every console response carries: the CSP, no sniffing, no referrer, no
/// framing, and no caching of anything but the stylesheet.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node did not answer in time; reload the page",
        )
        .into_response(),
    }
}

/// The console's router.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/static/console.css", get(stylesheet))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(pages::queue))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/reject", post(reject))
        .route("/jobs/{id}/receipt", get(pages::receipt))
        .route("/log", get(pages::log))
        .route("/audit", get(pages::audit))
        .route("/health", get(pages::health))
        .route("/trust", get(pages::trust))
        .route("/trust/{name}/revoke", post(revoke))
        .fallback(|| async { PageError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn(time_limit))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.api.clone(),
            crate::api::audit_refusals,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves the console on `listener` (TLS with `tls`, else plain HTTP, which `[console]`
/// allows on loopback only) until the process is stopped.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: ConsoleState,
) -> std::io::Result<()> {
    let app = router(state);
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?;
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
        }
        None => axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        h
    }

    #[test]
    fn a_form_is_read_once_per_field_and_only_as_a_form() {
        let f = Form::parse(&form_headers(), b"csrf=ab&reason=not+agreed%21").unwrap();
        assert_eq!(f.get("csrf"), Some("ab"));
        assert_eq!(f.get("reason"), Some("not agreed!"));
        // A second CSRF field (one the attacker chose beside the real one) is refused whole.
        let e = Form::parse(&form_headers(), b"csrf=ab&csrf=cd")
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = Form::parse(&form_headers(), b"reason=%zz").err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // JSON or text posted at a form route is not taken for a form.
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = Form::parse(&json, b"csrf=ab").err().unwrap();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(Form::parse(&HeaderMap::new(), b"csrf=ab").is_err());
    }
}
