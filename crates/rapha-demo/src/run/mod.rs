//! `rapha-demo run`: one job end to end, printing each step as it happens. Every line printed
//! says what actually ran; a step that could not run is listed as such and the exit code is
//! non-zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rapha_core::{CohortQuery, JobId, JobRequest, Outcome, Usdc};
use rapha_node::pipeline::{Blocked, Step};
use rapha_receipt::VerifyOptions;
use rapha_testkit::cohort::{enhance_cohort, generate, transcode_cohort, CohortSpec};

use crate::chain::Chain;
use crate::pacs::DemoPacs;

mod summary;
mod trainer;

use summary::{check_phi_absent, check_phi_absent_file, guard_rules, print_summary};
pub use summary::{
    CohortFigures, GuardFigures, GuardRule, PacsFigures, PaymentFigures, PhiCheck, ReceiptFigures,
    StateTime, Summary, Timings,
};
use trainer::{trainer_rootfs, Trainer};

/// Arguments of `rapha-demo run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  rapha-demo run                          the main job: reference trainer, 120 studies
  rapha-demo run --hostile-example        a trainer that copies fed pixels into its weights:
                                          refused by the output guard (violated), nothing
                                          released, fee charged, exit 3
  rapha-demo run --hostile-example renamed-dicom
  rapha-demo run --trainer-rootfs DIR --entrypoint /train    your own static trainer
  rapha-demo run --example pytorch        the PyTorch example (Debian + python3-torch image,
                                          built by trainers/pytorch-lesion/build.sh)
  rapha-demo run --trainer-image my.tar --predicate trainer.toml
                                          your own OCI image (oci-archive or layout), run as
                                          the node unpacks and runs it

Exit codes: 0 completed and the receipt verifies; 3 refused (reason printed, deposit
refunded) or violated (outputs refused by the guard, fee charged); 1 anything else,
including steps that did not run.")]
pub struct RunArgs {
    /// Synthetic studies to generate.
    #[arg(long, default_value_t = 120)]
    pub studies: usize,
    /// Training epochs passed to the reference trainer (`--epochs N`). Not with an image:
    /// its entrypoint is signed as the image config states it.
    #[arg(long, conflicts_with_all = ["trainer_image", "example"])]
    pub epochs: Option<u32>,
    /// Cohort generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Store the synthetic cohort in this transfer syntax, as an archive that compresses on
    /// ingest does (`rapha-testkit cohort --help` lists them; the encoders are Debian's dcmtk,
    /// libopenjp2-tools and openjph-tools). Default: uncompressed, a fifth in RLE.
    #[arg(long, value_name = "UID")]
    pub transfer_syntax: Option<String>,
    /// Store each CT and MR series of the synthetic cohort as one enhanced multi-frame object
    /// (Enhanced CT / Enhanced MR, functional groups per frame), as modern scanners write them.
    #[arg(long)]
    pub enhanced: bool,
    /// Root filesystem of your own trainer to run, signed with the dev publisher key
    /// (default: the reference trainer, built by `trainers/lesion-classifier/build.sh DIR`
    /// into the directory named by $RAPHA_DEMO_REFERENCE_TRAINER; scripts/demo does this).
    #[arg(long, conflicts_with_all = ["hostile_example", "trainer_image", "example"])]
    pub trainer_rootfs: Option<PathBuf>,
    /// Your own trainer image, an OCI image layout directory or an oci-archive tar (as
    /// `buildah push IMAGE oci-archive:my.tar` or `podman save --format oci-archive` write
    /// it), signed with the dev publisher key as it is: its entrypoint is the image config's.
    /// The node verifies and unpacks it exactly as it would a publisher's signed bundle.
    #[arg(long, conflicts_with_all = ["hostile_example", "example"])]
    pub trainer_image: Option<PathBuf>,
    /// The trainer predicate (trainer.toml: name, outputs, resources) signed with
    /// --trainer-image; default: the reference trainer's declarations, renamed
    /// custom-trainer. Its entrypoint and env, if given, must match the image config.
    #[arg(long, requires = "trainer_image")]
    pub predicate: Option<PathBuf>,
    /// Run an example trainer image: `pytorch` is trainers/pytorch-lesion (Debian bookworm,
    /// python3-torch, the Python SDK), built by `trainers/pytorch-lesion/build.sh`, which
    /// prints the image path; rapha-demo takes it from $RAPHA_DEMO_PYTORCH_IMAGE
    /// (scripts/demo --example pytorch builds it and sets it).
    #[arg(long, value_enum, conflicts_with = "hostile_example")]
    pub example: Option<Example>,
    /// Run the hostile example trainer instead (source in crates/rapha-demo/hostile-trainer;
    /// built on first use, or taken from $RAPHA_DEMO_HOSTILE_TRAINER): it trains like any
    /// trainer, then tries to smuggle fed images out. The output guard refuses the job
    /// (violated), nothing is released, the fee is charged, exit code 3.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "pixels-in-weights",
          value_name = "ATTACK")]
    pub hostile_example: Option<crate::hostile::Attack>,
    /// Entrypoint inside the trainer rootfs.
    #[arg(long, default_value = "/trainer")]
    pub entrypoint: String,
    /// Output directory (released/, receipt.json, cohort/; hostile-example/, the hostile
    /// trainer's rootfs, with --hostile-example).
    #[arg(long, default_value = "rapha-demo-out")]
    pub out: PathBuf,
    /// Print the summary as one JSON object on stdout (field names are stable; progress
    /// lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// The example trainer images `--example` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Example {
    /// trainers/pytorch-lesion: a PyTorch CNN on a Debian base image.
    Pytorch,
}

/// Exit code of a refused job.
pub const EXIT_REFUSED: i32 = 3;

/// Prefix of the node's hospital-side detail when the output guard refused a job's outputs.
const GUARD_REFUSED: &str = "output guard refused the outputs: ";

/// What happened to each step, for the closing summary. Progress lines go to stdout, or to
/// stderr when stdout carries the JSON summary.
struct Steps {
    not_run: Vec<(String, String)>,
    t0: Instant,
    to_stderr: bool,
    /// The step under way, for the "still running" lines of long steps.
    activity: Arc<Mutex<Option<(String, Instant)>>>,
}

impl Steps {
    fn line(&self, s: &str) {
        if self.to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
    fn t(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    fn ok(&mut self, step: &str, detail: impl Into<String>) {
        self.set_activity(None);
        self.line(&format!(
            "[{:6.1}s] ok       {step}: {}",
            self.t(),
            detail.into()
        ));
    }
    fn skipped(&mut self, step: &str, why: impl Into<String>) {
        self.set_activity(None);
        let why = why.into();
        self.line(&format!("[{:6.1}s] NOT RUN  {step}: {why}", self.t()));
        self.not_run.push((step.to_owned(), why));
    }
    fn start(&mut self, step: &str) {
        self.line(&format!("[{:6.1}s] ...      {step}", self.t()));
        self.set_activity(Some(step));
    }
    fn set_activity(&self, step: Option<&str>) {
        if let Ok(mut a) = self.activity.lock() {
            *a = step.map(|s| (s.to_owned(), Instant::now()));
        }
    }
}

/// Prints a "still running" line on stderr every [`TICK`] while a step takes long.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TICK: Duration = Duration::from_secs(15);

impl Ticker {
    fn start(t0: Instant, activity: Arc<Mutex<Option<(String, Instant)>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !s2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(a) = activity.lock() else { return };
                if let Some((what, since)) = a.as_ref() {
                    if since.elapsed() >= TICK && last.elapsed() >= TICK {
                        eprintln!(
                            "[{:6.1}s] ...      still {what} ({:.0} s so far)",
                            t0.elapsed().as_secs_f64(),
                            since.elapsed().as_secs_f64()
                        );
                        last = Instant::now();
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn run(args: &RunArgs) -> i32 {
    let mut steps = Steps {
        not_run: Vec::new(),
        t0: Instant::now(),
        to_stderr: args.json,
        activity: Arc::new(Mutex::new(None)),
    };
    let _ticker = Ticker::start(steps.t0, steps.activity.clone());
    match run_inner(args, &mut steps) {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string_pretty(&summary) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("FAILED: cannot encode the summary: {e}");
                        return 1;
                    }
                }
            } else {
                print_summary(&summary);
            }
            print_not_run(&steps);
            summary.exit_code
        }
        Err(e) => {
            steps.set_activity(None);
            steps.line("");
            steps.line(&format!("FAILED: {e:#}"));
            steps.line(
                "The job did not finish: every step after the last \"ok\" line above did NOT run.",
            );
            print_not_run(&steps);
            if args.json {
                let j = serde_json::json!({
                    "outcome": "error",
                    "exit_code": 1,
                    "error": format!("{e:#}"),
                });
                println!("{j}");
            }
            1
        }
    }
}

fn print_not_run(steps: &Steps) {
    if !steps.not_run.is_empty() {
        steps.line("");
        steps.line(&format!(
            "Steps that did NOT run ({}):",
            steps.not_run.len()
        ));
        for (s, why) in &steps.not_run {
            steps.line(&format!("  - {s}: {why}"));
        }
    }
}

#[allow(clippy::too_many_lines)] // one linear story, step by step, as the user reads it
fn run_inner(args: &RunArgs, steps: &mut Steps) -> Result<Summary> {
    steps.line("Rapha demo: dev keys, simulated attestation, local chain. NOT FOR PRODUCTION.");
    let out = &args.out;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("clearing the output directory {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    let (rootfs, which) = trainer_rootfs(args, &out, steps)?;
    let cohort_dir = out.join("cohort");
    let released = out.join("released");
    std::fs::create_dir_all(&released)?;

    // 1. Synthetic cohort.
    steps.start(&format!(
        "generating a synthetic cohort of {} studies",
        args.studies
    ));
    let mut manifest = generate(&CohortSpec {
        studies: args.studies,
        seed: args.seed,
        out: cohort_dir.clone(),
        rle_fraction: if args.transfer_syntax.is_some() {
            0.0
        } else {
            0.2
        },
        label_shuffle: false,
    })
    .context("generating the synthetic cohort")?;
    if args.enhanced {
        manifest = enhance_cohort(&cohort_dir).context("making enhanced multi-frame objects")?;
    }
    if let Some(ts) = &args.transfer_syntax {
        manifest = transcode_cohort(&cohort_dir, ts)
            .with_context(|| format!("storing the synthetic cohort in transfer syntax {ts}"))?;
    }
    steps.ok(
        "cohort",
        format!(
            "{} studies, {} instances{}{}, {} planted PHI strings, {} opted-out patients -> {}",
            manifest.studies.len(),
            manifest.instance_count,
            if manifest.enhanced {
                " (CT and MR enhanced multi-frame)"
            } else {
                ""
            },
            manifest
                .transfer_syntax
                .as_ref()
                .map(|ts| format!(" stored in transfer syntax {ts}"))
                .unwrap_or_default(),
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

    // 3. Dev keys.
    let node_key = crate::node::node_key()?;
    let dpo = crate::node::dpo_key();
    steps.ok(
        "dev keys",
        format!(
            "publisher {}, DPO {}, node {} (all start with the RAPHA-DEV! marker; production refuses them)",
            crate::signing::publisher_key().public_key().keyid(),
            dpo.public(),
            node_key.address()
        ),
    );

    // 4. Trainer bundle: build, sign with the dev publisher key, verify as the node will.
    let work = tempfile::tempdir()?;
    let (mut entrypoint, name) = match &which {
        Trainer::Reference | Trainer::Image(_) => (vec![args.entrypoint.clone()], None),
        Trainer::Custom => (vec![args.entrypoint.clone()], Some("custom-trainer")),
        Trainer::Hostile(a) => (
            vec!["/trainer".to_owned(), a.arg().to_owned()],
            Some("hostile-example"),
        ),
    };
    if let Some(e) = args.epochs {
        entrypoint.push("--epochs".into());
        entrypoint.push(e.to_string());
    }
    let (verified, keyid) = if let Trainer::Image(predicate) = &which {
        crate::signing::sign_image(&rootfs, predicate, work.path())?
    } else {
        crate::signing::build_signed_bundle(&rootfs, entrypoint, name, work.path())?
    };
    steps.ok(
        "trainer bundle",
        format!(
            "{} {} by {} signed with dev key {}, manifest {}",
            verified.trainer_name(),
            verified.trainer_version(),
            verified.publisher(),
            &keyid[..16],
            verified.manifest_digest()
        ),
    );

    // 5. Local chain: anvil, mock USDC, escrow, hospital registration.
    let fee = Usdc::from_base_units(120_000_000);
    steps.start("starting anvil (chain id 137) and deploying the mock USDC and the escrow");
    let node_signer = node_key.address();
    let Some(chain) = Chain::start(node_signer, fee)? else {
        steps.skipped(
            "local chain",
            "anvil is not installed (scripts/demo installs it)",
        );
        bail!("cannot run the job without a chain for the escrow");
    };
    steps.ok(
        "local chain",
        format!(
            "anvil at {}, escrow {}, mock USDC {} (6 decimals), hospital payout {}",
            chain.rpc, chain.escrow, chain.token, chain.payout
        ),
    );

    // 6. The in-process node.
    let state = work.path().join("node");
    let requested = verified.requested_fields().to_vec();
    let mut node = crate::node::build(
        &state,
        &work.path().join("trust"),
        &cohort_dir,
        pacs.dicomweb_url().to_owned(),
        &chain,
        verified.publisher(),
        verified.trainer_name(),
        &requested,
    )?;
    let accessions = manifest.labelled_accessions();
    let queried = accessions.len();
    let request = JobRequest {
        job_id: JobId::random(),
        publisher: verified.publisher().to_owned(),
        trainer: verified.trainer_name().to_owned(),
        bundle_manifest: verified.manifest_digest(),
        query: CohortQuery {
            limit: Some(u32::try_from(accessions.len()).unwrap_or(u32::MAX)),
            accession_numbers: accessions,
            ..CohortQuery::default()
        },
        requested_fields: requested,
        validation_percent: 30,
        fee,
        chain_id: chain.chain_id,
        depositor: chain.company.address().to_string(),
        linkage: None,
    };
    let before = (
        chain.balance(chain.payout)?,
        chain.balance(chain.treasury)?,
        chain.balance(chain.company.address())?,
    );
    let submitted = Instant::now();
    let job = node
        .submit(&work.path().join("bundle"), request)
        .context("submitting the job to the node")?;
    steps.ok("job submitted", format!("job {job} to the in-process node"));

    let mut states: Vec<StateTime> = Vec::new();
    let mut deposited = false;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if Instant::now() > deadline {
            bail!("the job did not finish within an hour");
        }
        match node.advance(job).context("the node's pipeline")? {
            Step::Moved(s) => {
                states.push(StateTime {
                    state: s.to_string(),
                    at_seconds: submitted.elapsed().as_secs_f64(),
                });
                steps.ok("node", format!("job is now {s}"));
                if s == rapha_node::store::JobState::Running {
                    steps.start(
                        "trainer running under runc: records only, no network, read-only rootfs",
                    );
                }
            }
            Step::Blocked(Blocked::Approval { job_digest }) => {
                if let Some(r) = node.review(job)? {
                    let c = &r.cohort;
                    steps.ok(
                        "DPO review",
                        format!(
                            "cohort summary shown to the DPO: instances by modality {:?}, excluded {:?}",
                            c.modalities, c.exclusions
                        ),
                    );
                }
                let now = unix_now();
                let approval = dpo.approve(job_digest, now, now + 24 * 3600)?;
                node.approvals().record(&approval)?;
                steps.ok(
                    "DPO approval",
                    format!("demo DPO signed job digest {job_digest}"),
                );
            }
            Step::Blocked(Blocked::Deposit(why)) => {
                if deposited {
                    std::thread::sleep(POLL);
                } else {
                    tracing::debug!(%why, "node waits for the deposit");
                    let tx = chain.deposit(job, fee)?;
                    steps.ok(
                        "escrow deposit",
                        format!("AI company deposited {} USDC for job {job}: {tx}", fee),
                    );
                    deposited = true;
                }
            }
            Step::Blocked(Blocked::Settlement(why)) => {
                tracing::debug!(%why, "settlement pending");
                std::thread::sleep(POLL);
            }
            Step::Done => break,
        }
    }
    let job_seconds = submitted.elapsed().as_secs_f64();
    steps.ok(
        "node",
        format!("job settled, {job_seconds:.1} s after it was submitted"),
    );

    // 7. Receipt, released files, payout.
    let receipt = node
        .receipt(job)?
        .context("the node settled the job but holds no receipt")?;
    let receipt_json = receipt.to_json()?;
    let receipt_path = out.join("receipt.json");
    std::fs::write(&receipt_path, &receipt_json)?;
    let verified_receipt = rapha_receipt::verify(
        &receipt_json,
        &VerifyOptions {
            node_address: Some(node_key.address()),
            ..VerifyOptions::default()
        },
    );
    if let Ok(v) = &verified_receipt {
        steps.ok(
            "receipt verified",
            format!(
                "signed by node {}, leaf {} of the receipt log, outcome {:?}",
                v.signer, v.leaf_index, v.body.outcome
            ),
        );
    }
    let body = match &verified_receipt {
        Ok(v) => v.body.clone(),
        Err(_) => serde_json::from_value(receipt.body.clone())?,
    };
    let mut released_names = Vec::new();
    let rel = node.release_path(job);
    if rel.is_dir() {
        for e in std::fs::read_dir(&rel)? {
            let e = e?;
            std::fs::copy(e.path(), released.join(e.file_name()))?;
            released_names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    released_names.sort();
    for w in chain.withdraw_all()? {
        steps.ok("escrow withdrawal", w);
    }
    let after = (
        chain.balance(chain.payout)?,
        chain.balance(chain.treasury)?,
        chain.balance(chain.company.address())?,
    );

    let mut cohort = CohortFigures {
        studies_generated: manifest.studies.len(),
        studies_queried: queried,
        ..CohortFigures::default()
    };
    if let Some(r) = node.review(job)? {
        let c = &r.cohort;
        cohort.studies_used = Some(c.studies);
        cohort.patients = Some(c.patients);
        cohort.train_patients = Some(c.train_patients);
        cohort.validation_patients = Some(c.validation_patients);
    }
    if let Some(c) = &body.cohort {
        cohort.instances_used = Some(c.instances);
        cohort.instances_by_modality = c.by_modality.clone();
        cohort.instances_excluded = c.exclusions.values().sum();
        cohort.exclusions = c.exclusions.clone();
    }
    let pacs_figures = {
        let c = &pacs.counters;
        PacsFigures {
            qido_searches: c.qido.load(Ordering::Relaxed),
            metadata_requests: c.metadata.load(Ordering::Relaxed),
            instance_retrievals: c.retrievals.load(Ordering::Relaxed),
        }
    };
    let detail = node.ending(job)?.map(|e| e.detail).unwrap_or_default();
    let guard = match (&body.outputs, detail.strip_prefix(GUARD_REFUSED)) {
        (Some(o), _) => GuardFigures {
            verdict: o.guard_verdict.clone(),
            rules: Vec::new(),
        },
        (None, Some(findings)) => GuardFigures {
            verdict: "refused".into(),
            rules: guard_rules(findings),
        },
        (None, None) => GuardFigures {
            verdict: "not-reached".into(),
            rules: Vec::new(),
        },
    };
    let p = &body.payment;
    let company_delta = i64::try_from(i128::from(after.2) - i128::from(before.2)).unwrap_or(0);
    let planted = manifest.phi.iter().filter(|p| p.len() >= 4).count();
    let phi_found = !check_phi_absent(&manifest, &released)?
        || !check_phi_absent_file(&manifest, &receipt_path)?;
    let outcome = body.outcome.as_str();
    let receipt_ok = verified_receipt.is_ok();
    let exit_code = match body.outcome {
        _ if phi_found => 1,
        Outcome::Completed if receipt_ok => 0,
        Outcome::Refused | Outcome::Violated => EXIT_REFUSED,
        _ => 1,
    };
    let running_seconds = states
        .iter()
        .position(|s| s.state == rapha_node::store::JobState::Running.to_string())
        .and_then(|i| Some(states.get(i + 1)?.at_seconds - states.get(i)?.at_seconds));
    Ok(Summary {
        job_id: job.to_string(),
        outcome: outcome.into(),
        reason: body.reason.clone(),
        detail: detail.clone(),
        exit_code,
        trainer: body.trainer.clone(),
        hostile_attack: args.hostile_example.map(|a| a.arg().to_owned()),
        cohort,
        pacs: pacs_figures,
        metrics: body
            .outputs
            .as_ref()
            .map(|o| o.metrics.clone())
            .unwrap_or_default(),
        guard,
        released_dir: released.display().to_string(),
        released: released_names,
        receipt: ReceiptFigures {
            path: receipt_path.display().to_string(),
            verified: receipt_ok,
            error: verified_receipt.err().map(|e| e.to_string()),
        },
        payment: PaymentFigures {
            fee: p.fee.base_units(),
            hospital_share: p.hospital_share.base_units(),
            protocol_share: p.protocol_share.base_units(),
            hospital_payout_delta: after.0.saturating_sub(before.0),
            treasury_delta: after.1.saturating_sub(before.1),
            company_delta,
            refunded: body.outcome != Outcome::Completed
                && company_delta == 0
                && after.0 == before.0
                && after.1 == before.1,
        },
        phi_check: PhiCheck {
            planted,
            found: phi_found,
        },
        timings: Timings {
            job_seconds,
            running_seconds,
            states,
        },
    })
}

/// How often the demo asks the node again while it waits for the chain.
const POLL: Duration = Duration::from_millis(100);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
