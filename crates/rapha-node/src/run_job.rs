//! `rapha-node run-job`: builds the pipeline from the node configuration, optionally submits
//! one job, then resumes every unfinished job as far as it can go and prints each job's state
//! as JSON lines. Run again after a crash, it fails (never silently re-runs) a job whose
//! enclave key died with the earlier process.
//!
//! Fault injection for the crash tests: with `RAPHA_NODE_CRASH_AFTER=<state>` the process
//! SIGKILLs itself right after committing a transition into that state.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rapha_attest::EvidenceVerifier;
use rapha_bundle::TrustStore;
use rapha_core::JobRequest;
use rapha_dicom::exclusion::{LabelTable, OptOuts};
use rapha_dicom::{ClientOptions, DicomWebClient, Pseudonymizer};
use rapha_enclave::SandboxConfig;
use rapha_policy::{ApprovalStore, DpoPublicKey, Mode, Policy};
use rapha_receipt::{NodeKey, ReceiptLog};
use rapha_settle::WalletKey;

use crate::audit::{job_object, AuditEvent, AuditKind, AuditLog, AuditOutcome};
use crate::config::Config;
use crate::pipeline::chain::{ChainPayments, ChainSettings};
use crate::pipeline::{NoEvidence, Node, NodeParts};
use crate::store::JobStore;

/// Arguments of `run-job`.
#[derive(Debug, Args)]
pub struct RunJobArgs {
    /// Node configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// A signed bundle directory to submit (with --request).
    #[arg(long, requires = "request")]
    pub bundle: Option<PathBuf>,
    /// The job request (JSON) to submit with --bundle.
    #[arg(long, requires = "bundle")]
    pub request: Option<PathBuf>,
    /// The hospital's account registered in the escrow (0x...).
    #[arg(long)]
    pub hospital: String,
    /// The payout account registered for the hospital (0x...).
    #[arg(long)]
    pub payout: String,
    /// File with the hex private key that pays gas for settlements (mode 0600).
    #[arg(long)]
    pub settler_key_file: PathBuf,
    /// Seconds a deposit must stay non-refundable after it is checked.
    #[arg(long, default_value_t = 600)]
    pub run_window_secs: u64,
}

/// Builds the node's pipeline from its configuration.
///
/// # Errors
/// Any unreadable key, store, policy or trust store, or an unreachable chain. Production mode
/// is refused here: hardware attestation wiring (TPM AK enrolment and SGX) is not part of
/// this subcommand.
pub fn node_from_config(cfg: &Config, args: &RunJobArgs) -> anyhow::Result<Node> {
    if cfg.mode == Mode::Production {
        bail!("run-job supports demo mode only: production attestation (TPM AK enrolment, SGX) is not wired into it");
    }
    let state = &cfg.paths.state_dir;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let trust = TrustStore::open(&cfg.trust.store).context("trust store")?;
    let hospital = cfg
        .hospital_policy(&trust)
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let Some(endpoint) = cfg.dicomweb.endpoints.first() else {
        bail!("dicomweb.endpoints is empty");
    };
    let url = endpoint.url.clone();
    let ca = endpoint.ca_file.clone();
    let dpo_keys = cfg
        .keys
        .dpo_public_keys
        .iter()
        .map(|k| k.parse::<DpoPublicKey>())
        .collect::<Result<Vec<_>, _>>()
        .context("keys.dpo_public_keys")?;
    let settler_hex = std::fs::read_to_string(&args.settler_key_file)
        .with_context(|| format!("reading {}", args.settler_key_file.display()))?;
    let settler = WalletKey::from_hex(settler_hex.trim()).context("settler key")?;
    let payments = ChainPayments::connect(
        &ChainSettings {
            rpc_url: cfg.chain.rpc_url.clone(),
            escrow: cfg
                .chain
                .escrow_address
                .parse()
                .context("chain.escrow_address")?,
            hospital: args.hospital.parse().context("--hospital")?,
            payout: args.payout.parse().context("--payout")?,
            confirmations: cfg.chain.confirmations,
            run_window_secs: args.run_window_secs,
            poll_interval: Duration::from_millis(250),
        },
        &settler,
        &state.join("settlement-ledger.sqlite"),
    )
    .map_err(|e| anyhow::anyhow!("chain: {e}"))?;
    let parts = NodeParts {
        store: JobStore::open(&state.join("jobs.sqlite"))?,
        trust,
        policy: Policy::load(&cfg.policy.path)?,
        hospital,
        pseudonymizer: Pseudonymizer::load(&cfg.keys.hmac_key_file)?,
        dicom: cfg.dicom.clone().unwrap_or_default(),
        optouts: OptOuts::load(&cfg.cohort.opt_out_file)?,
        labels: cfg
            .cohort
            .labels_file
            .as_deref()
            .map(LabelTable::load)
            .transpose()?,
        pacs: Box::new(move || {
            let mut o = ClientOptions::new(url.clone());
            o.ca_pem.clone_from(&ca);
            DicomWebClient::new(o)
        }),
        approvals: ApprovalStore::open(&cfg.approvals_dir())?,
        dpo_keys,
        evidence: Box::new(NoEvidence),
        verifier: EvidenceVerifier::development(),
        tpm_verifier: None,
        sandbox: SandboxConfig {
            runtime: cfg.trainer.runtime.clone(),
            runtime_root: state.join("runc"),
            ..SandboxConfig::default()
        },
        min_validation_patients: usize::try_from(cfg.policy.min_validation_patients)
            .unwrap_or(usize::MAX),
        node_key: NodeKey::load(&cfg.keys.node_key_file)?,
        node_name: "rapha-node".into(),
        receipts: ReceiptLog::open(&state.join("receipts"))?,
        payments: Box::new(payments),
        audit: AuditLog::open(&state.join("audit.jsonl"), "rapha-node", None)?,
        work_dir: cfg.paths.data_dir.join("work"),
        release_dir: cfg.paths.data_dir.join("released"),
    };
    Ok(Node::new(parts)?)
}

/// Runs `run-job`.
///
/// # Errors
/// Configuration, submission and infrastructure errors.
pub fn run(args: &RunJobArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let mut node = node_from_config(&cfg, args)?;
    if let Ok(state) = std::env::var("RAPHA_NODE_CRASH_AFTER") {
        node.set_after_commit(Box::new(move |job, s| {
            if s.as_str() == state {
                eprintln!("CRASHPOINT {job} {s}");
                let pid = std::process::id().to_string();
                // SIGKILL ourselves: no destructor, no flush, exactly like a power cut.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }));
    }
    if let (Some(bundle), Some(req)) = (&args.bundle, &args.request) {
        let text = std::fs::read(req).with_context(|| format!("reading {}", req.display()))?;
        let request: JobRequest = serde_json::from_slice(&text).context("job request")?;
        node.audit(AuditEvent::new(
            AuditKind::AdminAction,
            AuditOutcome::Success,
            "job submitted from the command line (run-job)",
            ("node-admin", "admin"),
            vec![job_object(request.job_id, None)],
        ))?;
        let job = node.submit(bundle, request)?;
        println!("{}", serde_json::json!({"submitted": job.to_string()}));
    }
    for (job, state) in node.resume_all()? {
        let waiting = match node.advance(job)? {
            crate::pipeline::Step::Blocked(b) => Some(format!("{b:?}")),
            _ => None,
        };
        println!(
            "{}",
            serde_json::json!({"job": job.to_string(), "state": state.as_str(), "waiting_for": waiting})
        );
    }
    Ok(())
}
