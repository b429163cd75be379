//! Benchmark peer for `bench/demo.sh`: the same trainer run *directly*, outside Rapha, on the
//! same decoded records. Not part of any product; no runc, no guard, no chain, no PACS while
//! the trainer runs.
//!
//! Before the clock starts (not timed): the demo's synthetic cohort (same studies, seed and
//! options), the same scoped cohort the demo node builds (same dev HMAC key, opt-outs, label
//! table, query) from the embedded demo PACS, and every record's pixels fetched and decoded
//! by the enclave runtime's decoder into memory; then the PACS is stopped.
//!
//! Timed: the trainer started as a plain process (`TRAINER ARGS...`), fed those records from
//! memory over trainer protocol v1 by the minimal server below, until it exits.
//!
//! Prints one JSON object: records, train/validation counts, records fed, predictions, the
//! validation AUC of those predictions, and `trainer_seconds`.
//!
//! Usage: `direct_trainer --studies N [--seed S] -- TRAINER [ARGS...]`

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rapha_core::CohortQuery;
use rapha_demo::pacs::DemoPacs;
use rapha_dicom::client::ClientOptions;
use rapha_dicom::cohort::CohortBuilder;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, DicomWebClient, Pseudonymizer, ScopedQuery};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::protocol::{self, ErrorCode, Request};
use rapha_enclave::split::{split_records, Split};
use rapha_enclave::{FeedRecord, Pixels, RecordSource};
use rapha_testkit::cohort::{generate, CohortSpec};
use serde_json::json;

/// The demo job's validation share (`rapha-demo run` asks for 30%).
const VALIDATION_PERCENT: u8 = 30;

struct Records {
    records: Vec<FeedRecord>,
    pixels: Vec<Option<Pixels>>,
    splits: Vec<Split>,
}

#[derive(Default)]
struct Served {
    fed: std::collections::BTreeSet<usize>,
    predictions: std::collections::BTreeMap<usize, f64>,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut studies, mut seed) = (120usize, 1u64);
    let mut trainer: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--studies" => studies = args.next().context("--studies N")?.parse()?,
            "--seed" => seed = args.next().context("--seed S")?.parse()?,
            "--" => trainer = args.by_ref().collect(),
            other => bail!(
                "unknown argument {other:?}; usage: --studies N [--seed S] -- TRAINER [ARGS...]"
            ),
        }
    }
    if trainer.is_empty() {
        bail!("usage: direct_trainer --studies N [--seed S] -- TRAINER [ARGS...]");
    }

    let work = tempfile::tempdir()?;
    let cohort_dir = work.path().join("cohort");
    let manifest = generate(&CohortSpec {
        rle_fraction: 0.2,
        ..CohortSpec::new(studies, seed, cohort_dir.clone())
    })?;
    let (recs, decode_seconds) = decoded_records(&cohort_dir, manifest.labelled_accessions())?;

    let sock = work.path().join("data.sock");
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;
    let listener = UnixListener::bind(&sock)?;
    let served = Mutex::new(Served::default());

    let started = Instant::now();
    let (status, trainer_seconds) = std::thread::scope(|s| -> Result<_> {
        let server = s.spawn(|| serve(&listener, &recs, &served));
        let status = Command::new(&trainer[0])
            .args(&trainer[1..])
            .env_clear()
            .env("RAPHA_DATA_SOCKET", &sock)
            .env("RAPHA_OUT", &out)
            .env("RAPHA_PROTOCOL", "1")
            .env("HOME", work.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("starting {}", trainer[0]))?;
        let secs = started.elapsed().as_secs_f64();
        // Wake the accept loop if the trainer died before connecting.
        let _ = UnixStream::connect(&sock);
        server
            .join()
            .map_err(|_| anyhow!("the feed server panicked"))?;
        Ok((status, secs))
    })?;

    let st = served
        .lock()
        .map_err(|_| anyhow!("the feed server panicked"))?;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for (&i, &score) in &st.predictions {
        if let Some(l) = recs.records.get(i).and_then(|r| r.label) {
            scores.push(score);
            labels.push(l);
        }
    }
    let validation = recs
        .splits
        .iter()
        .filter(|s| **s == Split::Validation)
        .count();
    // The trainer's own measure of its run (metrics.json "seconds"), to tell a slower trainer
    // from time spent around it.
    let self_seconds = std::fs::read(out.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|m| m.get("seconds").and_then(serde_json::Value::as_f64));
    let report = json!({
        "records": recs.records.len(),
        "train": recs.records.len() - validation,
        "validation": validation,
        "records_fed": st.fed.len(),
        "predictions": st.predictions.len(),
        "auc": (!scores.is_empty()).then(|| rapha_testkit::auc(&scores, &labels)),
        "decode_seconds": decode_seconds,
        "trainer_seconds": trainer_seconds,
        "trainer_self_seconds": self_seconds,
        "trainer_exit": status.code(),
    });
    println!("{report}");
    std::io::stdout().flush()?;
    if !status.success() {
        bail!("the trainer exited with {status}");
    }
    Ok(())
}

/// The demo node's cohort, decoded into memory (see the module docs), and the seconds spent
/// fetching (WADO-RS) and decoding the pixels.
fn decoded_records(
    cohort_dir: &std::path::Path,
    accessions: Vec<String>,
) -> Result<(Records, f64)> {
    let pacs = DemoPacs::start(&cohort_dir.join("dicom"))?;
    let config = DicomConfig::default();
    let query = ScopedQuery::from_cohort_query(
        &CohortQuery {
            limit: Some(u32::try_from(accessions.len())?),
            accession_numbers: accessions,
            ..CohortQuery::default()
        },
        &config.scope,
    )?;
    let labels = LabelTable::load(&cohort_dir.join("labels.csv"))?;
    let optouts = OptOuts::load(&cohort_dir.join("optouts.csv"))?;
    let pseudo = Pseudonymizer::new(rapha_demo::node::dev_hmac_key());
    let client = || DicomWebClient::new(ClientOptions::new(pacs.dicomweb_url().to_owned()));
    let cohort = CohortBuilder::new(&pseudo, &config, &optouts)
        .with_labels(&labels)
        .from_dicomweb(&client()?, &query)?;
    let (source, _ids) = DicomSource::new(&cohort.entries, Some(client()?));
    let records = source.records().to_vec();
    let t = Instant::now();
    let pixels = (0..records.len())
        .map(|i| source.pixels(i).ok())
        .collect::<Vec<_>>();
    let decode_seconds = t.elapsed().as_secs_f64();
    drop(pacs);
    let splits = split_records(&records, VALIDATION_PERCENT);
    Ok((
        Records {
            records,
            pixels,
            splits,
        },
        decode_seconds,
    ))
}

/// Serves protocol v1 from memory until the trainer says `done` (or goes away).
fn serve(listener: &UnixListener, recs: &Records, served: &Mutex<Served>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        match serve_connection(conn, recs, served) {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

/// `Ok(true)` after `done`; `Ok(false)` when the trainer closed the connection.
fn serve_connection(conn: UnixStream, recs: &Records, served: &Mutex<Served>) -> Result<bool> {
    let mut r = std::io::BufReader::new(conn.try_clone()?);
    let mut w = std::io::BufWriter::new(conn);
    let n = recs.records.len();
    let validation = recs
        .splits
        .iter()
        .filter(|s| **s == Split::Validation)
        .count();
    loop {
        let header = match protocol::read_header(&mut r, protocol::MAX_REQUEST_HEADER) {
            Ok(h) => h,
            Err(_) => return Ok(false),
        };
        let to_vec = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
        let mut payload: &[u8] = &[];
        let mut done = false;
        let head = match protocol::parse_request(&header) {
            Err(m) => protocol::error_header(ErrorCode::BadRequest, &m),
            Ok(Request::Hello { .. }) => to_vec(json!({"ok": true, "protocol": 1,
                "job": "00000000000000000000000000000000", "records": n,
                "train": n - validation, "validation": validation,
                "confinement": "none-development", "max_payload": protocol::MAX_PAYLOAD})),
            Ok(Request::List { offset, limit }) => {
                let end = (offset + limit.min(protocol::MAX_PAGE)).min(n);
                let page: Vec<serde_json::Value> = (offset.min(end)..end)
                    .map(|i| {
                        let r = &recs.records[i];
                        let split = recs.splits[i];
                        let mut v = json!({"index": i, "instance": r.instance.to_hex(),
                            "series": r.series.to_hex(), "study": r.study.to_hex(),
                            "patient": r.patient.to_hex(), "split": split,
                            "modality": r.modality, "dtype": r.dtype, "shape": r.shape,
                            "attributes": r.attributes});
                        if let (Split::Train, Some(l)) = (split, r.label) {
                            v["label"] = json!(l);
                        }
                        v
                    })
                    .collect();
                to_vec(json!({"ok": true, "total": n, "records": page}))
            }
            Ok(Request::Fetch { index }) => match recs.pixels.get(index) {
                Some(Some(p)) => {
                    if let Ok(mut st) = served.lock() {
                        st.fed.insert(index);
                    }
                    payload = &p.bytes;
                    to_vec(json!({"ok": true, "index": index, "dtype": p.dtype,
                        "shape": p.shape, "payload": p.bytes.len()}))
                }
                Some(None) => protocol::error_header(ErrorCode::Unavailable, "not decodable"),
                None => protocol::error_header(ErrorCode::NoSuchRecord, "out of range"),
            },
            Ok(Request::Progress { .. }) => to_vec(json!({"ok": true})),
            Ok(Request::Predict { predictions }) => {
                let mut st = served
                    .lock()
                    .map_err(|_| anyhow!("the feed state is poisoned"))?;
                for p in &predictions {
                    st.predictions.insert(p.index, p.score);
                }
                let remaining = validation.saturating_sub(st.predictions.len());
                to_vec(json!({"ok": true, "accepted": predictions.len(), "remaining": remaining}))
            }
            Ok(Request::Done) => {
                done = true;
                let predicted = served.lock().map(|s| s.predictions.len()).unwrap_or(0);
                to_vec(json!({"ok": true, "predicted": predicted, "validation": validation}))
            }
        };
        protocol::write_frame(&mut w, &head, payload)?;
        if done {
            return Ok(true);
        }
    }
}
