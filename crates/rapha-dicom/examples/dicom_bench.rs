//! Benchmark driver for bench/dicom.sh (not a test). Modes:
//!   read DIR           read every file (the disk baseline)
//!   metadata DIR KEY   header + exclusions + record + pseudonyms for every file
//!   decode DIR         decode pixels of every file; prints decoded MB
//!   qido URL QUERY     scoped QIDO study search, counting studies (peak RSS measured outside)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark driver

use std::path::{Path, PathBuf};
use std::time::Instant;

use rapha_dicom::cohort::CohortBuilder;
use rapha_dicom::exclusion::OptOuts;
use rapha_dicom::pixels::{decode, Output};
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
                    let per = match px.data {
                        rapha_dicom::pixels::Samples::U8(_) => 1,
                        rapha_dicom::pixels::Samples::U16(_)
                        | rapha_dicom::pixels::Samples::I16(_) => 2,
                        _ => 4,
                    };
                    out_bytes += px.data.len() * per;
                    n += 1;
                }
            }
            println!(
                "{{\"mode\":\"decode\",\"files\":{n},\"decoded_bytes\":{out_bytes},\"secs\":{}}}",
                t.elapsed().as_secs_f64()
            );
        }
        "qido" => {
            let limits = ScopeLimits {
                max_date_range_days: 40_000,
                max_limit: 1_000_000,
                max_list: 10,
                page_size: 500,
            };
            let q = ScopedQuery::parse(&args[3], &limits).unwrap();
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
