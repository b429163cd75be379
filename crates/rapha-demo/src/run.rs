//! `rapha-demo run`: one job end to end, printing each step as it happens. Every line printed
//! says what actually ran; a step that could not run is listed as such and the exit code is
//! non-zero.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rapha_core::{CohortQuery, JobId, JobRequest, Outcome, Usdc};
use rapha_node::pipeline::{Blocked, Step};
use rapha_receipt::VerifyOptions;
use rapha_testkit::cohort::{generate, CohortManifest, CohortSpec};

use crate::chain::Chain;
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
            println!(
                "The job did not finish: every step after the last \"ok\" line above did NOT run."
            );
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
    let node_signer = alloy::primitives::Address::from(node_key.address().0);
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
    let accessions = label_accessions(&cohort_dir)?;
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
    };
    let job = node
        .submit(&work.path().join("bundle"), request)
        .context("submitting the job to the node")?;
    steps.ok("job submitted", format!("job {job} to the in-process node"));

    let before = (
        chain.balance(chain.payout)?,
        chain.balance(chain.treasury)?,
        chain.balance(chain.company.address())?,
    );
    let mut deposited = false;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if Instant::now() > deadline {
            bail!("the job did not finish within an hour");
        }
        match node.advance(job).context("the node's pipeline")? {
            Step::Moved(s) => {
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
                    std::thread::sleep(Duration::from_millis(500));
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
                std::thread::sleep(Duration::from_millis(500));
            }
            Step::Done => break,
        }
    }
    steps.ok("node", "job settled");

    // 7. Receipt, released files, payout.
    let receipt = node
        .receipt(job)?
        .context("the node settled the job but holds no receipt")?;
    let receipt_json = receipt.to_json()?;
    std::fs::write(out.join("receipt.json"), &receipt_json)?;
    let verified_receipt = rapha_receipt::verify(
        &receipt_json,
        &VerifyOptions {
            node_address: Some(node_key.address()),
            ..VerifyOptions::default()
        },
    );
    let receipt_ok = match &verified_receipt {
        Ok(v) => {
            steps.ok(
                "receipt verified",
                format!(
                    "signed by node {}, leaf {} of the receipt log, outcome {:?}",
                    v.signer, v.leaf_index, v.body.outcome
                ),
            );
            true
        }
        Err(e) => {
            println!("RECEIPT DID NOT VERIFY: {e}");
            false
        }
    };
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
    let after = (
        chain.balance(chain.payout)?,
        chain.balance(chain.treasury)?,
        chain.balance(chain.company.address())?,
    );

    println!();
    println!("Summary (job {job})");
    println!(
        "  outcome: {:?}{}",
        body.outcome,
        if body.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", body.reason)
        }
    );
    println!("  cohort: {} studies generated", manifest.studies.len());
    if let Some(r) = node.review(job)? {
        let c = &r.cohort;
        println!(
            "    studies queried: {queried} (those in the label table); used: {}; patients {} (train {}, validation {})",
            c.studies,
            c.patients,
            c.train_patients,
            c.validation_patients
        );
    }
    if let Some(c) = &body.cohort {
        println!("    instances used: {} {:?}", c.instances, c.by_modality);
        let excluded: u64 = c.exclusions.values().sum();
        println!("    instances excluded: {excluded}");
        for (r, n) in &c.exclusions {
            println!("      {r}: {n}");
        }
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
    if let Some(o) = &body.outputs {
        let m = &o.metrics;
        match (m.get("auc"), m.get("auc_ci95_low"), m.get("auc_ci95_high")) {
            (Some(a), Some(l), Some(h)) => {
                println!("  node-computed AUC {a:.3} (95% CI {l:.3}-{h:.3})");
            }
            _ => println!("  node-computed metrics: {m:?}"),
        }
        println!("  output guard: {}", o.guard_verdict);
    }
    println!("  released to {}: {:?}", released.display(), released_names);
    println!(
        "  receipt: {} ({})",
        out.join("receipt.json").display(),
        if receipt_ok {
            "verified"
        } else {
            "DID NOT VERIFY"
        }
    );
    let p = &body.payment;
    println!(
        "  fee {} base units: hospital share {} (70%), protocol share {} (30%)",
        p.fee.base_units(),
        p.hospital_share.base_units(),
        p.protocol_share.base_units()
    );
    println!(
        "  on chain: hospital payout +{}, treasury +{}, AI company {} base units",
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
        i128::from(after.2) - i128::from(before.2),
    );
    print_not_run(steps);
    if !check_phi_absent(&manifest, &released)?
        || !check_phi_absent_file(&manifest, &out.join("receipt.json"))?
    {
        println!("PHI CHECK FAILED: a planted PHI value appears in what left the hospital");
        return Ok(1);
    }
    println!(
        "  PHI check: none of the {} planted PHI values appears in released/ or receipt.json",
        manifest.phi.len()
    );
    match body.outcome {
        Outcome::Completed if receipt_ok => Ok(0),
        Outcome::Refused => {
            println!("job REFUSED: {} (deposit refunded)", body.reason);
            Ok(EXIT_REFUSED)
        }
        _ => Ok(1),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

fn check_phi_absent_file(manifest: &CohortManifest, file: &Path) -> Result<bool> {
    let bytes = std::fs::read(file)?;
    Ok(!manifest
        .phi
        .iter()
        .any(|phi| phi.len() >= 4 && contains(&bytes, phi.as_bytes())))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
