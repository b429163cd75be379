//! `rapha-node`: the hospital's edge appliance service.
//!
//! Thin glue: every check lives in a library crate (see ARCHITECTURE.md). This binary owns the
//! job state machine, the HTTP API, configuration, `doctor`, the trust store and the keys.
//! It must never link `rapha-demo` or `rapha-testkit` (**I8**).

use clap::{Parser, Subcommand};

mod cohort;
mod trust;

/// Rapha hospital node: runs signed trainers on studies that never leave the hospital.
#[derive(Debug, Parser)]
#[command(
    name = "rapha-node",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (source ",
        env!("RAPHA_SOURCE_COMMIT"),
        ", ",
        env!("RAPHA_BUILD_PROFILE"),
        " build)"
    ),
    about,
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each subcommand's code lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the trust store of publisher keys (add, list, remove, verify).
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Write a configuration template (--production with placeholders, or --demo).
    Init(rapha_node::init::InitArgs),
    /// Check every production requirement; PASS/FAIL each, exit 1 on any FAIL.
    Doctor(rapha_node::doctor::DoctorArgs),
    /// Generate a key: --hmac (PHI pseudonyms), --node (receipts, settlement signatures),
    /// --settler (gas for settlements), --dpo (approvals).
    Keygen(rapha_node::keygen::KeygenArgs),
    /// DPO: review a job and its cohort summary, then sign an approval of its digest.
    Approve(rapha_node::approvals::ApproveArgs),
    /// DPO approvals: list, revoke (until the job starts).
    Approvals(rapha_node::approvals::ApprovalsArgs),
    /// DPO passkeys: `dpo enrol-code` prints the one-time code for the first DPO passkey;
    /// `dpo list` lists the enrolled ones.
    Dpo(rapha_node::passkeys::DpoArgs),
    /// DPO: publishers suspended after an output-guard violation (list, reinstate).
    Publishers(rapha_node::publishers::PublishersArgs),
    /// Policy tools: `policy test` runs the Rego unit tests.
    Policy(rapha_node::policy_cmd::PolicyArgs),
    /// DPO: preview the records a trainer would see for a query or a directory.
    #[command(subcommand)]
    Cohort(cohort::CohortCommand),
    /// Run the job pipeline once: optionally submit a job, then resume every unfinished job.
    RunJob(rapha_node::run_job::RunJobArgs),
    /// Serve the HTTP API (jobs, DPO reviews, receipts, outputs, log proofs, metrics);
    /// `serve --config FILE` alone reads everything from the configuration.
    Serve(rapha_node::api::serve::ServeArgs),
    /// Back up the node's state (job store, receipts, settlements, audit trail, approvals,
    /// bundles, released outputs) into a new directory; keys are never included.
    Backup(rapha_node::backup::BackupArgs),
    /// Restore a backup into an empty state and data directory, every file checked against
    /// the backup's manifest first.
    Restore(rapha_node::backup::RestoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Trust(cmd) => trust::run(cmd),
        Command::Init(args) => rapha_node::init::run(&args),
        Command::Doctor(args) => exit_unless(rapha_node::doctor::run(&args)?),
        Command::Keygen(args) => rapha_node::keygen::run(&args),
        Command::Approve(args) => rapha_node::approvals::approve(&args),
        Command::Approvals(args) => rapha_node::approvals::approvals(&args),
        Command::Dpo(args) => rapha_node::passkeys::run(&args),
        Command::Publishers(args) => rapha_node::publishers::run(&args),
        Command::Policy(args) => exit_unless(rapha_node::policy_cmd::run(&args)?),
        Command::Cohort(cmd) => cohort::run(cmd),
        Command::RunJob(args) => rapha_node::run_job::run(&args),
        Command::Serve(args) => rapha_node::api::serve::run(&args),
        Command::Backup(args) => rapha_node::backup::run_backup(&args),
        Command::Restore(args) => rapha_node::backup::run_restore(&args),
    }
}

/// Exits with status 1 when a check-style command found a failure (already printed).
fn exit_unless(ok: bool) -> anyhow::Result<()> {
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
