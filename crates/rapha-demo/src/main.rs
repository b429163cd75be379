//! `rapha-demo`: demo-only pieces (**I8**): an embedded DICOMweb demo PACS serving a synthetic
//! cohort, a local chain, clearly marked dev keys and simulated attestation. Production
//! binaries never link this crate.

mod chain;
mod node;
mod pacs;
mod run;
mod signing;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Rapha demo: one job end to end on a synthetic cohort, with dev keys. Not for production.
#[derive(Debug, Parser)]
#[command(name = "rapha-demo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one job end to end. Exit codes: 0 completed and the receipt verifies; 3 the job
    /// was refused (reason printed); 1 anything else, including steps that did not run.
    Run(RunArgs),
}

/// Arguments of `rapha-demo run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Synthetic studies to generate.
    #[arg(long, default_value_t = 120)]
    pub studies: usize,
    /// Training epochs passed to the reference trainer (`--epochs N`).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Cohort generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Root filesystem of your own trainer to run, signed with the dev publisher key
    /// (default: the reference trainer, built by `trainers/lesion-classifier/build.sh DIR`
    /// into the directory named by $RAPHA_DEMO_REFERENCE_TRAINER; scripts/demo does this).
    #[arg(long)]
    pub trainer_rootfs: Option<PathBuf>,
    /// Entrypoint inside the trainer rootfs.
    #[arg(long, default_value = "/trainer")]
    pub entrypoint: String,
    /// Output directory (released/, receipt.json, cohort/).
    #[arg(long, default_value = "rapha-demo-out")]
    pub out: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAPHA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run(args) => run::run(&args),
    };
    std::process::exit(code);
}
