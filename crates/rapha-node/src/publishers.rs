//! `rapha-node publishers list|reinstate`: the DPO's side of a publisher's suspension.
//!
//! A publisher whose trainer's outputs the guard refused (outcome `violated`) is suspended, all
//! its keys, until a DPO has reviewed the violation: admission and the final gate refuse its
//! jobs (`publisher-suspended`), and the API refuses its submissions. The DPO lifts it here (or
//! with `POST /v1/publishers/{name}/reinstate`), with a reason that goes to the audit trail.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use crate::audit::{job_object, AuditEvent, AuditKind, AuditLog, AuditOutcome};
use crate::config::Config;
use crate::store::JobStore;

/// Arguments of `publishers`.
#[derive(Debug, Args)]
pub struct PublishersArgs {
    /// Node configuration file.
    #[arg(long, env = "RAPHA_NODE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PublishersCommand,
}

/// `publishers` subcommands.
#[derive(Debug, Subcommand)]
pub enum PublishersCommand {
    /// Every suspended publisher, with the job whose violation suspended it.
    List,
    /// Lifts a publisher's suspension after the DPO's review of its violation.
    Reinstate {
        /// The publisher's name in the trust store.
        publisher: String,
        /// What the review found (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
}

/// Longest reinstatement reason accepted.
const MAX_REASON: usize = 500;

/// Runs `publishers list|reinstate`.
///
/// # Errors
/// Missing `--config`, store or audit errors, an empty reason, a publisher not suspended.
pub fn run(args: &PublishersArgs) -> anyhow::Result<()> {
    let Some(path) = &args.config else {
        bail!("--config FILE is required (or set RAPHA_NODE_CONFIG)")
    };
    let cfg = Config::load(path)?;
    let state = &cfg.paths.state_dir;
    let mut store = JobStore::open(&state.join("jobs.sqlite"))
        .with_context(|| format!("opening the job store in {}", state.display()))?;
    match &args.command {
        PublishersCommand::List => {
            let list = store.suspensions()?;
            if list.is_empty() {
                println!("no publisher is suspended");
            }
            for s in list {
                println!(
                    "{}  suspended since {} (violation of job {})",
                    s.publisher, s.since, s.job_id
                );
            }
        }
        PublishersCommand::Reinstate { publisher, reason } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.len() > MAX_REASON {
                bail!("a reinstatement needs a --reason of 1 to {MAX_REASON} bytes");
            }
            let Some(s) = store.suspension(publisher)? else {
                bail!("publisher {publisher:?} is not suspended");
            };
            // Audited before it takes effect: a reinstatement the trail lacks never happens.
            let audit = AuditLog::open(&state.join("audit.jsonl"), "rapha-node", None)?;
            audit.record(AuditEvent::new(
                AuditKind::DpoAction,
                AuditOutcome::Success,
                format!(
                    "publisher {publisher:?} reinstated after review of job {}: {reason}",
                    s.job_id
                ),
                ("dpo-cli", "dpo"),
                vec![job_object(s.job_id, None)],
            ))?;
            store.reinstate(publisher)?;
            println!(
                "reinstated publisher {publisher} (suspended by job {})",
                s.job_id
            );
        }
    }
    Ok(())
}
