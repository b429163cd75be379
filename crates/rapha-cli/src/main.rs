//! `rapha`: the AI company's and the auditor's command line.
//!
//! Thin glue over `rapha-bundle`, `rapha-receipt` and `rapha-settle`.

use clap::{Parser, Subcommand};

mod bundle;
mod deposit;
mod verify;

/// Rapha client: package and sign trainers, submit and pay for jobs, verify receipts.
#[derive(Debug, Parser)]
#[command(name = "rapha", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand; each subcommand's code lives in its own module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a publisher signing key: KEY (mode 0600) and KEY.pub.
    Keygen(bundle::KeygenArgs),
    /// Build, sign, verify and inspect trainer bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Verify a receipt offline: signature, EIP-712 digest, inclusion in the signed log head.
    Verify(verify::VerifyArgs),
    /// Jobs: pay a job's fee into escrow.
    #[command(subcommand)]
    Job(deposit::JobCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen(args) => bundle::keygen(args),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Verify(args) => verify::run(args),
        Command::Job(cmd) => deposit::run(cmd),
    }
}
