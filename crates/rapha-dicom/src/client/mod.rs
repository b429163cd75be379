//! DICOMweb client (PS3.18): QIDO-RS searches with paging, WADO-RS metadata and instance
//! retrieval, over HTTP(S) with an optional custom CA and auth header.
//!
//! Study searches take a [`ScopedQuery`] only (**I2**). Series and instance listings take a
//! [`ScopedStudy`], which only a scoped study search returns, so nothing here can list the
//! whole PACS. Error messages carry the PACS base URL, never the request path (which holds
//! UIDs).
//!
//! A slow or hostile PACS is bounded ([`PacsLimits`]): every request has a deadline from
//! connecting to its last byte and a cap on the bytes of its answer; a cohort build has a
//! total deadline and a page allowance ([`Budget`]), and a QIDO-RS page that brings no result
//! the loop has not already seen ends the paging with [`DicomError::PagingStalled`] (a PACS
//! that ignores `offset` would otherwise page forever).

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use zeroize::Zeroizing;

use crate::attrs::{tag, Attrs, TagU32};
use crate::config::PacsLimits;
use crate::date;
use crate::json::parse_datasets;
use crate::multipart::{boundary_of, FirstPart};
use crate::scope::{is_uid, ScopedQuery};
use crate::{DicomError, Result};

mod bounds;
mod negotiate;

pub use bounds::Budget;
use bounds::{Bounded, Deadline, DeadlineError};
pub use negotiate::{Wanted, EXPLICIT_VR_LITTLE_ENDIAN};

/// How to authenticate to the PACS. Values are secrets: no `Debug`, zeroized on drop.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Zeroizing<String>),
    /// Any header, e.g. `Authorization: Basic …` or an API-key header.
    Header {
        name: String,
        value: Zeroizing<String>,
    },
}

/// Client settings.
pub struct ClientOptions {
    /// DICOMweb root, e.g. `https://pacs.hospital.example/dicom-web`.
    pub base_url: String,
    pub auth: Option<Auth>,
    /// PEM file with the hospital's CA certificate(s), added to the web PKI roots.
    pub ca_pem: Option<PathBuf>,
    /// Connect timeout. A whole request (connect to last byte) is bounded by
    /// [`PacsLimits::request_timeout_seconds`] ([`DicomWebClient::with_limits`]), and never
    /// takes longer than this plus that.
    pub timeout: Duration,
}

impl ClientOptions {
    /// Plain options for a base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            auth: None,
            ca_pem: None,
            timeout: Duration::from_secs(PacsLimits::default().connect_timeout_seconds),
        }
    }
}

/// A study returned by a scoped search: the only handle series and instance listings accept.
#[derive(Clone, Debug)]
pub struct ScopedStudy {
    uid: String,
    /// The study-level attributes the PACS returned.
    pub attrs: Attrs,
}

impl ScopedStudy {
    /// StudyInstanceUID.
    pub fn uid(&self) -> &str {
        &self.uid
    }
}

/// A DICOMweb client.
pub struct DicomWebClient {
    http: Client,
    base: String,
    limits: PacsLimits,
}

impl std::fmt::Debug for DicomWebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomWebClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DicomWebClient {
    /// Builds a client. Nothing is sent until a search or retrieve is called.
    ///
    /// # Errors
    /// [`DicomError::ClientConfig`] for a bad URL, CA file or auth header.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let base = opts.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(DicomError::ClientConfig(
                "the DICOMweb URL must start with http:// or https://".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        match &opts.auth {
            None => {}
            Some(Auth::Bearer(token)) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
                        DicomError::ClientConfig(
                            "the bearer token contains characters not allowed in a header".into(),
                        )
                    })?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Some(Auth::Header { name, value }) => {
                let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    DicomError::ClientConfig(format!("{name:?} is not a valid header name"))
                })?;
                let mut v = HeaderValue::from_str(value).map_err(|_| {
                    DicomError::ClientConfig(format!(
                        "the value of header {name} contains characters not allowed in a header"
                    ))
                })?;
                v.set_sensitive(true);
                headers.insert(n, v);
            }
        }
        let mut builder = Client::builder()
            .default_headers(headers)
            .connect_timeout(opts.timeout)
            // Each request sets its own timeout (its share of the deadline that applies).
            .timeout(None::<Duration>)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(base.starts_with("https://"));
        if let Some(ca) = &opts.ca_pem {
            let pem = std::fs::read(ca).map_err(|e| DicomError::Io {
                path: ca.clone(),
                source: e,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| DicomError::ClientConfig(format!("CA file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(DicomError::ClientConfig(format!(
                    "CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DicomError::ClientConfig(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            limits: PacsLimits::default(),
        })
    }

    /// Sets the request time, response size and paging limits (the hospital's `[dicom.pacs]`).
    #[must_use]
    pub fn with_limits(mut self, limits: PacsLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &PacsLimits {
        &self.limits
    }

    /// The DICOMweb root this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The deadline of a request starting now: its own limit, or the budget's deadline if
    /// that comes first.
    fn request_deadline(&self, budget: Option<&Budget>) -> Result<Deadline> {
        if let Some(b) = budget {
            b.check_time()?;
        }
        let own = Instant::now() + Duration::from_secs(self.limits.request_timeout_seconds);
        Ok(match budget {
            Some(b) if b.deadline < own => Deadline {
                at: b.deadline,
                error: DeadlineError::Cohort(b.deadline_seconds),
            },
            _ => Deadline {
                at: own,
                error: DeadlineError::Request(self.limits.request_timeout_seconds),
            },
        })
    }

    fn deadline_error(&self, d: &Deadline, what: &'static str) -> DicomError {
        match d.error {
            DeadlineError::Cohort(seconds) => DicomError::CohortDeadline { seconds },
            DeadlineError::Request(seconds) => DicomError::Timeout {
                base: self.base.clone(),
                what,
                seconds,
            },
        }
    }

    fn get(
        &self,
        deadline: &Deadline,
        path: &str,
        params: &[(&str, String)],
        accept: &str,
        what: &'static str,
    ) -> Result<Response> {
        let url = format!("{}/{}", self.base, path);
        let left = deadline.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.deadline_error(deadline, what));
        }
        let resp = self
            .http
            .get(&url)
            .query(params)
            .header(ACCEPT, accept)
            .timeout(left)
            .send()
            .map_err(|e| {
                if e.is_timeout() || Instant::now() >= deadline.at {
                    self.deadline_error(deadline, what)
                } else {
                    DicomError::Http {
                        base: self.base.clone(),
                        what,
                        source: e.without_url(),
                    }
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DicomError::HttpStatus {
                base: self.base.clone(),
                what,
                status: status.as_u16(),
            });
        }
        Ok(resp)
    }

    /// Reads a whole answer, at most `limit` bytes, before the deadline.
    fn read_body(
        &self,
        resp: Response,
        deadline: &Deadline,
        limit: u64,
        setting: &'static str,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        let too_large = || DicomError::ResponseTooLarge {
            base: self.base.clone(),
            what,
            limit,
            setting,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        let mut bounded = Bounded::new(resp, deadline.at, limit);
        match bounded.read_to_end(&mut body) {
            Ok(_) => Ok(body),
            Err(_) if bounded.over_limit => Err(too_large()),
            Err(_) if bounded.past_deadline() => Err(self.deadline_error(deadline, what)),
            Err(e) => Err(DicomError::Multipart(format!(
                "the answer to {what} broke off: {}",
                e.kind()
            ))),
        }
    }

    fn get_json(
        &self,
        budget: Option<&Budget>,
        path: &str,
        params: &[(&str, String)],
        what: &'static str,
    ) -> Result<Vec<Attrs>> {
        let deadline = self.request_deadline(budget)?;
        let resp = self.get(&deadline, path, params, "application/dicom+json", what)?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let body = self.read_body(
            resp,
            &deadline,
            self.limits.max_response_bytes,
            "max_response_bytes",
            what,
        )?;
        if body.iter().all(u8::is_ascii_whitespace) {
            // Some servers answer an empty match with 200 and no body.
            return Ok(Vec::new());
        }
        Ok(parse_datasets(&body)?)
    }

    /// Pages through a QIDO-RS search, calling `each` per dataset until the results are
    /// exhausted or `max` datasets were seen. Each page is dropped before the next is fetched.
    /// Every page is charged to `budget`; a page with results none of which has a `key` the
    /// loop has not seen yet ends the loop with [`DicomError::PagingStalled`].
    #[allow(clippy::too_many_arguments)] // one private helper; the arguments are the search
    fn paged(
        &self,
        budget: &Budget,
        path: &str,
        params: &[(&'static str, String)],
        page: u32,
        max: u64,
        key: TagU32,
        what: &'static str,
        each: &mut dyn FnMut(Attrs) -> Result<bool>,
    ) -> Result<u64> {
        let mut offset: u64 = 0;
        let mut seen: u64 = 0;
        let mut keys: HashSet<String> = HashSet::new();
        let mut pages: u64 = 0;
        loop {
            budget.take_page()?;
            pages += 1;
            let want = u64::from(page).min(max - seen);
            let mut p: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.clone())).collect();
            p.push(("limit", want.to_string()));
            p.push(("offset", offset.to_string()));
            let items = self.get_json(Some(budget), path, &p, what)?;
            let n = items.len() as u64;
            let fresh = items
                .iter()
                .filter_map(|a| a.text(key))
                .filter(|k| keys.insert((*k).to_owned()))
                .count();
            if n > 0 && fresh == 0 {
                return Err(DicomError::PagingStalled {
                    base: self.base.clone(),
                    what,
                    page: pages,
                });
            }
            for item in items {
                seen += 1;
                if !each(item)? {
                    return Ok(seen);
                }
                if seen >= max {
                    return Ok(seen);
                }
            }
            if n < want || n == 0 {
                return Ok(seen);
            }
            offset += n;
        }
    }

    /// Runs a scoped study search, calling `each` for every study inside the scope (at most
    /// `query.limit()`), page by page so memory stays flat. Studies the PACS returns outside
    /// the scope (a server ignoring a matching key) are not passed on; their number is
    /// returned.
    ///
    /// # Errors
    /// HTTP, status and DICOM JSON errors, the limits of [`PacsLimits`]; an error from `each`
    /// stops the search.
    pub fn for_each_study(
        &self,
        query: &ScopedQuery,
        each: &mut dyn FnMut(ScopedStudy) -> Result<()>,
    ) -> Result<u64> {
        self.for_each_study_within(&Budget::new(&self.limits), query, each)
    }

    /// [`DicomWebClient::for_each_study`] charged to a cohort build's `budget`.
    ///
    /// # Errors
    /// As [`DicomWebClient::for_each_study`].
    pub fn for_each_study_within(
        &self,
        budget: &Budget,
        query: &ScopedQuery,
        each: &mut dyn FnMut(ScopedStudy) -> Result<()>,
    ) -> Result<u64> {
        let mut delivered: u64 = 0;
        let mut outside: u64 = 0;
        let mut seen_uids = std::collections::HashSet::new();
        let limit = u64::from(query.limit());
        for params in query.request_params() {
            if delivered >= limit {
                break;
            }
            let remaining = limit - delivered;
            self.paged(
                budget,
                "studies",
                &params,
                query.page_size(),
                remaining,
                tag::STUDY_INSTANCE_UID,
                "QIDO-RS study search",
                &mut |attrs| {
                    let Some(uid) = attrs
                        .text(tag::STUDY_INSTANCE_UID)
                        .filter(|u| is_uid(u))
                        .map(str::to_owned)
                    else {
                        outside += 1;
                        return Ok(true);
                    };
                    let date = attrs.text(tag::STUDY_DATE).and_then(date::parse_da);
                    let modalities = attrs.texts(tag::MODALITIES_IN_STUDY);
                    if !query.wants_modalities(&modalities) {
                        return Ok(true);
                    }
                    if !query.admits(&uid, attrs.text(tag::ACCESSION_NUMBER), date) {
                        outside += 1;
                        return Ok(true);
                    }
                    if seen_uids.insert(uid.clone()) {
                        delivered += 1;
                        each(ScopedStudy { uid, attrs })?;
                    }
                    Ok(delivered < limit)
                },
            )?;
        }
        if outside > 0 {
            tracing::warn!(
                outside,
                "PACS returned studies outside the query's scope; they were dropped"
            );
        }
        Ok(outside)
    }

    /// Collects a scoped study search.
    ///
    /// # Errors
    /// As [`DicomWebClient::for_each_study`].
    pub fn search_studies(&self, query: &ScopedQuery) -> Result<Vec<ScopedStudy>> {
        let mut out = Vec::new();
        self.for_each_study(query, &mut |s| {
            out.push(s);
            Ok(())
        })?;
        Ok(out)
    }

    /// QIDO-RS series of one scoped study (paged).
    ///
    /// # Errors
    /// HTTP, status and DICOM JSON errors, the limits of [`PacsLimits`].
    pub fn search_series(&self, study: &ScopedStudy, page: u32) -> Result<Vec<Attrs>> {
        self.search_series_within(&Budget::new(&self.limits), study, page)
    }

    /// [`DicomWebClient::search_series`] charged to a cohort build's `budget`.
    ///
    /// # Errors
    /// As [`DicomWebClient::search_series`].
    pub fn search_series_within(
        &self,
        budget: &Budget,
        study: &ScopedStudy,
        page: u32,
    ) -> Result<Vec<Attrs>> {
        let mut out = Vec::new();
        self.paged(
            budget,
            &format!("studies/{}/series", study.uid),
            &[],
            page.max(1),
            u64::MAX,
            tag::SERIES_INSTANCE_UID,
            "QIDO-RS series search",
            &mut |a| {
                out.push(a);
                Ok(true)
            },
        )?;
        Ok(out)
    }

    /// QIDO-RS instances of one series of a scoped study (paged).
    ///
    /// # Errors
    /// HTTP, status and DICOM JSON errors, the limits of [`PacsLimits`];
    /// [`DicomError::ClientConfig`] for a malformed UID.
    pub fn search_instances(
        &self,
        study: &ScopedStudy,
        series_uid: &str,
        page: u32,
    ) -> Result<Vec<Attrs>> {
        if !is_uid(series_uid) {
            return Err(DicomError::ClientConfig(
                "series UID is not a DICOM UID".into(),
            ));
        }
        let mut out = Vec::new();
        self.paged(
            &Budget::new(&self.limits),
            &format!("studies/{}/series/{series_uid}/instances", study.uid),
            &[],
            page.max(1),
            u64::MAX,
            tag::SOP_INSTANCE_UID,
            "QIDO-RS instance search",
            &mut |a| {
                out.push(a);
                Ok(true)
            },
        )?;
        Ok(out)
    }

    /// WADO-RS metadata of one series (headers of all its instances, no pixel data).
    ///
    /// # Errors
    /// HTTP, status and DICOM JSON errors, the limits of [`PacsLimits`];
    /// [`DicomError::ClientConfig`] for a malformed UID.
    pub fn series_metadata(&self, study: &ScopedStudy, series_uid: &str) -> Result<Vec<Attrs>> {
        self.series_metadata_within(None, study, series_uid)
    }

    /// [`DicomWebClient::series_metadata`] within a cohort build's `budget` (its deadline;
    /// metadata is not paged).
    ///
    /// # Errors
    /// As [`DicomWebClient::series_metadata`].
    pub fn series_metadata_within(
        &self,
        budget: Option<&Budget>,
        study: &ScopedStudy,
        series_uid: &str,
    ) -> Result<Vec<Attrs>> {
        if !is_uid(series_uid) {
            return Err(DicomError::ClientConfig(
                "series UID is not a DICOM UID".into(),
            ));
        }
        self.get_json(
            budget,
            &format!("studies/{}/series/{series_uid}/metadata", study.uid),
            &[],
            "WADO-RS series metadata",
        )
    }

    /// WADO-RS retrieval of one instance as a Part 10 stream
    /// (`multipart/related; type="application/dicom"`), in the syntax the PACS stores it in,
    /// read as it arrives. The stream fails
    /// (an I/O error) past [`PacsLimits::max_instance_bytes`] or the request's deadline.
    ///
    /// # Errors
    /// [`DicomError::ClientConfig`] for a malformed UID, HTTP errors, and
    /// [`DicomError::Multipart`] for a response that is not multipart DICOM.
    pub fn retrieve_instance(
        &self,
        study: &str,
        series: &str,
        instance: &str,
    ) -> Result<impl Read> {
        let (part, _, _) = self.open_instance(study, series, instance, &Wanted::as_stored())?;
        Ok(part)
    }

    /// WADO-RS retrieval of one instance in one of the transfer syntaxes `wanted` names
    /// ([`Wanted`] says how the node negotiates), read whole: at most
    /// [`PacsLimits::max_instance_bytes`], within the request's deadline. Which syntax came is
    /// in the object's own meta header; a PACS may ignore the request.
    ///
    /// # Errors
    /// As [`DicomWebClient::retrieve_instance`], and [`DicomError::ResponseTooLarge`],
    /// [`DicomError::Timeout`] or [`DicomError::Multipart`] when the stream fails.
    pub fn retrieve_instance_bytes(
        &self,
        study: &str,
        series: &str,
        instance: &str,
        wanted: &Wanted,
    ) -> Result<Vec<u8>> {
        const WHAT: &str = "WADO-RS instance retrieval";
        let (mut part, deadline, length) = self.open_instance(study, series, instance, wanted)?;
        // Sized once from the response's length (the part is a little shorter; the cap
        // bounds it): no reallocation and copy as the object streams in.
        let mut bytes = Vec::with_capacity(length.unwrap_or(0));
        match part.read_to_end(&mut bytes) {
            Ok(_) => Ok(bytes),
            Err(e) => {
                let (over, late) = (part.get_ref().over_limit, part.get_ref().past_deadline());
                Err(if over {
                    DicomError::ResponseTooLarge {
                        base: self.base.clone(),
                        what: WHAT,
                        limit: self.limits.max_instance_bytes,
                        setting: "max_instance_bytes",
                    }
                } else if late {
                    self.deadline_error(&deadline, WHAT)
                } else {
                    DicomError::Multipart(e.to_string())
                })
            }
        }
    }

    fn open_instance(
        &self,
        study: &str,
        series: &str,
        instance: &str,
        wanted: &Wanted,
    ) -> Result<(FirstPart<Bounded<Response>>, Deadline, Option<usize>)> {
        if ![study, series, instance].iter().all(|u| is_uid(u)) {
            return Err(DicomError::ClientConfig(
                "study, series and instance must be DICOM UIDs".into(),
            ));
        }
        let deadline = self.request_deadline(None)?;
        let resp = self.get(
            &deadline,
            &format!("studies/{study}/series/{series}/instances/{instance}"),
            &[],
            &wanted.accept_header(),
            "WADO-RS instance retrieval",
        )?;
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let boundary = boundary_of(&ct).map_err(DicomError::Multipart)?;
        // The multipart framing around the part is small; the part itself is what is capped.
        let cap = self.limits.max_instance_bytes.saturating_add(64 * 1024);
        let length = resp
            .content_length()
            .map(|n| n.min(cap))
            .and_then(|n| usize::try_from(n).ok());
        let body = Bounded::new(resp, deadline.at, cap);
        Ok((FirstPart::new(body, &boundary), deadline, length))
    }
}
