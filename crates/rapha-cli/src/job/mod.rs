//! `rapha job submit|status|fetch|deposit`: the AI company's side of a job at a hospital node.
//!
//! ```text
//!  submit ──► POST /v1/bundles (the signed bundle, as a strict tar) ──► POST /v1/jobs
//!  deposit ──► the escrow on chain (see deposit.rs)
//!  status [--watch] ──► GET /v1/jobs/{id} until finished
//!  fetch ──► GET receipt ──► verify offline (verify.rs) ──► GET every output, sha256 against
//!            the receipt ──► temp name, fsync, rename into --out
//! ```
//!
//! Nothing downloaded is trusted before the receipt verifies and every file matches the digest
//! the receipt commits to; a mismatch leaves nothing in the output directory.

use clap::Subcommand;
use serde_json::Value;

mod fetch;
mod status;
mod submit;

pub use fetch::FetchArgs;
pub use status::StatusArgs;
pub use submit::SubmitArgs;

use crate::deposit::DepositArgs;
use crate::exit;

/// Job commands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Upload a signed bundle to a hospital node and submit a job request that names it.
    #[command(after_help = exit::help())]
    Submit(SubmitArgs),
    /// Approve and deposit a job's fee in USDC into the escrow, naming the hospital.
    #[command(after_help = exit::help())]
    Deposit(DepositArgs),
    /// Show a job's state and progress; with --watch, follow it until it is finished.
    #[command(after_help = exit::help())]
    Status(StatusArgs),
    /// Download a job's receipt and released outputs, verify them, write them to --out.
    #[command(after_help = exit::help())]
    Fetch(FetchArgs),
}

/// Runs a job command; with `--json` a failure is also printed as JSON on stdout.
pub fn run(cmd: JobCommand) -> anyhow::Result<()> {
    let (json, result) = match cmd {
        JobCommand::Submit(a) => (a.json, submit::submit(&a)),
        JobCommand::Deposit(a) => (a.json, crate::deposit::deposit(&a)),
        JobCommand::Status(a) => (a.json, status::status(&a)),
        JobCommand::Fetch(a) => (a.json, fetch::fetch(&a)),
    };
    match result {
        Ok(out) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&out.json)?);
            } else {
                print!("{}", out.text);
            }
            out.then
        }
        Err(e) => {
            if json {
                exit::print_json_error(&e);
            }
            Err(e)
        }
    }
}

/// A command's result: what to print, and whether the command still fails (a job that ended
/// refused prints its status, then exits 3).
pub struct Printed {
    pub json: Value,
    pub text: String,
    pub then: anyhow::Result<()>,
}

impl Printed {
    pub fn ok(json: Value, text: String) -> Self {
        Self {
            json,
            text,
            then: Ok(()),
        }
    }
}

/// Makes renames in `dir` durable; best effort (not every filesystem allows it).
fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
