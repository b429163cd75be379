//! `rapha-node run-job`: builds the pipeline from the node configuration
//! ([`crate::node_build::node_from_config`], the same as `serve`), optionally submits
//! one job, then resumes every unfinished job as far as it can go and prints each job's state
//! as JSON lines. Run again after a crash, it fails (never silently re-runs) a job whose
//! enclave key died with the earlier process.
//!
//! Fault injection for the crash tests: with `RAPHA_NODE_CRASH_AFTER=<state>` the process
//! SIGKILLs itself right after committing a transition into that state.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rapha_core::JobRequest;

use crate::audit::{job_object, AuditEvent, AuditKind, AuditOutcome};
use crate::config::Config;
use crate::node_build::{node_from_config, SettlementOverrides};

/// Arguments of `run-job`.
#[derive(Debug, Args)]
#[command(
    after_help = "Read from the configuration file: everything, including [settlement] \
(hospital_address, payout_address, settler_key_file, settle_margin_secs) and [attestation]. \
The settlement flags above override the configuration for this run only."
)]
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
    #[command(flatten)]
    pub settlement: SettlementOverrides,
}

/// Runs `run-job`.
///
/// # Errors
/// Configuration, submission and infrastructure errors.
pub fn run(args: &RunJobArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    args.settlement.apply(&mut cfg)?;
    let mut node = node_from_config(&cfg)?;
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
