//! PyTorch image benchmark (not run in CI): `bench/pytorch.sh`.
//!
//! - `pytorch_bench unpack IMAGE WORK`: signs the image (oci-archive or layout) with the dev
//!   key into WORK/bundle (not timed), then times what the node does with a received bundle:
//!   `verify_bundle` + `unpack_rootfs` into WORK/rootfs. Prints seconds and this process's
//!   peak RSS (VmHWM).
//! - `pytorch_bench feed ROOTFS STUDIES`: runs bench/pytorch_feed.py (copied into the rootfs)
//!   in the node's sandbox under runc on a synthetic cohort, then the trainer itself: prints
//!   container start to first record for both, and the script's records/s figures (through
//!   the Python SDK vs local .npy files in the same container).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark: panics are failures

use std::path::Path;
use std::time::{Duration, Instant};

use rapha_core::{JobId, OutputDecl, OutputKind, ResourceLimits};
use rapha_dicom::DicomConfig;
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::session::RunPaths;
use rapha_enclave::{EnclaveSession, JobSpec, RecordSource, SandboxConfig};

#[path = "../../../bench/support/cohort.rs"]
mod cohort;
use cohort::bench_cohort;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("unpack") => unpack(Path::new(&args[2]), Path::new(&args[3])),
        Some("feed") => feed(Path::new(&args[2]), args[3].parse().unwrap()),
        _ => panic!("usage: pytorch_bench unpack IMAGE WORK | feed ROOTFS STUDIES"),
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn unpack(image: &Path, work: &Path) {
    let spec = rapha_bundle::TrainerSpec::from_toml(include_str!(
        "../../../trainers/pytorch-lesion/trainer.toml"
    ))
    .unwrap();
    let key = rapha_demo::signing::publisher_key();
    let bundle = work.join("bundle");
    rapha_bundle::sign_bundle(&key, image, &spec, &bundle).unwrap();
    let trust = work.join("trust");
    rapha_bundle::TrustStore::add(
        &trust,
        &spec.publisher,
        &key.public_key(),
        std::slice::from_ref(&spec.name),
        None,
    )
    .unwrap();
    let store = rapha_bundle::TrustStore::open(&trust).unwrap();
    let before = vm_hwm_kib();
    let t = Instant::now();
    let verified = rapha_bundle::verify_bundle(&bundle, &store).unwrap();
    let tv = t.elapsed();
    let r = verified.unpack_rootfs(&work.join("rootfs")).unwrap();
    let total = t.elapsed();
    println!(
        "verify {:.2} s + unpack {:.2} s = {:.2} s; {} entries, {:.0} MB, {} setuid/setgid cleared; \
         peak RSS {} KiB (before verifying: {} KiB)",
        tv.as_secs_f64(),
        (total - tv).as_secs_f64(),
        total.as_secs_f64(),
        r.entries,
        r.bytes as f64 / 1e6,
        r.setuid_cleared,
        vm_hwm_kib(),
        before
    );
    println!(
        "seconds={:.3} rss_kib={}",
        total.as_secs_f64(),
        vm_hwm_kib()
    );
}

fn feed(rootfs: &Path, studies: usize) {
    let bench = bench_cohort(studies);
    let cohort = bench.cohort(&DicomConfig::default());
    let (source, ids) = DicomSource::new(&cohort.entries, None);
    println!(
        "cohort: {studies} studies, {} records",
        source.records().len()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/pytorch_feed.py");
    std::fs::create_dir_all(rootfs.join("bench")).unwrap();
    std::fs::copy(script, rootfs.join("bench/pytorch_feed.py")).unwrap();
    let env_prefix = [
        "/usr/bin/env",
        "OMP_NUM_THREADS=2",
        "MKL_NUM_THREADS=2",
        "OPENBLAS_NUM_THREADS=2",
        "OMP_WAIT_POLICY=PASSIVE",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONPATH=/app",
        "/usr/bin/python3",
        "-B",
    ];
    let run = |argv: &[&str], tmp_mb: u64| {
        let outputs = ["model.safetensors", "metrics.json"]
            .iter()
            .zip([OutputKind::Safetensors, OutputKind::MetricsJson])
            .map(|(n, kind)| OutputDecl {
                name: (*n).into(),
                kind,
                max_bytes: 50 << 20,
                tensors: if kind == OutputKind::Safetensors {
                    rapha_testkit::bundle::reference_tensors()
                } else {
                    vec![]
                },
            })
            .collect();
        let job = JobSpec {
            job_id: JobId::random(),
            validation_percent: 20,
            min_validation_patients: 2,
            audit_patients: 0,
            outputs,
            total_output_cap: 150 << 20,
            limits: ResourceLimits {
                memory_mb: 2048,
                cpus: 2,
                pids: 64,
                wall_seconds: 1800,
                tmp_mb,
                gpus: 0,
            },
            wall_override: None,
            release: rapha_core::release::ReleaseTransform::DECLARED,
        };
        let session = EnclaveSession::new(job).unwrap();
        let run_dir = tempfile::tempdir().unwrap();
        let cfg = SandboxConfig {
            runtime_root: run_dir.path().join("runc"),
            ..SandboxConfig::default()
        };
        let paths = RunPaths {
            work_root: &run_dir.path().join("work"),
            rootfs,
            release_dir: &run_dir.path().join("rel"),
        };
        let argv: Vec<String> = env_prefix
            .iter()
            .chain(argv)
            .map(|s| (*s).to_owned())
            .collect();
        let r = session.run(&cfg, &paths, &argv, &source, &ids).unwrap();
        (r.stats, r.stderr, r.signed.manifest.outcome)
    };
    if std::env::var_os("PYTORCH_BENCH_TRAINER_ONLY").is_some() {
        let (stats, stderr, outcome) = run(&["/app/train.py"], 64);
        println!(
            "trainer run ({outcome:?}) in {:.1} s, first record after {:.0} ms\n{}",
            stats.elapsed.as_secs_f64(),
            ms(stats.first_fetch_after_launch.unwrap_or_default()),
            String::from_utf8_lossy(&stderr)
        );
        return;
    }
    let (stats, stderr, outcome) = run(&["/bench/pytorch_feed.py"], 1024);
    println!(
        "feed script ({outcome:?}): container start to first record {:.0} ms\n{}",
        ms(stats.first_fetch_after_launch.unwrap_or_default()),
        String::from_utf8_lossy(&stderr)
    );
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let (stats, stderr, outcome) = run(&["/app/train.py", "--epochs", "1"], 64);
        firsts.push(stats.first_fetch_after_launch.unwrap_or_default());
        if firsts.len() == 1 {
            println!(
                "trainer run ({outcome:?}, 1 epoch) in {:.1} s",
                stats.elapsed.as_secs_f64()
            );
            eprintln!("{}", String::from_utf8_lossy(&stderr));
        }
    }
    firsts.sort();
    println!(
        "trainer: container start to first record, median of {}: {:.0} ms (min {:.0}, max {:.0})",
        firsts.len(),
        ms(firsts[firsts.len() / 2]),
        ms(firsts[0]),
        ms(firsts[firsts.len() - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
