//! The embedded demo PACS: a small DICOMweb (PS3.18) server over a directory of Part 10
//! files, serving exactly what `rapha_dicom::DicomWebClient` sends: QIDO-RS study search
//! (StudyInstanceUID, AccessionNumber, ModalitiesInStudy, StudyDate, limit, offset), series
//! and instance listings, WADO-RS series metadata (DICOM JSON, Annex F, no pixel data) and
//! WADO-RS instance retrieval as `multipart/related; type="application/dicom"`.
//!
//! Demo only (**I8**): loopback, no authentication, everything indexed in memory.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use serde_json::{json, Map, Value};

mod http;
mod json;

use http::write_response;
pub use http::{read_request, Request, RequestError, MAX_BODY, MAX_HEADERS, MAX_LINE};
use json::{dataset_json, instance_json, series_json, tag_key};

/// One indexed instance.
struct Instance {
    study: String,
    series: String,
    sop: String,
    path: PathBuf,
    /// Full header as DICOM JSON (no pixel data).
    json: Value,
}

/// Study-level index entry.
struct Study {
    uid: String,
    accession: String,
    date: String,
    modalities: Vec<String>,
    json: Value,
}

struct Index {
    studies: Vec<Study>,
    instances: Vec<Instance>,
}

/// Request counters, for the demo's summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub qido: AtomicU64,
    pub metadata: AtomicU64,
    pub retrievals: AtomicU64,
}

/// A running demo PACS. Drop stops it.
pub struct DemoPacs {
    url: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<Counters>,
    pub instances: usize,
    pub studies: usize,
}

impl std::fmt::Debug for DemoPacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoPacs")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DemoPacs {
    /// Indexes every Part 10 file under `dir` and serves it on a free loopback port.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Indexes every Part 10 file under `dir` and serves it on `addr` (a loopback address: the
    /// demo PACS has no authentication, I8).
    pub fn start_on(dir: &Path, addr: std::net::SocketAddr) -> Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the demo PACS serves loopback only, not {addr}"
        );
        let index = Arc::new(build_index(dir)?);
        let listener = TcpListener::bind(addr).with_context(|| {
            format!("binding the demo PACS to {addr} (is something else listening there?)")
        })?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s2, c2, i2) = (stop.clone(), counters.clone(), index.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (i3, c3) = (i2.clone(), c2.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve_conn(conn, &i3, &c3) {
                        tracing::debug!(error = %e, "demo PACS connection ended");
                    }
                });
            }
        });
        Ok(Self {
            url: format!("http://{addr}/dicom-web"),
            stop,
            addr,
            thread: Some(thread),
            counters,
            instances: index.instances.len(),
            studies: index.studies.len(),
        })
    }

    /// DICOMweb root, e.g. `http://127.0.0.1:PORT/dicom-web`.
    pub fn dicomweb_url(&self) -> &str {
        &self.url
    }
}

impl Drop for DemoPacs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn build_index(dir: &Path) -> Result<Index> {
    let files =
        rapha_core::fs::walk_files(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut instances = Vec::new();
    let mut studies: BTreeMap<String, Study> = BTreeMap::new();
    for path in files {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let text = |t| {
            obj.element(t)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .unwrap_or_default()
        };
        let (study, series, sop) = (
            text(tags::STUDY_INSTANCE_UID),
            text(tags::SERIES_INSTANCE_UID),
            text(tags::SOP_INSTANCE_UID),
        );
        let modality = text(tags::MODALITY);
        let json = dataset_json(&obj);
        let entry = studies.entry(study.clone()).or_insert_with(|| {
            let mut m = Map::new();
            for t in [
                tags::STUDY_INSTANCE_UID,
                tags::ACCESSION_NUMBER,
                tags::STUDY_DATE,
                tags::STUDY_TIME,
                tags::STUDY_ID,
                tags::PATIENT_ID,
                tags::PATIENT_NAME,
                tags::PATIENT_BIRTH_DATE,
                tags::PATIENT_SEX,
                tags::REFERRING_PHYSICIAN_NAME,
            ] {
                if let Some(v) = json.get(tag_key(t)) {
                    m.insert(tag_key(t), v.clone());
                }
            }
            Study {
                uid: study.clone(),
                accession: text(tags::ACCESSION_NUMBER),
                date: text(tags::STUDY_DATE),
                modalities: Vec::new(),
                json: Value::Object(m),
            }
        });
        if !modality.is_empty() && !entry.modalities.contains(&modality) {
            entry.modalities.push(modality);
        }
        instances.push(Instance {
            study,
            series,
            sop,
            path,
            json,
        });
    }
    let studies = studies
        .into_values()
        .map(|mut s| {
            if let Value::Object(m) = &mut s.json {
                m.insert(
                    tag_key(tags::MODALITIES_IN_STUDY),
                    json!({"vr": "CS", "Value": s.modalities}),
                );
            }
            s
        })
        .collect();
    Ok(Index { studies, instances })
}

fn serve_conn(conn: TcpStream, index: &Index, counters: &Counters) -> Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    // Each response goes out as soon as it is written: with Nagle's algorithm on, the body
    // would wait for the client's delayed ACK of the header (~40 ms a request).
    conn.set_nodelay(true)?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        match read_request(&mut r) {
            Ok(Some(req)) => {
                let (status, ctype, body) = route(&req, index, counters);
                write_response(&mut w, status, ctype, &body)?;
            }
            Ok(None) => break,
            Err(e) if e.is_io() => {
                tracing::debug!(error = %e, "demo PACS connection ended");
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "demo PACS refused a malformed request");
                write_response(
                    &mut w,
                    "400 Bad Request",
                    "text/plain",
                    e.to_string().as_bytes(),
                )?;
                break;
            }
        }
    }
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}

/// The fuzz entry point (`fuzz/fuzz_targets/pacs_request.rs` and the crate's proptest): parses
/// `bytes` as a stream of requests, as one connection would send them, and routes each against
/// a small in-memory index. Returns the status code of every response the server would write
/// (a malformed request is answered 400 and ends the stream). Must never panic.
pub fn fuzz_requests(bytes: &[u8]) -> Vec<u16> {
    let index = fuzz_index();
    let counters = Counters::default();
    let mut r = std::io::Cursor::new(bytes);
    let mut codes = Vec::new();
    loop {
        match read_request(&mut r) {
            Ok(Some(req)) => {
                let (status, _, _) = route(&req, &index, &counters);
                codes.push(status_code(status));
            }
            Ok(None) => break,
            Err(e) if e.is_io() => break,
            Err(_) => {
                codes.push(400);
                break;
            }
        }
    }
    codes
}

fn status_code(status: &str) -> u16 {
    status
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// One study, one series, one instance whose file does not exist (a retrieval answers 500).
fn fuzz_index() -> Index {
    let instance = json!({
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    });
    Index {
        studies: vec![Study {
            uid: "1.2.3".into(),
            accession: "ACC1".into(),
            date: "20200101".into(),
            modalities: vec!["CT".into()],
            json: json!({"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}),
        }],
        instances: vec![Instance {
            study: "1.2.3".into(),
            series: "1.2.3.4".into(),
            sop: "1.2.3.4.5".into(),
            path: PathBuf::from("/nonexistent/rapha-demo-fuzz.dcm"),
            json: instance,
        }],
    }
}

const JSON: &str = "application/dicom+json";

fn page(items: Vec<&Value>, q: &[(String, String)]) -> Vec<u8> {
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let offset = get("offset").unwrap_or(0);
    let limit = get("limit").unwrap_or(usize::MAX);
    let v: Vec<&Value> = items.into_iter().skip(offset).take(limit).collect();
    serde_json::to_vec(&v).unwrap_or_default()
}

fn in_range(date: &str, range: &str) -> bool {
    match range.split_once('-') {
        Some((a, b)) => (a.is_empty() || date >= a) && (b.is_empty() || date <= b),
        None => date == range,
    }
}

fn route(
    req: &Request,
    index: &Index,
    counters: &Counters,
) -> (&'static str, &'static str, Vec<u8>) {
    let not_found = ("404 Not Found", "text/plain", b"not found".to_vec());
    if req.method != "GET" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            b"the demo PACS answers GET only".to_vec(),
        );
    }
    let Some(rest) = req.path.strip_prefix("/dicom-web/studies") else {
        return not_found;
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let q = &req.query;
    match segs.as_slice() {
        [] => {
            counters.qido.fetch_add(1, Ordering::Relaxed);
            let matches: Vec<&Value> = index
                .studies
                .iter()
                .filter(|s| {
                    q.iter().all(|(k, v)| match k.as_str() {
                        "StudyInstanceUID" => v.split(',').any(|u| u == s.uid),
                        "AccessionNumber" => *v == s.accession,
                        "ModalitiesInStudy" => s.modalities.iter().any(|m| m == v),
                        "StudyDate" => in_range(&s.date, v),
                        _ => true,
                    })
                })
                .map(|s| &s.json)
                .collect();
            ("200 OK", JSON, page(matches, q))
        }
        [study, "series"] => {
            counters.qido.fetch_add(1, Ordering::Relaxed);
            let mut seen = Vec::new();
            let mut out = Vec::new();
            for i in index.instances.iter().filter(|i| i.study == *study) {
                if !seen.contains(&i.series) {
                    seen.push(i.series.clone());
                    out.push(series_json(i));
                }
            }
            let refs: Vec<&Value> = out.iter().collect();
            ("200 OK", JSON, page(refs, q))
        }
        [study, "series", series, "instances"] => {
            counters.qido.fetch_add(1, Ordering::Relaxed);
            let out: Vec<Value> = index
                .instances
                .iter()
                .filter(|i| i.study == *study && i.series == *series)
                .map(instance_json)
                .collect();
            let refs: Vec<&Value> = out.iter().collect();
            ("200 OK", JSON, page(refs, q))
        }
        [study, "series", series, "metadata"] => {
            counters.metadata.fetch_add(1, Ordering::Relaxed);
            let out: Vec<&Value> = index
                .instances
                .iter()
                .filter(|i| i.study == *study && i.series == *series)
                .map(|i| &i.json)
                .collect();
            if out.is_empty() {
                return not_found;
            }
            ("200 OK", JSON, serde_json::to_vec(&out).unwrap_or_default())
        }
        [study, "series", series, "instances", sop] => {
            let Some(inst) = index
                .instances
                .iter()
                .find(|i| i.study == *study && i.series == *series && i.sop == *sop)
            else {
                return not_found;
            };
            let Ok(bytes) = std::fs::read(&inst.path) else {
                return (
                    "500 Internal Server Error",
                    "text/plain",
                    b"read error".to_vec(),
                );
            };
            counters.retrievals.fetch_add(1, Ordering::Relaxed);
            let boundary = "rapha-demo-pacs-boundary-7c1e";
            let mut body = Vec::with_capacity(bytes.len() + 200);
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(&bytes);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let ct: &'static str = "multipart/related; type=\"application/dicom\"; boundary=rapha-demo-pacs-boundary-7c1e";
            ("200 OK", ct, body)
        }
        _ => not_found,
    }
}
