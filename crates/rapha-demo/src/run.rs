//! `rapha-demo run`: one job end to end, printing each step as it happens. Every line printed
//! says what actually ran; a step that could not run is listed as such and the exit code is
//! non-zero.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rapha_core::{CohortQuery, HmacKey, JobId, OutputDecl, OutputKind, ResourceLimits};
use rapha_dicom::client::ClientOptions;
use rapha_dicom::cohort::{Cohort, CohortBuilder};
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, DicomWebClient, Pseudonymizer, ScopeLimits, ScopedQuery};
use rapha_enclave::dicom::DicomSource;
use rapha_enclave::session::RunPaths;
use rapha_enclave::{EnclaveSession, JobSpec, ManifestOutcome, SandboxConfig};
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};

use crate::pacs::DemoPacs;
use crate::RunArgs;

/// Exit code of a refused job.
pub const EXIT_REFUSED: i32 = 3;

/// What happened to each step, for the closing summary.
#[derive(Default)]
struct Steps {
    done: Vec<(String, String)>,
    not_run: Vec<(String, String)>,
    t0: Option<Instant>,
}

impl Steps {
    fn ok(&mut self, step: &str, detail: impl Into<String>) {
        let detail = detail.into();
        let t = self
            .t0
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs_f64();
        println!("[{t:6.1}s] ok       {step}: {detail}");
        self.done.push((step.to_owned(), detail));
    }
    fn skipped(&mut self, step: &str, why: impl Into<String>) {
        let why = why.into();
        let t = self
            .t0
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs_f64();
        println!("[{t:6.1}s] NOT RUN  {step}: {why}");
        self.not_run.push((step.to_owned(), why));
    }
    fn start(&mut self, step: &str) {
        let t = self
            .t0
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs_f64();
        println!("[{t:6.1}s] ...      {step}");
    }
}

/// Runs the demo; returns the process exit code.
pub fn run(args: &RunArgs) -> i32 {
    let mut steps = Steps {
        t0: Some(Instant::now()),
        ..Steps::default()
    };
    match run_inner(args, &mut steps) {
        Ok(code) => code,
        Err(e) => {
            println!();
            println!("FAILED: {e:#}");
            print_not_run(&steps);
            1
        }
    }
}

fn print_not_run(steps: &Steps) {
    if !steps.not_run.is_empty() {
        println!();
        println!("Steps that did NOT run ({}):", steps.not_run.len());
        for (s, why) in &steps.not_run {
            println!("  - {s}: {why}");
        }
    }
}

/// The trainer rootfs and whether it is the user's own (not the reference trainer).
fn trainer_rootfs(args: &RunArgs) -> Result<(PathBuf, bool)> {
    let (dir, custom) = if let Some(d) = &args.trainer_rootfs {
        (d.clone(), true)
    } else if let Some(d) = std::env::var_os("RAPHA_DEMO_REFERENCE_TRAINER") {
        (PathBuf::from(d), false)
    } else {
        bail!(
            "no trainer: build the reference trainer with \
             `trainers/lesion-classifier/build.sh DIR` and pass --trainer-rootfs DIR \
             (scripts/demo builds it and sets RAPHA_DEMO_REFERENCE_TRAINER)"
        );
    };
    let entry = dir.join(args.entrypoint.trim_start_matches('/'));
    if !entry.is_file() {
        bail!(
            "the trainer rootfs {} has no entrypoint {}",
            dir.display(),
            args.entrypoint
        );
    }
    Ok((dir, custom))
}

fn run_inner(args: &RunArgs, steps: &mut Steps) -> Result<i32> {
    println!("Rapha demo: dev keys, simulated attestation, local chain. NOT FOR PRODUCTION.");
    let (rootfs, custom) = trainer_rootfs(args)?;
    let out = &args.out;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("clearing the output directory {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    let cohort_dir = out.join("cohort");
    let released = out.join("released");
    std::fs::create_dir_all(&released)?;

    // 1. Synthetic cohort.
    steps.start(&format!(
        "generating a synthetic cohort of {} studies",
        args.studies
    ));
    let manifest = generate(&CohortSpec {
        studies: args.studies,
        seed: args.seed,
        out: cohort_dir.clone(),
        rle_fraction: 0.2,
        label_shuffle: false,
    })
    .context("generating the synthetic cohort")?;
    steps.ok(
        "cohort",
        format!(
            "{} studies, {} instances, {} planted PHI strings, {} opted-out patients -> {}",
            manifest.studies.len(),
            manifest.instance_count,
            manifest.phi.len(),
            manifest.opted_out_patients.len(),
            cohort_dir.join("manifest.json").display()
        ),
    );

    // 2. Embedded demo PACS.
    let pacs = DemoPacs::start(&cohort_dir.join("dicom"))?;
    steps.ok(
        "demo PACS",
        format!(
            "DICOMweb at {} serving {} studies / {} instances",
            pacs.dicomweb_url(),
            pacs.studies,
            pacs.instances
        ),
    );

    // 3. Scoped cohort (metadata only) through rapha-dicom's client.
    let accessions = label_accessions(&cohort_dir)?;
    let labels = LabelTable::load(&cohort_dir.join("labels.csv"))?;
    let optouts = OptOuts::load(&cohort_dir.join("optouts.csv"))?;
    let query = ScopedQuery::from_cohort_query(
        &CohortQuery {
            limit: Some(u32::try_from(accessions.len()).unwrap_or(u32::MAX)),
            accession_numbers: accessions,
            ..CohortQuery::default()
        },
        &ScopeLimits::default(),
    )
    .map_err(|e| anyhow::anyhow!("the demo's query is out of scope: {e}"))?;
    let client = DicomWebClient::new(ClientOptions::new(pacs.dicomweb_url()))?;
    let pseudo = Pseudonymizer::new(HmacKey::from_bytes(dev_hmac_key()));
    let config = DicomConfig::default();
    let cohort: Cohort = CohortBuilder::new(&pseudo, &config, &optouts)
        .with_labels(&labels)
        .from_dicomweb(&client, &query)
        .context("building the cohort from the demo PACS")?;
    let excluded = cohort.exclusions.total();
    let by_reason: Vec<String> = cohort
        .exclusions
        .counts()
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    steps.ok(
        "cohort build (scoped QIDO-RS + WADO-RS metadata, no pixels)",
        format!(
            "{} instances kept, {excluded} excluded ({})",
            cohort.entries.len(),
            if by_reason.is_empty() {
                "none".into()
            } else {
                by_reason.join(", ")
            }
        ),
    );

    // 4. Trainer bundle: build, sign with the dev publisher key, verify as the node does.
    let work = tempfile::tempdir()?;
    let mut entrypoint = vec![args.entrypoint.clone()];
    if let Some(e) = args.epochs {
        entrypoint.push("--epochs".into());
        entrypoint.push(e.to_string());
    }
    let (verified, keyid) =
        crate::signing::build_signed_bundle(&rootfs, entrypoint, custom, work.path())?;
    steps.ok(
        "trainer bundle",
        format!(
            "{} {} by {} (dev key {keyid}), manifest {}, signature verified against the demo trust store",
            verified.trainer_name(),
            verified.trainer_version(),
            verified.publisher(),
            verified.manifest_digest()
        ),
    );
    let unpacked = verified
        .unpack_rootfs(&work.path().join("rootfs"))
        .context("unpacking the verified trainer rootfs")?;

    // 5. Trainer under runc, output guard.
    steps.start("running the trainer under runc (records only, no network)");
    let job = JobId::random();
    let (source, ids) = DicomSource::new(&cohort.entries, Some(client));
    let session = EnclaveSession::new(job_spec(job))?;
    let entry = verified.entrypoint().to_vec();
    let cfg = SandboxConfig {
        runtime_root: work.path().join("runc-state"),
        ..SandboxConfig::default()
    };
    let job_release = work.path().join("release");
    let paths = RunPaths {
        work_root: &work.path().join("work"),
        rootfs: &unpacked.path,
        release_dir: &job_release,
    };
    let result = session
        .run(&cfg, &paths, &entry, &source, &ids)
        .context("running the trainer")?;
    let m = &result.signed.manifest;
    let outcome = m.outcome;
    steps.ok(
        "trainer run + output guard",
        format!(
            "outcome {:?}, {} records fed, guard {}",
            outcome,
            m.records_fed,
            if m.guard.accepted {
                "accepted the outputs".to_owned()
            } else {
                format!("REJECTED: {:?}", m.guard.rejections)
            }
        ),
    );
    let mut released_names = Vec::new();
    if outcome == ManifestOutcome::Completed {
        for p in &result.released {
            let name = p.file_name().context("released file without a name")?;
            std::fs::copy(p, released.join(name))?;
            released_names.push(name.to_string_lossy().into_owned());
        }
    }

    steps.skipped(
        "node job pipeline (rapha_node::pipeline)",
        "not available in this build",
    );
    steps.skipped("DPO approval", "needs the node pipeline");
    steps.skipped("escrow deposit on anvil", "not wired into rapha-demo yet");
    steps.skipped(
        "simulated attestation + final gate",
        "needs the node pipeline",
    );
    steps.skipped(
        "receipt (signed, logged) and verification",
        "needs the node pipeline",
    );
    steps.skipped("settlement", "needs the node pipeline");

    println!();
    println!("Summary");
    println!(
        "  cohort: {} studies generated; {} instances used, {} excluded",
        manifest.studies.len(),
        cohort.entries.len(),
        excluded
    );
    for (r, n) in cohort.exclusions.counts() {
        println!("    excluded {r}: {n}");
    }
    match &m.metrics {
        Some(x) => println!(
            "  node-computed AUC {:.3} (95% CI {:.3}-{:.3}) on {} validation records / {} patients",
            x.auc, x.auc_ci95[0], x.auc_ci95[1], x.n, x.patients
        ),
        None => println!("  node-computed metrics withheld: {:?}", m.metrics_withheld),
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &pacs.counters;
        println!(
            "  demo PACS served {} QIDO-RS searches, {} WADO-RS metadata and {} instance retrievals",
            c.qido.load(Relaxed),
            c.metadata.load(Relaxed),
            c.retrievals.load(Relaxed)
        );
    }
    println!("  released to {}: {:?}", released.display(), released_names);
    println!("  receipt: NOT written (the receipt step did not run)");
    print_not_run(steps);
    if !check_phi_absent(&manifest, &released)? {
        println!("PHI CHECK FAILED: a planted PHI value appears in the released files");
        return Ok(1);
    }
    if outcome != ManifestOutcome::Completed {
        println!("job refused: {:?}", m.reasons);
        return Ok(EXIT_REFUSED);
    }
    Ok(1)
}

/// The demo node's PHI HMAC key. A dev key, fixed so demo runs are reproducible.
fn dev_hmac_key() -> [u8; 32] {
    let mut k = [0x5a; 32];
    k[..10].copy_from_slice(b"RAPHA-DEV!");
    k
}

fn label_accessions(cohort_dir: &Path) -> Result<Vec<String>> {
    let csv = std::fs::read_to_string(cohort_dir.join("labels.csv"))?;
    Ok(csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect())
}

fn job_spec(job: JobId) -> JobSpec {
    JobSpec {
        job_id: job,
        validation_percent: 30,
        min_validation_patients: 10,
        outputs: vec![
            OutputDecl {
                name: "model.safetensors".into(),
                kind: OutputKind::Safetensors,
                max_bytes: 50 << 20,
            },
            OutputDecl {
                name: "metrics.json".into(),
                kind: OutputKind::MetricsJson,
                max_bytes: 64 << 10,
            },
        ],
        total_output_cap: 64 << 20,
        limits: ResourceLimits {
            memory_mb: 2048,
            cpus: 2,
            pids: 64,
            wall_seconds: 1800,
        },
        wall_override: None,
    }
}

/// True when no planted PHI string occurs in any file under `dir`.
fn check_phi_absent(manifest: &CohortManifest, dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir)? {
        let bytes = std::fs::read(e?.path())?;
        for phi in &manifest.phi {
            if phi.len() >= 4 && contains(&bytes, phi.as_bytes()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
