//! `rapha`: the AI company's and the auditor's command line.
//!
//! Thin glue over `rapha-bundle`, `rapha-receipt` and `rapha-settle`.

use clap::Parser;

/// Rapha client: package and sign trainers, submit and pay for jobs, verify receipts.
#[derive(Debug, Parser)]
#[command(name = "rapha", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
