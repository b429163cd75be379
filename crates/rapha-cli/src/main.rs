//! `rapha`: the AI company's and the auditor's command line.
//!
//! Thin glue over `rapha-bundle`, `rapha-receipt`, `rapha-settle` and the node's HTTP API.
//! Exit codes are one table for every command (`exit.rs`, printed by `--help`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bundle;
mod client;
mod deposit;
mod exit;
mod job;
mod verify;

/// Rapha client: package and sign trainers, submit and pay for jobs, verify receipts.
#[derive(Debug, Parser)]
#[command(name = "rapha", version, about, long_about = None, after_help = exit::help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each subcommand's code lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a publisher signing key: KEY (mode 0600) and KEY.pub.
    #[command(after_help = exit::help())]
    Keygen(bundle::KeygenArgs),
    /// Build, sign, verify and inspect trainer bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Verify a receipt offline: signature, EIP-712 digest, inclusion in the signed log head.
    #[command(after_help = exit::help())]
    Verify(verify::VerifyArgs),
    /// Jobs at a hospital node: submit, pay, follow, fetch the results.
    #[command(subcommand)]
    Job(job::JobCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors are local errors (1) in the shared table; --help and --version 0.
            return ExitCode::from(if e.use_stderr() { exit::LOCAL } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Keygen(args) => bundle::keygen(args),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Verify(args) => verify::run(args),
        Command::Job(cmd) => job::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::classify(&e).0)
        }
    }
}
