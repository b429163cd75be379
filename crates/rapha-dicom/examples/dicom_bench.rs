//! Benchmark driver for bench/dicom.sh (not a test). Modes:
//!   read DIR           read every file (the disk baseline)
//!   metadata DIR KEY   header + exclusions + record + pseudonyms for every file
//!   decode DIR         decode pixels of every file; prints decoded MB
//!   qido URL QUERY     scoped QIDO study search, counting studies (peak RSS measured outside)
//!   cohort URL QUERY.. the node's cohort build from a DICOMweb PACS: QIDO-RS, WADO-RS series
//!                      metadata, exclusions, records, pseudonyms (peak RSS measured outside)
//!   feed URL QUERY..   cohort build, then one feed pass as the enclave's record source makes
//!                      it: every kept instance retrieved over WADO-RS (transfer syntax
//!                      negotiated) and decoded; prints decoded MB and seconds per phase
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark driver

use std::path::{Path, PathBuf};
use std::time::Instant;

use rapha_dicom::client::Wanted;
use rapha_dicom::cohort::{CohortBuilder, InstanceSource};
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::pixels::{
    decode, DecodeLimits, Instance, Output, Samples, LOSSLESS_TRANSFER_SYNTAXES,
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
            let t = Instant::now();
            let mut out_bytes = 0usize;
            let mut n = 0;
            for b in &blobs {
                if let Ok(px) = decode(b, Output::Stored) {
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
            // One scoped query per argument (a query names one modality); the cohorts are held
            // together, as a node holds its cohort.
            let mut c = CohortBuilder::new(&pseudo, &cfg, &none)
                .from_dicomweb(&client, &ScopedQuery::parse(&args[3], &cfg.scope).unwrap())
                .unwrap();
            for q in &args[4..] {
                let more = CohortBuilder::new(&pseudo, &cfg, &none)
                    .from_dicomweb(&client, &ScopedQuery::parse(q, &cfg.scope).unwrap())
                    .unwrap();
                c.entries.extend(more.entries);
                for (reason, n) in more.exclusions.counts() {
                    for _ in 0..*n {
                        c.exclusions.add(reason);
                    }
                }
            }
            let build_secs = t.elapsed().as_secs_f64();
            let (mut fed, mut refused, mut decoded_bytes) = (0u64, 0u64, 0usize);
            // Per served transfer syntax: instances, decoded bytes, seconds (retrieval + decode).
            let mut by_ts: std::collections::BTreeMap<String, (u64, usize, f64)> =
                std::collections::BTreeMap::new();
            let t = Instant::now();
            if mode == "feed" {
                let wanted = Wanted::preferred(LOSSLESS_TRANSFER_SYNTAXES);
                let limits = DecodeLimits::default();
                for e in &c.entries {
                    let InstanceSource::DicomWeb {
                        study_uid,
                        series_uid,
                        instance_uid,
                    } = &e.source
                    else {
                        continue;
                    };
                    let one = Instant::now();
                    let bytes = client
                        .retrieve_instance_bytes(study_uid, series_uid, instance_uid, &wanted)
                        .unwrap();
                    let Ok(instance) = Instance::open(&bytes, &limits) else {
                        refused += 1;
                        continue;
                    };
                    match instance.decode(Output::Stored) {
                        Ok(px) => {
                            let n = px.data.len() * bytes_per_sample(&px.data);
                            let slot = by_ts
                                .entry(instance.transfer_syntax().to_owned())
                                .or_default();
                            *slot = (slot.0 + 1, slot.1 + n, slot.2 + one.elapsed().as_secs_f64());
                            decoded_bytes += n;
                            fed += 1;
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
            let by_ts: Vec<String> = by_ts
                .iter()
                .map(|(ts, (n, b, secs))| {
                    format!("\"{ts}\":{{\"instances\":{n},\"decoded_bytes\":{b},\"secs\":{secs}}}")
                })
                .collect();
            println!(
                "{{\"mode\":\"{mode}\",\"kept\":{},\"excluded\":{},\"build_secs\":{build_secs},\"fed\":{fed},\"refused\":{refused},\"decoded_bytes\":{decoded_bytes},\"feed_secs\":{},\"by_ts\":{{{}}}}}",
                c.entries.len(),
                c.exclusions.total(),
                t.elapsed().as_secs_f64(),
                by_ts.join(",")
            );
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
