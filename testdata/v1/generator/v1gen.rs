//! Generator of Rapha's v1 fixtures (testdata/v1): run ONLY at commit 665d500, the last commit
//! before issue 18, as `crates/rapha-demo/examples/v1gen.rs` of a worktree of that commit (see
//! run.sh). It drives the node library of that commit (`rapha_node::pipeline::Node`, the same
//! pipeline `rapha-node serve` runs) with the demo's parts: embedded demo PACS, anvil with the
//! escrow, dev keys, simulated attestation, runc. Nothing is inserted into a store by hand:
//! every job reaches its state by the node's own steps.
//!
//! Usage: v1gen OUT_DIR REFERENCE_ROOTFS HOSTILE_ROOTFS EXIT_ROOTFS
//!
//! Jobs (all on one node, one job store, one receipt log, one settlement ledger):
//! - `completed`  reference trainer, settled (its receipt: receipts/completed.json)
//! - `refused`    hostile example (pixels in weights), guard refusal, settled (receipts/refused.json)
//! - `failed`     a trainer that exits 3, settled (receipts/failed.json)
//! - one job left in each of the 17 states; `failed` is a job whose node restarted while it
//!   was running (the second node instance fails it), `refused` a guard refusal not yet
//!   receipted, `running` one whose trainer had not started when the generator stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rapha_attest::{Evidence, EvidenceVerifier, SimulatedEvidence, SIMULATED_MARKER};
use rapha_bundle::TrustStore;
use rapha_core::{CohortQuery, Digest, JobId, JobRequest, OutputKind, Usdc};
use rapha_demo::chain::Chain;
use rapha_demo::pacs::DemoPacs;
use rapha_demo::signing::{build_signed_bundle, publisher_key};
use rapha_dicom::client::ClientOptions;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{DicomConfig, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_node::audit::AuditLog;
use rapha_node::pipeline::chain::{ChainPayments, ChainSettings};
use rapha_node::pipeline::{Blocked, EvidenceProvider, Node, NodeParts, Step};
use rapha_node::store::{JobState, JobStore};
use rapha_policy::{
    ApprovalStore, DpoSigningKey, HospitalPolicy, JobBudget, Mode, OutputLimits, Policy,
    PublisherTrust, ScopeLimits,
};
use rapha_receipt::ReceiptLog;
use rapha_testkit::cohort::{generate, CohortSpec};

/// Approvals of the fixture expire on 2100-01-01 00:00 UTC, so a test can still honour a v1
/// approval of a job in flight long after the fixtures were made.
const APPROVAL_EXPIRES: u64 = 4_102_444_800;
const NODE_NAME: &str = "rapha-v1-fixture-hospital";
const FEE: u64 = 120_000_000;

// A deliberate duplicate (issue 23) of the demo's `SimulatedProvider` and node set-up
// (crates/rapha-demo/src/node.rs): this generator is built only at commit 665d500 against that
// commit's crates, to remake the frozen v1 fixtures, so it cannot use today's code.
struct SimulatedProvider;

impl EvidenceProvider for SimulatedProvider {
    fn evidence(&mut self, binding: &Digest) -> std::result::Result<Evidence, String> {
        let mut ev = Evidence::new(*binding);
        ev.simulated = Some(SimulatedEvidence {
            marker: SIMULATED_MARKER.to_owned(),
            note: "rapha v1 fixture generator: no TPM or SGX used".to_owned(),
        });
        Ok(ev)
    }
}

struct Bundle {
    dir: PathBuf,
    manifest: Digest,
    trainer: String,
    publisher: String,
    requested: Vec<String>,
}

fn bundle(rootfs: &Path, entrypoint: Vec<String>, name: Option<&str>, work: &Path) -> Result<Bundle> {
    std::fs::create_dir_all(work)?;
    let (vb, _) = build_signed_bundle(rootfs, entrypoint, name, work)?;
    Ok(Bundle {
        dir: work.join("bundle"),
        manifest: vb.manifest_digest(),
        trainer: vb.trainer_name().to_owned(),
        publisher: vb.publisher().to_owned(),
        requested: vb.requested_fields().to_vec(),
    })
}

#[allow(clippy::too_many_arguments)]
fn build_node(state: &Path, cohort_dir: &Path, pacs_url: &str, chain: &Chain, publisher: &str,
              trainers: &[String], requested: &[String]) -> Result<Node> {
    let mut publishers = BTreeMap::new();
    publishers.insert(publisher.to_owned(), PublisherTrust { trainers: trainers.to_vec() });
    let hospital = HospitalPolicy {
        mode: Mode::Demo,
        publishers,
        scope: ScopeLimits {
            max_studies: 10_000,
            max_date_range_days: 3650,
            modalities: ["CT", "MR", "CR", "DX", "MG", "US", "SC", "OT", "PT", "NM", "XA"]
                .iter().map(|s| (*s).to_owned()).collect(),
        },
        outputs: OutputLimits {
            kinds: vec![OutputKind::Safetensors, OutputKind::Onnx, OutputKind::PytorchZip,
                        OutputKind::MetricsJson],
            max_file_bytes: 64 << 20,
            max_total_bytes: 128 << 20,
        },
        allowed_metadata_fields: requested.to_vec(),
        min_fee: Usdc::from_base_units(1_000_000),
        budget: JobBudget { max_jobs: 1000, window_hours: 24 },
        min_patients: 10,
        min_validation_patients: 2,
    };
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: chain.rpc.clone(),
            escrow: chain.escrow,
            hospital: chain.hospital.address(),
            payout: chain.payout,
            confirmations: 1,
            run_window_secs: 600,
            poll_interval: Duration::from_millis(100),
        },
        &chain.hospital,
        &state.join("settlement-ledger.sqlite"),
    )
    .map_err(|e| anyhow!("connecting the node to the escrow: {e}"))?;
    let url = pacs_url.to_owned();
    let parts = NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite"))?,
        trust: TrustStore::open(&state.join("trust"))?,
        policy: Policy::builtin()?,
        hospital,
        pseudonymizer: Pseudonymizer::new(rapha_demo::node::dev_hmac_key()),
        dicom: DicomConfig::default(),
        optouts: OptOuts::load(&cohort_dir.join("optouts.csv"))?,
        labels: Some(LabelTable::load(&cohort_dir.join("labels.csv"))?),
        pacs: Box::new(move || DicomWebClient::new(ClientOptions::new(url.clone()))),
        approvals: ApprovalStore::open(&state.join("approvals"))?,
        dpo_keys: vec![rapha_demo::node::dpo_key().public()],
        evidence: Box::new(SimulatedProvider),
        verifier: EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: SandboxConfig { runtime_root: state.join("runc-state"), ..SandboxConfig::default() },
        min_validation_patients: 2,
        node_key: rapha_demo::node::node_key()?,
        node_name: NODE_NAME.to_owned(),
        receipts: ReceiptLog::open(&state.join("receipts.log"))?,
        payments: Box::new(payments),
        audit: AuditLog::open(&state.join("audit.jsonl"), NODE_NAME, None)?,
        work_dir: state.join("work"),
        release_dir: state.join("released"),
    };
    Ok(Node::new(parts)?)
}

struct Ctx<'a> {
    chain: &'a Chain,
    dpo: DpoSigningKey,
    accessions: Vec<String>,
}

impl Ctx<'_> {
    fn submit(&self, node: &mut Node, b: &Bundle) -> Result<JobId> {
        let request = JobRequest {
            job_id: JobId::random(),
            publisher: b.publisher.clone(),
            trainer: b.trainer.clone(),
            bundle_manifest: b.manifest,
            query: CohortQuery {
                limit: Some(u32::try_from(self.accessions.len())?),
                accession_numbers: self.accessions.clone(),
                ..CohortQuery::default()
            },
            requested_fields: b.requested.clone(),
            validation_percent: 30,
            fee: Usdc::from_base_units(FEE),
            chain_id: self.chain.chain_id,
            depositor: self.chain.company.address().to_string(),
        };
        Ok(node.submit(&b.dir, request)?)
    }

    /// Advances `job` through the node's own steps until it enters `target` (approving and
    /// depositing when the node waits for them).
    fn drive(&self, node: &mut Node, job: JobId, target: JobState) -> Result<()> {
        let mut deposited = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(3600);
        loop {
            if node.store().get(job)?.state == target {
                eprintln!("v1gen: job {job} is {target}");
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("job {job} did not reach {target} within an hour");
            }
            match node.advance(job)? {
                Step::Moved(s) => eprintln!("v1gen: job {job} -> {s}"),
                Step::Blocked(Blocked::Approval { job_digest }) => {
                    let now = unix_now();
                    let a = self.dpo.approve(job_digest, now, APPROVAL_EXPIRES)?;
                    node.approvals().record(&a)?;
                }
                Step::Blocked(Blocked::Deposit(why)) => {
                    if deposited {
                        std::thread::sleep(Duration::from_millis(100));
                    } else {
                        eprintln!("v1gen: deposit for {job} ({why})");
                        self.chain.deposit(job, Usdc::from_base_units(FEE))?;
                        deposited = true;
                    }
                }
                Step::Blocked(Blocked::Settlement(_)) => std::thread::sleep(Duration::from_millis(100)),
                Step::Done => bail!("job {job} settled before reaching {target}"),
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, reference, hostile, exit] = args.as_slice() else {
        bail!("usage: v1gen OUT_DIR REFERENCE_ROOTFS HOSTILE_ROOTFS EXIT_ROOTFS");
    };
    if out.exists() {
        bail!("{} exists: v1gen writes a fresh directory", out.display());
    }
    std::fs::create_dir_all(out)?;
    let out = std::fs::canonicalize(out)?;
    let state = out.join("node");
    let cohort_dir = out.join("cohort");
    let manifest = generate(&CohortSpec {
        studies: 60,
        seed: 18,
        out: cohort_dir.clone(),
        rle_fraction: 0.2,
        label_shuffle: false,
    })?;
    let pacs = DemoPacs::start(&cohort_dir.join("dicom"))?;

    let bundles = out.join("bundles");
    let reference = bundle(reference, vec!["/trainer".into(), "--epochs".into(), "2".into()], None,
                           &bundles.join("reference"))?;
    let hostile = bundle(hostile, vec!["/trainer".into(), "pixels-in-weights".into()],
                         Some("hostile-example"), &bundles.join("hostile"))?;
    let failing = bundle(exit, vec!["/trainer".into()], Some("exit-nonzero"), &bundles.join("exit"))?;
    let trainers: Vec<String> =
        [&reference, &hostile, &failing].iter().map(|b| b.trainer.clone()).collect();
    TrustStore::add(&state.join("trust"), &reference.publisher, &publisher_key().public_key(),
                    &trainers, None)?;

    let node_key = rapha_demo::node::node_key()?;
    let node_signer = alloy::primitives::Address::from(node_key.address().0);
    let chain = Chain::start(node_signer, Usdc::from_base_units(FEE * 40))?
        .context("anvil is needed (RAPHA_ANVIL)")?;
    let ctx = Ctx {
        chain: &chain,
        dpo: rapha_demo::node::dpo_key(),
        accessions: manifest.labelled_accessions(),
    };
    let mk = |state: &Path| {
        build_node(state, &cohort_dir, pacs.dicomweb_url(), &chain, &reference.publisher,
                   &trainers, &reference.requested)
    };

    let mut jobs: BTreeMap<String, JobId> = BTreeMap::new();
    // Node instance 1: the three receipts, and a job that will be running when it stops.
    let mut node = mk(&state)?;
    for (name, b) in [("receipt-completed", &reference), ("receipt-refused", &hostile),
                      ("receipt-failed", &failing)] {
        let job = ctx.submit(&mut node, b)?;
        ctx.drive(&mut node, job, JobState::Settled)?;
        jobs.insert(name.into(), job);
    }
    let interrupted = ctx.submit(&mut node, &reference)?;
    ctx.drive(&mut node, interrupted, JobState::Running)?;
    drop(node);

    // Node instance 2 over the same state: the interrupted job is failed by the restart.
    let mut node = mk(&state)?;
    match node.advance(interrupted)? {
        Step::Moved(JobState::Failed) => {}
        other => bail!("the restarted node did not fail the interrupted job: {other:?}"),
    }
    jobs.insert(JobState::Failed.to_string(), interrupted);
    jobs.insert(JobState::Settled.to_string(), jobs["receipt-completed"]);
    for target in JobState::ALL {
        if matches!(target, JobState::Failed | JobState::Settled) {
            continue;
        }
        let b = match target {
            JobState::Refused => &hostile,
            JobState::OutputsGuarded | JobState::Receipted | JobState::Released => &reference,
            _ => &failing,
        };
        let job = ctx.submit(&mut node, b)?;
        ctx.drive(&mut node, job, target)?;
        jobs.insert(target.to_string(), job);
    }

    // Receipts as the node stored them, and the log's latest signed head.
    let receipts = out.join("receipts");
    std::fs::create_dir_all(&receipts)?;
    for outcome in ["completed", "refused", "failed"] {
        let job = jobs[&format!("receipt-{outcome}")];
        let r = node.receipt(job)?.context("settled job without a receipt")?;
        std::fs::write(receipts.join(format!("{outcome}.json")), r.to_json()?)?;
    }
    let head = node.receipt_log().latest_head()?.context("log without a head")?;
    std::fs::write(receipts.join("log-head.json"), serde_json::to_vec_pretty(&head)?)?;
    let states: BTreeMap<String, String> = jobs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let mut digests = BTreeMap::new();
    for (k, j) in &jobs {
        if let Some(d) = node.review_digest(*j)? {
            digests.insert(k.clone(), d.to_hex());
        }
    }
    let info = serde_json::json!({
        "commit": "665d500",
        "node": {
            "name": NODE_NAME,
            "address": node_key.address().to_string(),
        },
        "dpo_public_key": ctx.dpo.public().to_hex(),
        "publisher": reference.publisher,
        "publisher_keyid": publisher_key().public_key().keyid(),
        "trainers": trainers,
        "bundle_manifests": {
            reference.trainer.clone(): reference.manifest.to_hex(),
            hostile.trainer.clone(): hostile.manifest.to_hex(),
            failing.trainer.clone(): failing.manifest.to_hex(),
        },
        "chain": {
            "chain_id": chain.chain_id,
            "escrow": chain.escrow.to_string(),
            "token": chain.token.to_string(),
            "payout": chain.payout.to_string(),
        },
        "approval_expires_at": APPROVAL_EXPIRES,
        "jobs": states,
        "job_digests": digests,
        "cohort": { "studies": 60, "seed": 18, "labelled_accessions": ctx.accessions.len() },
    });
    std::fs::write(out.join("fixture.json"), serde_json::to_vec_pretty(&info)?)?;
    drop(node);
    eprintln!("v1gen: done -> {}", out.display());
    Ok(())
}
