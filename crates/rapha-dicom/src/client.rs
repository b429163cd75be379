//! DICOMweb client (PS3.18): QIDO-RS searches with paging, WADO-RS metadata and instance
//! retrieval, over HTTP(S) with an optional custom CA and auth header.
//!
//! Study searches take a [`ScopedQuery`] only (**I2**). Series and instance listings take a
//! [`ScopedStudy`], which only a scoped study search returns, so nothing here can list the
//! whole PACS. Error messages carry the PACS base URL, never the request path (which holds
//! UIDs).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use zeroize::Zeroizing;

use crate::attrs::{tag, Attrs};
use crate::date::Date;
use crate::json::parse_datasets;
use crate::multipart::{boundary_of, FirstPart};
use crate::scope::{is_uid, ScopedQuery};
use crate::{DicomError, Result};

/// How to authenticate to the PACS. Values are secrets: no `Debug`, zeroized on drop.
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
    /// Per-request timeout (connect + whole response for QIDO; connect only for WADO streams).
    pub timeout: Duration,
}

impl ClientOptions {
    /// Plain options for a base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            auth: None,
            ca_pem: None,
            timeout: Duration::from_secs(60),
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
        Ok(Self { http, base })
    }

    /// The DICOMweb root this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
        accept: &'static str,
        what: &'static str,
    ) -> Result<Response> {
        let url = format!("{}/{}", self.base, path);
        let resp = self
            .http
            .get(&url)
            .query(params)
            .header(ACCEPT, accept)
            .send()
            .map_err(|e| DicomError::Http {
                base: self.base.clone(),
                what,
                source: e.without_url(),
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

    fn get_json(
        &self,
        path: &str,
        params: &[(&str, String)],
        what: &'static str,
    ) -> Result<Vec<Attrs>> {
        let resp = self.get(path, params, "application/dicom+json", what)?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let body = resp.bytes().map_err(|e| DicomError::Http {
            base: self.base.clone(),
            what,
            source: e.without_url(),
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            // Some servers answer an empty match with 200 and no body.
            return Ok(Vec::new());
        }
        Ok(parse_datasets(&body)?)
    }

    /// Pages through a QIDO-RS search, calling `each` per dataset until the results are
    /// exhausted or `max` datasets were seen. Each page is dropped before the next is fetched.
    fn paged(
        &self,
        path: &str,
        params: &[(&'static str, String)],
        page: u32,
        max: u64,
        what: &'static str,
        each: &mut dyn FnMut(Attrs) -> Result<bool>,
    ) -> Result<u64> {
        let mut offset: u64 = 0;
        let mut seen: u64 = 0;
        loop {
            let want = u64::from(page).min(max - seen);
            let mut p: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.clone())).collect();
            p.push(("limit", want.to_string()));
            p.push(("offset", offset.to_string()));
            let items = self.get_json(path, &p, what)?;
            let n = items.len() as u64;
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
    /// HTTP, status and DICOM JSON errors; an error from `each` stops the search.
    pub fn for_each_study(
        &self,
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
                "studies",
                &params,
                query.page_size(),
                remaining,
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
                    let date = attrs.text(tag::STUDY_DATE).and_then(Date::parse_dicom);
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
    /// HTTP, status and DICOM JSON errors.
    pub fn search_series(&self, study: &ScopedStudy, page: u32) -> Result<Vec<Attrs>> {
        let mut out = Vec::new();
        self.paged(
            &format!("studies/{}/series", study.uid),
            &[],
            page.max(1),
            u64::MAX,
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
    /// HTTP, status and DICOM JSON errors; [`DicomError::ClientConfig`] for a malformed UID.
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
            &format!("studies/{}/series/{series_uid}/instances", study.uid),
            &[],
            page.max(1),
            u64::MAX,
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
    /// HTTP, status and DICOM JSON errors; [`DicomError::ClientConfig`] for a malformed UID.
    pub fn series_metadata(&self, study: &ScopedStudy, series_uid: &str) -> Result<Vec<Attrs>> {
        if !is_uid(series_uid) {
            return Err(DicomError::ClientConfig(
                "series UID is not a DICOM UID".into(),
            ));
        }
        self.get_json(
            &format!("studies/{}/series/{series_uid}/metadata", study.uid),
            &[],
            "WADO-RS series metadata",
        )
    }

    /// WADO-RS retrieval of one instance as a Part 10 stream
    /// (`multipart/related; type="application/dicom"`), read as it arrives.
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
        if ![study, series, instance].iter().all(|u| is_uid(u)) {
            return Err(DicomError::ClientConfig(
                "study, series and instance must be DICOM UIDs".into(),
            ));
        }
        let resp = self.get(
            &format!("studies/{study}/series/{series}/instances/{instance}"),
            &[],
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            "WADO-RS instance retrieval",
        )?;
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let boundary = boundary_of(&ct).map_err(DicomError::Multipart)?;
        Ok(FirstPart::new(resp, &boundary))
    }
}
