//! Feed benchmark through the SDKs (not run in CI): `bench/enclave.sh`.
//!
//! Decoded MB/s a trainer gets when it reads every record of a cohort through the SDK, against
//! decoding the same records in-process with no feed. Each pass serves a fresh feed (so every
//! record is fingerprinted for the output guard on first fetch, as in a real job) and reads
//! the cohort once in a shuffled order; the in-process pass decodes in the same order.
//!
//! Readers: the Rust SDK's `Client::records` (pipelined, `PREFETCH_DEPTH` requests in
//! flight; also with the feed held to one decoder thread), `Client::fetch` one record at a
//! time (lock-step), and the Python SDK's `Client.records` / `Client.fetch` when
//! `RAPHA_PYTHON` is set. With `RAPHA_FEED_BENCH_PACS=1` the records come from Orthanc over
//! WADO-RS (started here, needs the Debian packages) instead of files, on both sides. The first-epoch ratios are
//! the target's measure (every record decoded and fingerprinted on the feed's path); a
//! three-epoch pass shows what a trainer gets over a job, where the node keeps records
//! fetched a second time decoded in memory and serves the third epoch from there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark: panics are failures

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rapha_core::JobId;
use rapha_dicom::DicomConfig;
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::feed::{self, Feed, FeedState};
use rapha_enclave::split::split_records;
use rapha_enclave::RecordSource;
use rapha_trainer_sdk::Client;

#[path = "../../../bench/support/cohort.rs"]
mod cohort;
use cohort::{bench_cohort, studies_arg};

/// Passes per reader (`RAPHA_FEED_BENCH_PASSES` overrides): the median is reported. A pass
/// of 200 studies takes tens of milliseconds, so single passes swing with whatever else the
/// machine does; fifteen give a stable median.
const PASSES: usize = 15;

#[derive(Clone, Copy, PartialEq)]
enum Reader {
    RustPipelined,
    RustPipelinedOneDecoder,
    RustPipelinedEpochs,
    RustLockStep,
    PythonPipelined,
    PythonLockStep,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Reader::RustPipelined => "Rust SDK records() (pipelined), first epoch",
            Reader::RustPipelinedOneDecoder => {
                "Rust SDK records() (pipelined), first epoch, one decoder thread"
            }
            Reader::RustPipelinedEpochs => {
                "Rust SDK records() (pipelined), 3 epochs of one job (the third from the node's cache)"
            }
            Reader::RustLockStep => "Rust SDK fetch() (lock-step)",
            Reader::PythonPipelined => "Python SDK records() (pipelined)",
            Reader::PythonLockStep => "Python SDK fetch() (lock-step)",
        }
    }
}

fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut st = seed | 1;
    for i in (1..n).rev() {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        order.swap(i, (st % (i as u64 + 1)) as usize);
    }
    order
}

/// Serves a fresh feed on `dir/<name>` while `read` runs; returns what `read` returns.
fn with_feed<T>(
    dir: &Path,
    name: &str,
    source: &DicomSource,
    decoders: usize,
    read: impl FnOnce(&Path) -> T,
) -> T {
    let splits = split_records(source.records(), 20);
    let sock = dir.join(name);
    let listener = feed::bind(&sock).unwrap();
    let f = Feed {
        job: JobId::random(),
        confinement: "none-development",
        source,
        splits: &splits,
        state: Mutex::new(FeedState::default()),
        stop: AtomicBool::new(false),
        decoders,
    };
    std::thread::scope(|s| {
        s.spawn(|| f.serve(&listener));
        let out = read(&sock);
        f.stop.store(true, Ordering::Relaxed);
        out
    })
}

/// CPU seconds used so far by this process (all threads).
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let secs = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
    };
    secs(UsageWho::RUSAGE_SELF)
}

/// Decoded MB/s of one pass of `reader` over `order`, and CPU seconds used outside this
/// process (none: the Rust reader is a thread here).
fn sdk_pass(sock: &Path, reader: Reader, order: &[u32]) -> (f64, f64) {
    let mut c = Client::connect_to(sock, "feed-bench").unwrap();
    let t = Instant::now();
    let mut bytes = 0usize;
    let size = |r: &rapha_trainer_sdk::Record| {
        use rapha_trainer_sdk::Pixels;
        let width = match &r.pixels {
            Pixels::U8(_) => 1,
            Pixels::U16(_) | Pixels::I16(_) => 2,
            _ => 4,
        };
        r.pixels.len() * width
    };
    if reader != Reader::RustLockStep {
        for r in c.records(order.iter().copied()) {
            let r = r.unwrap();
            bytes += size(&r);
            std::hint::black_box(&r);
        }
    } else {
        for &i in order {
            let r = c.fetch(i).unwrap();
            bytes += size(&r);
            std::hint::black_box(&r);
        }
    }
    let rate = bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
    c.done().unwrap();
    (rate, 0.0)
}

/// Decoded MB/s of one pass of the Python SDK, and the CPU seconds its reading loop took.
fn python_pass(sock: &Path, reader: Reader, order: &[u32]) -> Option<(f64, f64)> {
    let python = std::env::var("RAPHA_PYTHON").ok()?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let order: Vec<String> = order.iter().map(u32::to_string).collect();
    let out = std::process::Command::new(python)
        .arg(format!("{root}/bench/enclave_feed.py"))
        .arg(sock)
        .arg(if reader == Reader::PythonPipelined {
            "records"
        } else {
            "fetch"
        })
        .arg(order.join(","))
        .env("PYTHONPATH", format!("{root}/sdk/python"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python reader failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

fn main() {
    let studies = studies_arg();
    let bench = bench_cohort(studies);
    let dir = &bench.dir;
    let config = DicomConfig {
        scope: rapha_dicom::ScopeLimits {
            max_date_range_days: 4018,
            max_limit: 1000,
            max_list: 100,
            page_size: 100,
        },
        ..DicomConfig::default()
    };
    let builder = bench.builder(&config);
    // RAPHA_FEED_BENCH_PACS=1: records come from Orthanc over WADO-RS, as in production (both
    // sides of each ratio fetch them), instead of from files.
    let orthanc = std::env::var_os("RAPHA_FEED_BENCH_PACS").map(|_| {
        let o = rapha_testkit::services::Orthanc::start()
            .unwrap()
            .expect("Orthanc with its DICOMweb plugin is installed (scripts/test installs it)");
        o.upload_dir(&dir.path().join("dicom")).unwrap();
        o
    });
    let client = || {
        orthanc.as_ref().map(|o| {
            rapha_dicom::DicomWebClient::new(rapha_dicom::ClientOptions::new(o.dicomweb_url()))
                .unwrap()
        })
    };
    let cohort = match client() {
        Some(c) => {
            let q = rapha_dicom::ScopedQuery::parse(
                "StudyDate=20160101-20261231&ModalitiesInStudy=CT,MR,CR,DX,US,SC,OT&limit=1000",
                &config.scope,
            )
            .unwrap();
            builder.from_dicomweb(&c, &q).unwrap()
        }
        None => builder.from_dir(&dir.path().join("dicom")).unwrap(),
    };
    let (source, _ids) = DicomSource::new(&cohort.entries, client());
    let n = source.records().len();

    let mut readers = vec![
        Reader::RustPipelined,
        Reader::RustPipelinedOneDecoder,
        Reader::RustLockStep,
        Reader::RustPipelinedEpochs,
    ];
    if std::env::var_os("RAPHA_PYTHON").is_some() {
        readers.extend([Reader::PythonPipelined, Reader::PythonLockStep]);
    }
    // Ratios per pass: each reader's rate over the in-process rate measured just before it,
    // in the same shuffled order, so a burst of load elsewhere hits both sides of a ratio.
    // Work ratios: CPU seconds of the in-process decode over CPU seconds of the whole feed
    // pass (node threads, fingerprinting, the reader), which other load on the machine does
    // not change: the ratio the feed would reach with every core busy.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); readers.len()];
    let mut work: Vec<Vec<f64>> = vec![Vec::new(); readers.len()];
    let mut decode_rates = Vec::new();
    let mut total_bytes = 0;
    let mut sock_no = 0;
    let passes = std::env::var("RAPHA_FEED_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(PASSES);
    // Each reader's passes run together, after one warm-up pass that is not counted, so a
    // reader is measured in its steady state and not in the wake of another (a Python
    // process's exit, a cache full of another reader's buffers).
    for (k, &reader) in readers.iter().enumerate() {
        for pass in 0..=passes {
            let epochs = if reader == Reader::RustPipelinedEpochs {
                3
            } else {
                1
            };
            let order: Vec<u32> = (0..epochs)
                .flat_map(|e| shuffled(n, 0x9e37_79b9 + (pass * 16 + k + e * 4) as u64))
                .collect();
            let t = Instant::now();
            let cpu = cpu_seconds();
            total_bytes = 0;
            for &i in &order {
                total_bytes += source.pixels(i as usize).unwrap().bytes.len();
            }
            total_bytes /= epochs;
            let decode = (total_bytes * epochs) as f64 / t.elapsed().as_secs_f64() / 1e6;
            let decode_cpu = cpu_seconds() - cpu;
            let cpu = cpu_seconds();
            decode_rates.push(decode);
            sock_no += 1;
            let rate = with_feed(
                dir.path(),
                &format!("f{sock_no}.sock"),
                &source,
                if reader == Reader::RustPipelinedOneDecoder {
                    1
                } else {
                    feed::decoders()
                },
                |sock| match reader {
                    Reader::RustPipelined
                    | Reader::RustPipelinedOneDecoder
                    | Reader::RustLockStep
                    | Reader::RustPipelinedEpochs => Some(sdk_pass(sock, reader, &order)),
                    Reader::PythonPipelined | Reader::PythonLockStep => {
                        python_pass(sock, reader, &order)
                    }
                },
            );
            if pass == 0 {
                continue; // warm-up
            }
            if let Some((rate, reader_cpu)) = rate {
                ratios[k].push(rate / decode);
                work[k].push(decode_cpu / (cpu_seconds() - cpu + reader_cpu));
            }
        }
    }
    decode_rates.sort_by(f64::total_cmp);
    println!(
        "feed through the SDKs: {studies} studies, {n} records from {}, {:.1} MB decoded per pass; in-process decode median {:.0} MB/s",
        if orthanc.is_some() { "Orthanc over WADO-RS" } else { "files" },
        total_bytes as f64 / 1e6,
        decode_rates[decode_rates.len() / 2]
    );
    for (k, reader) in readers.iter().enumerate() {
        let r = &mut ratios[k];
        if r.is_empty() {
            println!("  {}: no result", reader.name());
            continue;
        }
        r.sort_by(f64::total_cmp);
        let w = &mut work[k];
        w.sort_by(f64::total_cmp);
        println!(
            "  {}: feed/in-process ratio median {:.2} (min {:.2}, max {:.2}, {} passes; target >= 0.70); CPU work ratio median {:.2}",
            reader.name(),
            r[r.len() / 2],
            r[0],
            r[r.len() - 1],
            r.len(),
            w[w.len() / 2]
        );
    }
}
