//! Benchmark driver for bench/dicom.sh (not a test). Modes:
//!   read DIR           read every file (the disk baseline)
//!   metadata DIR KEY   header + exclusions + record + pseudonyms for every file
//!   decode DIR         decode pixels of every file; prints decoded MB
//!   qido URL QUERY     scoped QIDO study search, counting studies (peak RSS measured outside)
//!   cohort URL QUERY.. the node's cohort build from a DICOMweb PACS: QIDO-RS, WADO-RS series
//!                      metadata, exclusions, records, pseudonyms, each kept entry written to a
//!                      cohort file as the node writes it (peak RSS measured outside)
//!   feed URL QUERY..   cohort build, then one feed pass per stored transfer syntax as the
//!                      enclave's decoder threads make it: every kept instance retrieved over
//!                      WADO-RS (transfer syntax negotiated) and decoded, RAPHA_BENCH_IN_FLIGHT
//!                      retrievals in flight (default 8); prints decoded MB and seconds per
//!                      stored syntax (RAPHA_BENCH_SYNTAXES names each instance's)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark driver

use std::path::{Path, PathBuf};
use std::time::Instant;

use rapha_dicom::client::Wanted;
use rapha_dicom::cohort::{CohortBuilder, InstanceSource};
use rapha_dicom::cohort_file::CohortFile;
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::pixels::{
    DecodeLimits, Instance, JobDecoders, Output, Samples, LOSSLESS_TRANSFER_SYNTAXES,
};
use rapha_dicom::{
    ClientOptions, DicomConfig, DicomWebClient, Pseudonymizer, ScopeLimits, ScopedQuery,
};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Scope limits wide enough for a whole benchmark archive (a hospital's are narrower).
fn bench_scope() -> ScopeLimits {
    ScopeLimits {
        max_date_range_days: 40_000,
        max_limit: 1_000_000,
        max_list: 10,
        page_size: 500,
    }
}

fn bytes_per_sample(s: &Samples) -> usize {
    match s {
        Samples::U8(_) => 1,
        Samples::U16(_) | Samples::I16(_) => 2,
        _ => 4,
    }
}

/// WADO-RS retrievals kept in flight by the feed pass (`RAPHA_BENCH_IN_FLIGHT`): the enclave's
/// feed fetches and decodes on 2-8 decoder threads per connection (its `feed::decoders`, the
/// machine's cores clamped to 2..=8), each with one retrieval in flight; the default is its
/// most.
fn in_flight() -> usize {
    std::env::var("RAPHA_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .max(1)
}

/// One feed pass over `entries` as the enclave's decoder threads make it: `threads` threads
/// share one client (one connection pool) and take the next entry as each finishes one, so
/// that many retrievals are in flight while others decode, and sandboxed frames go to the
/// job's workers (`job`, one per thread at most). Returns (fed, refused, decoded
/// bytes).
fn feed_pass(
    client: &DicomWebClient,
    files: &[CohortFile],
    entries: &[(usize, usize)],
    threads: usize,
    job: &JobDecoders,
) -> (u64, u64, usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let wanted = Wanted::preferred(LOSSLESS_TRANSFER_SYNTAXES);
    let limits = DecodeLimits::default();
    let work = || {
        let (mut fed, mut refused, mut bytes) = (0u64, 0u64, 0usize);
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(f, j)) = entries.get(i) else {
                break;
            };
            // Read on demand, as the enclave's feed reads the job's cohort file.
            let e = files[f].get(j).unwrap();
            let InstanceSource::DicomWeb {
                study_uid,
                series_uid,
                instance_uid,
            } = &e.source
            else {
                continue;
            };
            let object = client
                .retrieve_instance_bytes(study_uid, series_uid, instance_uid, &wanted)
                .unwrap();
            match Instance::open(&object, &limits)
                .and_then(|i| i.decode_for_job(Output::Stored, job))
            {
                Ok(px) => {
                    bytes += px.data.len() * bytes_per_sample(&px.data);
                    fed += 1;
                }
                Err(_) => refused += 1,
            }
        }
        (fed, refused, bytes)
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        workers.into_iter().fold((0, 0, 0), |acc, w| {
            let (f, r, b) = w.join().unwrap();
            (acc.0 + f, acc.1 + r, acc.2 + b)
        })
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].as_str();
    let t = Instant::now();
    match mode {
        "read" => {
            let fs = files(Path::new(&args[2]));
            let mut bytes = 0usize;
            for f in &fs {
                bytes += std::fs::read(f).unwrap().len();
            }
            println!(
                "{{\"mode\":\"read\",\"files\":{},\"bytes\":{bytes},\"secs\":{}}}",
                fs.len(),
                t.elapsed().as_secs_f64()
            );
        }
        "metadata" => {
            let pseudo = Pseudonymizer::load(Path::new(&args[3])).unwrap();
            let cfg = DicomConfig::default();
            let none = OptOuts::none();
            let c = CohortBuilder::new(&pseudo, &cfg, &none)
                .from_dir(Path::new(&args[2]))
                .unwrap();
            let n = c.entries.len() as u64 + c.exclusions.total();
            println!(
                "{{\"mode\":\"metadata\",\"files\":{n},\"kept\":{},\"secs\":{}}}",
                c.entries.len(),
                t.elapsed().as_secs_f64()
            );
        }
        "decode" => {
            let fs = files(Path::new(&args[2]));
            let blobs: Vec<Vec<u8>> = fs.iter().map(|f| std::fs::read(f).unwrap()).collect();
            // The files are decoded as one job's: sandboxed frames go to the job's workers.
            let job = JobDecoders::new();
            let limits = DecodeLimits::default();
            let t = Instant::now();
            let mut out_bytes = 0usize;
            let mut n = 0;
            for b in &blobs {
                let decoded =
                    Instance::open(b, &limits).and_then(|i| i.decode_for_job(Output::Stored, &job));
                if let Ok(px) = decoded {
                    out_bytes += px.data.len() * bytes_per_sample(&px.data);
                    n += 1;
                }
            }
            println!(
                "{{\"mode\":\"decode\",\"files\":{n},\"decoded_bytes\":{out_bytes},\"secs\":{}}}",
                t.elapsed().as_secs_f64()
            );
        }
        "cohort" | "feed" => {
            let client = DicomWebClient::new(ClientOptions::new(args[2].clone())).unwrap();
            let cfg = DicomConfig {
                scope: bench_scope(),
                ..DicomConfig::default()
            };
            let pseudo = Pseudonymizer::new(rapha_core::HmacKey::from_bytes([0x42; 32]));
            let none = OptOuts::none();
            // One scoped query per argument (a query names one modality), each cohort written
            // to its own cohort file as the node writes a job's; nothing per instance is held.
            let dir =
                std::env::temp_dir().join(format!("rapha-bench-cohort-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut cohort_files = Vec::new();
            let (mut kept, mut excluded) = (0u64, 0u64);
            for (i, q) in args[3..].iter().enumerate() {
                let path = dir.join(format!("{i}.jsonl"));
                let built = CohortBuilder::new(&pseudo, &cfg, &none)
                    .from_dicomweb_to_file(
                        &client,
                        &ScopedQuery::parse(q, &cfg.scope).unwrap(),
                        &path,
                    )
                    .unwrap();
                kept += built.file.entries;
                excluded += built.exclusions.total();
                cohort_files.push(CohortFile::open(&path, &built.file).unwrap());
            }
            let build_secs = t.elapsed().as_secs_f64();
            let (mut fed, mut refused, mut decoded_bytes) = (0u64, 0u64, 0usize);
            // Per stored transfer syntax: instances, decoded bytes, wall seconds of that
            // syntax's own pipelined pass (retrieval + decode).
            let mut by_ts: std::collections::BTreeMap<String, (u64, usize, f64)> =
                std::collections::BTreeMap::new();
            let t = Instant::now();
            if mode == "feed" {
                // The stored syntax of each instance, from the generator's manifests
                // (RAPHA_BENCH_SYNTAXES: lines of "SOP-instance-UID transfer-syntax-UID"): the
                // cohort's metadata does not say it.
                let stored: std::collections::HashMap<String, String> =
                    std::env::var("RAPHA_BENCH_SYNTAXES")
                        .map(|p| std::fs::read_to_string(p).unwrap())
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.split_once(' '))
                        .map(|(i, t)| (i.to_owned(), t.to_owned()))
                        .collect();
                // The pass is one job's: its sandboxed frames go to the job's workers.
                let job = JobDecoders::new();
                let mut groups: std::collections::BTreeMap<String, Vec<(usize, usize)>> =
                    std::collections::BTreeMap::new();
                for (f, file) in cohort_files.iter().enumerate() {
                    file.try_for_each(|j, e| {
                        let ts = match &e.source {
                            InstanceSource::DicomWeb { instance_uid, .. } => {
                                stored.get(instance_uid)
                            }
                            InstanceSource::File(_) => None,
                        };
                        let ts = ts.map_or("unknown", String::as_str).to_owned();
                        groups.entry(ts).or_default().push((f, j));
                        Ok(())
                    })
                    .unwrap();
                }
                for (ts, group) in groups {
                    let one = Instant::now();
                    let (n, r, b) = feed_pass(&client, &cohort_files, &group, in_flight(), &job);
                    by_ts.insert(ts, (n, b, one.elapsed().as_secs_f64()));
                    (fed, refused, decoded_bytes) = (fed + n, refused + r, decoded_bytes + b);
                }
            }
            let by_ts: Vec<String> = by_ts
                .iter()
                .map(|(ts, (n, b, secs))| {
                    format!("\"{ts}\":{{\"instances\":{n},\"decoded_bytes\":{b},\"secs\":{secs}}}")
                })
                .collect();
            println!(
                "{{\"mode\":\"{mode}\",\"in_flight\":{},\"kept\":{},\"excluded\":{},\"build_secs\":{build_secs},\"fed\":{fed},\"refused\":{refused},\"decoded_bytes\":{decoded_bytes},\"feed_secs\":{},\"by_ts\":{{{}}}}}",
                in_flight(),
                kept,
                excluded,
                t.elapsed().as_secs_f64(),
                by_ts.join(",")
            );
            drop(cohort_files);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        "qido" => {
            let q = ScopedQuery::parse(&args[3], &bench_scope()).unwrap();
            let client = DicomWebClient::new(ClientOptions::new(args[2].clone())).unwrap();
            let mut n = 0u64;
            client
                .for_each_study(&q, &mut |_s| {
                    n += 1;
                    Ok(())
                })
                .unwrap();
            println!(
                "{{\"mode\":\"qido\",\"studies\":{n},\"secs\":{}}}",
                t.elapsed().as_secs_f64()
            );
        }
        other => panic!("unknown mode {other}"),
    }
}
