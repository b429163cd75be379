//! `rapha-demo`: demo-only pieces (**I8**): an embedded DICOMweb demo PACS serving a synthetic
//! cohort, a local chain, clearly marked dev keys and simulated attestation. Production
//! binaries never link this crate.

use clap::Parser;

/// Rapha demo: one job end to end on a synthetic cohort, with dev keys. Not for production.
#[derive(Debug, Parser)]
#[command(name = "rapha-demo", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
